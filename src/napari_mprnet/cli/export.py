"""``napari-mprnet export-bioimageio``: write a model as a bioimage.io package (.zip)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import fail

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``export-bioimageio`` sub-command."""
    parser = subparsers.add_parser(
        "export-bioimageio", help="export a model as a bioimage.io model package (.zip)",
        description="Write MODEL (denoise, deblur, derain, a model file, e.g. one saved by "
        "'finetune', or a bioimage.io package) as a bioimage.io model package: rdf.yaml, the "
        "network source, PyTorch weights, test tensors, a README and a cover image. The "
        "package takes uint8, uint16 and float32 images and maps each as napari-mprnet does "
        "(8-bit: /255; 0..1: as given; others: by their own percentiles; and back), inside "
        "the packaged network, unless a fixed --input-range is asked for; it takes grey "
        "images as 1 channel, declares a halo and a smallest block for tiled prediction, and "
        "is validated with bioimageio.spec when that is installed.",
    )
    parser.add_argument("model", help="denoise, deblur, derain, a model file or a bioimage.io "
                        "package")
    parser.add_argument("--out", type=Path, required=True, help="package to write (.zip)")
    parser.add_argument("--name", required=True, help="model name shown on bioimage.io")
    parser.add_argument("--description", default=None,
                        help="one-paragraph description (default: from the model's metadata)")
    parser.add_argument("--author", action="append", dest="authors", default=None,
                        metavar="AUTHOR", help="an author: 'Name', 'Name <email>' or "
                        "'Name <email> @github_user' (repeat for several)")
    parser.add_argument("--github-user", default=None, metavar="HANDLE",
                        help="GitHub handle of the first author (bioimage.io asks for one)")
    parser.add_argument("--license", default="BSD-3-Clause",
                        help="SPDX license of the weights (default: BSD-3-Clause)")
    parser.add_argument("--tag", action="append", dest="tags", default=None, metavar="TAG",
                        help="an extra tag (repeat for several)")
    parser.add_argument("--test-input", type=Path, default=None,
                        help="a representative TIFF or .npy image, e.g. from the training data: "
                        "the package's test tensor and cover (default: a synthetic uint16 "
                        "image; any package takes uint8, uint16 and float32 images)")
    parser.add_argument("--input-range", type=float, nargs=2, default=None,
                        metavar=("LOW", "HIGH"),
                        help="one fixed map for every image: input intensities mapped to 0 and 1 "
                        "(default: each image mapped as napari-mprnet maps it)")
    parser.add_argument("--halo", type=int, default=None, metavar="PX",
                        help="output halo per side for tiled prediction, a multiple of 4 "
                        "(default: 32)")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="the packaged network restores its input in tiles of PX (a "
                        "multiple of 8) with the halo as context, bounding the memory of "
                        "whole-image prediction (default: 0, the whole input in one piece)")
    parser.add_argument("--min-size", type=int, default=None, metavar="PX",
                        help="smallest input side and block the package declares, a multiple "
                        "of 8 (default: 192; smaller blocks differ more from whole-image "
                        "prediction, and bioimage.io takes no smaller image)")
    colour = parser.add_mutually_exclusive_group()
    colour.add_argument("--grey", dest="grey", action="store_true", default=None,
                        help="1-channel input (default for a 2-D --test-input, and for "
                        "denoise/deblur without one)")
    colour.add_argument("--rgb", dest="grey", action="store_false",
                        help="3-channel input (default for colour --test-input and derain)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(handler=run)


def _read_image(path: Path):
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"--test-input not found: {path}")
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    import tifffile

    return tifffile.imread(path)


#: The command-line flag of each export argument, for the problems the export reports.
_FLAGS = {"path": "--out", "name": "--name", "description": "--description",
          "authors": "--author", "license": "--license", "tags": "--tag",
          "input_range": "--input-range", "halo": "--halo", "tile": "--tile",
          "min_size": "--min-size", "package": "the package"}


def _problems(err: Exception) -> list[str]:
    """One line per problem, named by the command-line flag."""
    problems = getattr(err, "problems", None)
    if not problems:
        return [str(err)]
    return [f"{_FLAGS.get(arg, arg)} {text}" for arg, text in problems]


def _check_first(args: argparse.Namespace) -> None:
    """Everything wrong with the flags, before the model is loaded or anything written."""
    from ..bioimageio import HALO, MIN_SIZE, TILE
    from ..bioimageio.checks import check_arguments
    from ..model.arch import MPRNet

    check_arguments(path=args.out, overwrite=args.overwrite, name=args.name,
                    description=args.description or "from the model", authors=_authors(args),
                    license=args.license, tags=args.tags, version=None, git_repo=None,
                    input_range=args.input_range,
                    halo=HALO if args.halo is None else args.halo,
                    tile=TILE if args.tile is None else args.tile, min_size=args.min_size,
                    size_multiple=MPRNet.size_multiple, smallest=MIN_SIZE)


def _authors(args: argparse.Namespace) -> list[str]:
    authors = list(args.authors or ["napari-mprnet user"])
    if args.github_user:
        handle = args.github_user.lstrip("@")
        if "@" in authors[0].split(">")[-1]:
            raise ValueError("--github-user repeats the first --author's @handle")
        authors[0] = f"{authors[0]} @{handle}"
    return authors


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    from ..bioimageio import export_bioimageio
    from ..model.tasks import TASKS

    out: Path = args.out
    try:
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"'{out}' exists; pass --overwrite to replace it")
        _check_first(args)
        if args.model not in TASKS and not Path(args.model).exists():
            raise FileNotFoundError(
                f"MODEL must be denoise, deblur, derain, a model file or a bioimage.io package; "
                f"'{args.model}' not found"
            )
        test_input = None if args.test_input is None else _read_image(args.test_input)
        from ..weights import load_model

        model = load_model(args.model, device="cpu")
        description = args.description or (model.metadata or {}).get("summary") or (
            f"MPRNet {(model.metadata or {}).get('task', 'restoration')} model exported by "
            "napari-mprnet"
        )
        path = export_bioimageio(
            model, out, name=args.name, description=description, authors=_authors(args),
            test_input=test_input, input_range=args.input_range, grey=args.grey,
            **({} if args.halo is None else {"halo": args.halo}),
            **({} if args.tile is None else {"tile": args.tile}), min_size=args.min_size,
            license=args.license, tags=args.tags, overwrite=True,
        )
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        status = 2
        for line in _problems(err):
            status = fail(line)
        return status
    print(f"wrote bioimage.io package {path}")
    return 0

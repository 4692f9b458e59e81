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
        description="Write MODEL (denoise, deblur, derain or a model file, e.g. one saved by "
        "'finetune') as a bioimage.io model package: rdf.yaml, the network source, "
        "PyTorch weights, test tensors, a README and a cover image. The package maps "
        "intensities as napari-mprnet does (uint8: /255 and back; other images: each by its own "
        "percentiles, inside the packaged network, or a fixed --input-range), takes grey "
        "images as 1 channel, declares a halo and a smallest block for tiled prediction, and "
        "is validated with bioimageio.spec when that is installed.",
    )
    parser.add_argument("model", help="denoise, deblur, derain or a model file")
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
                        help="a representative TIFF or .npy image in the dtype and intensities "
                        "users will feed (default: a synthetic uint8 image)")
    parser.add_argument("--input-range", type=float, nargs=2, default=None,
                        metavar=("LOW", "HIGH"),
                        help="one fixed map: input intensities mapped to 0 and 1 (default: as "
                        "napari-mprnet normalises each image)")
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


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    from ..bioimageio import export_bioimageio
    from ..model.tasks import TASKS

    out: Path = args.out
    try:
        if out.suffix.lower() != ".zip":
            raise ValueError(f"--out must end in .zip, got '{out}'")
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"'{out}' exists; pass --overwrite to replace it")
        if args.model not in TASKS and not Path(args.model).is_file():
            raise FileNotFoundError(
                f"MODEL must be denoise, deblur, derain or a model file; '{args.model}' not found"
            )
        test_input = None if args.test_input is None else _read_image(args.test_input)
        from ..weights import load_model

        model = load_model(args.model, device="cpu")
        description = args.description or (model.metadata or {}).get("summary") or (
            f"MPRNet {(model.metadata or {}).get('task', 'restoration')} model exported by "
            "napari-mprnet"
        )
        authors = list(args.authors or ["napari-mprnet user"])
        if args.github_user:
            handle = args.github_user.lstrip("@")
            if "@" in authors[0].split(">")[-1]:
                raise ValueError("--github-user repeats the first --author's @handle")
            authors[0] = f"{authors[0]} @{handle}"
        path = export_bioimageio(
            model, out, name=args.name, description=description, authors=authors,
            test_input=test_input, input_range=args.input_range, grey=args.grey,
            **({} if args.halo is None else {"halo": args.halo}),
            **({} if args.tile is None else {"tile": args.tile}), min_size=args.min_size,
            license=args.license, tags=args.tags, overwrite=True,
        )
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        return fail(str(err))
    print(f"wrote bioimage.io package {path}")
    return 0

"""``napari-mprnet restore``: restore TIFF/PNG/JPEG files, folders and globs in batch."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..model.tasks import TASKS
from .common import add_engine_arguments, engine_options, fail

__all__ = ["add_parser", "collect_inputs", "output_paths", "read_image", "write_tiff"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff")
_KNOWN_AXES = "TZCYXS"

DESCRIPTION = """\
Restore images with MPRNet. INPUT may be files, folders (every .tif/.tiff/.png/.jpg/.jpeg
directly inside) or glob patterns (quote them: 'data/*.tif'). Each result is written to
OUT/<name>_<task>ed.tif as float32 TIFF (or the input's dtype with --output-dtype same),
keeping the input's TIFF axes metadata; with --stages also <name>_<task>ed_stage2.tif and
_stage1.tif. Files are written atomically (a temporary file, then a rename); existing
outputs are never replaced without --overwrite and inputs are never replaced at all.
A file that fails is reported on one line and the batch goes on; the exit status is 1 if
any file failed."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``restore`` sub-command."""
    parser = subparsers.add_parser(
        "restore", help="restore image files, folders or globs",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    parser.add_argument("-o", "--out", required=True, type=Path,
                        help="output folder (created if missing)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--task", choices=TASKS, default="denoise",
                       help="restoration task; picks the bundled default model (default: "
                       "denoise)")
    which.add_argument("--weights", type=Path, default=None,
                       help="model file to use instead of the bundled default (official "
                       ".pth checkpoints, .safetensors from finetune, ...)")
    add_engine_arguments(parser)
    from ._scale import add_scale_arguments

    add_scale_arguments(parser)
    parser.add_argument("--stages", action="store_true",
                        help="also write the stage-2 and stage-1 images")
    parser.add_argument("--axes", default=None,
                        help="axes of every input, e.g. ZYX, TCYX, YXS (S = RGB); default: "
                        "from TIFF metadata, else guessed")
    parser.add_argument("--output-dtype", default="float32",
                        help="'float32' (default), 'same' (the input's dtype, clipped) or a "
                        "numpy dtype name")
    parser.add_argument("--no-clip", dest="clip", action="store_false",
                        help="integer inputs: keep result values outside the input dtype's "
                        "range (by default a uint8 input gives values in 0..255, a uint16 "
                        "input 0..65535, even as float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def collect_inputs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Expand files, folders and globs; return the image files and the problems found."""
    files: list[Path] = []
    problems: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if _is_zarr(path):
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{pattern}: folder holds no .tif/.tiff/.png/.jpg images")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{pattern}: no image matches this pattern")
            files.extend(found)
        else:
            problems.append(f"{pattern}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, problems


def _tiff_axes(path: Path, ndim: int) -> str | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes.upper()
    if len(axes) != ndim:
        return None
    spare = [letter for letter in "TZC" if letter not in axes]
    mapped = []
    for letter in axes:
        if letter in _KNOWN_AXES:
            mapped.append(letter)
        elif spare:
            mapped.append(spare.pop(0))  # e.g. tifffile's generic Q/I axes
        else:
            return None
    return "".join(mapped)


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """Read an image file; return the data and its axes if the file records them."""
    if path.suffix.lower() in _TIFF_SUFFIXES:
        import tifffile

        data = tifffile.imread(path)
        return data, _tiff_axes(path, data.ndim)
    import imageio.v3 as iio

    return np.asarray(iio.imread(path)), None


def output_paths(source: Path, out_dir: Path, task: str, stages: bool) -> list[Path]:
    """Output files for ``source``: final, then stage 2 and stage 1 when asked."""
    from ..api import TASK_SUFFIX

    stem = f"{source.stem}_{TASK_SUFFIX[task]}"
    names = [stem] + ([f"{stem}_stage2", f"{stem}_stage1"] if stages else [])
    suffix = ".zarr" if _is_zarr(source) else ".tif"
    return [out_dir / f"{name}{suffix}" for name in names]


def _is_zarr(path: Path) -> bool:
    from ..scale.zarr_io import is_zarr_path

    return is_zarr_path(path)


def write_tiff(path: Path, data: np.ndarray, axes: str | None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, rename)."""
    import tifffile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        rgb = axes is not None and axes.endswith("S") and data.shape[-1] in (3, 4)
        tifffile.imwrite(tmp, data, photometric="rgb" if rgb else "minisblack",
                         metadata={"axes": axes} if axes else {})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _restore_file(path: Path, args: argparse.Namespace, model, options: dict, inputs: set[Path],
                  bar_factory) -> list[Path]:
    from ..api import iter_restore
    from ..engine.runner import drive

    targets = output_paths(path, args.out, args.task, args.stages)
    for target in targets:
        if target.resolve() in inputs:
            raise ValueError(f"output {target} would replace an input file; choose another --out")
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    if _is_zarr(path) or getattr(args, "client", None) is not None:
        from ._scale import restore_lazily

        return restore_lazily(path, args, options, targets)
    data, file_axes = read_image(path)
    axes = args.axes or file_axes
    if args.output_dtype == "same":
        output_dtype = data.dtype
    else:
        try:
            output_dtype = np.dtype(args.output_dtype)
        except TypeError:
            raise ValueError(f"unknown --output-dtype {args.output_dtype!r}") from None
    bar = bar_factory(path.name)
    try:
        results = drive(
            iter_restore(data, args.task, model, stages=args.stages, axes=axes,
                         output_dtype=output_dtype, clip=args.clip, **options),
            progress=bar.update_to,
        )
    finally:
        bar.close()
    if axes is None:
        from ..engine.axes import infer_axes

        axes = infer_axes(data.shape)
    for target, result in zip(targets, results):
        write_tiff(target, result, axes)
    return targets


class _Bar:
    """A tqdm bar driven by ``(done, total)`` callbacks (or nothing when quiet)."""

    def __init__(self, name: str, quiet: bool) -> None:
        self._bar = None
        if not quiet:
            from tqdm import tqdm

            self._bar = tqdm(desc=name, unit="batch", leave=False, file=sys.stderr)

    def update_to(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run(args: argparse.Namespace) -> int:
    """Restore every input; return 0, or 1 if any file failed."""
    from ..api import prepare_model

    files, problems = collect_inputs(args.inputs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not files:
        return fail("no input images found")
    try:
        options = engine_options(args)
        model = prepare_model(args.weights, args.task)
    except (ValueError, TypeError, FileNotFoundError) as err:
        return fail(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = set(files)
    failures = len(problems)
    start = time.perf_counter()
    from ._scale import cluster_client

    scale = contextlib.ExitStack()
    try:
        args.client = scale.enter_context(cluster_client(args))
    except (ValueError, OSError) as err:
        return fail(str(err))
    with scale:
        for path in files:
            try:
                written = _restore_file(path, args, model, options, inputs,
                                        lambda name: _Bar(name, args.quiet))
            except (ValueError, TypeError, OSError, MemoryError, RuntimeError) as err:
                failures += 1
                print(f"error: {path}: {err}", file=sys.stderr)
                continue
            if not args.quiet:
                print(f"{path} -> {', '.join(str(p) for p in written)}")
    done = len(files) - (failures - len(problems))
    elapsed = time.perf_counter() - start
    print(f"restored {done} of {len(files)} file(s) in {elapsed:.1f} s"
          + (f"; {failures} failure(s)" if failures else ""), file=sys.stderr)
    return 1 if failures else 0

"""``napari-mprnet restore``: restore TIFF/PNG/JPEG files, zarr stores, folders and globs."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..model.tasks import TASKS
from ._batch import Job, collect_inputs, parse_output_dtype, plan_jobs, write_outputs
from .common import add_engine_arguments, engine_options, fail, parse_noise, parse_strength

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Restore images with MPRNet. INPUT may be files, folders (every .tif/.tiff/.png/.jpg/.jpeg
directly inside), zarr stores or glob patterns (quote them: 'data/*.tif').

Each result is written to OUT/<name>_<task>ed.tif as float32 (or the input's dtype with
--output-dtype same); with --stages also <name>_<task>ed_stage2.tif and _stage1.tif; with
--show-removed also <name>_removed.tif (input minus result, float32), and a warning names the
planes where what the denoiser removed does not look like noise.
An ImageJ hyperstack gives an ImageJ hyperstack (axes, pixel size, z spacing, unit, frame
interval kept), an OME-TIFF an OME-TIFF (<name>_denoised.ome.tif, physical sizes and channel
names kept), an OME-Zarr an OME-Zarr (axes and scale kept), any other TIFF keeps its axes.
Results of integer inputs are clipped to the input dtype's range (--no-clip keeps them).

Nothing is ever lost or replaced: every input gets its own outputs (inputs that would share
a name get distinct ones: y.tif + y.png -> y_tif_denoised.tif + y_png_denoised.tif; a/x.tif +
b/x.tif -> OUT/a/..., OUT/b/...); each output (or --stages set) is written to a temporary
file and committed only when complete, and never over an existing file, even one another
run created meanwhile, unless --overwrite. --skip-existing resumes a batch. A file that
fails is reported on one line and the batch goes on; the exit status is 1 if any failed."""


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
    which.add_argument("--task", choices=TASKS, default=None,
                       help="restoration task; picks the bundled default model (default: "
                       "the task the --weights model declares, else denoise)")
    # a str, not a Path: "./denoise" (a local file) must stay apart from "denoise" (bundled)
    which.add_argument("--weights", type=str, default=None,
                       help="model file to use instead of the bundled default (official "
                       ".pth checkpoints, .safetensors from finetune, ...); a file named "
                       "like a task must be given as a path, e.g. ./denoise")
    add_engine_arguments(parser)
    from ._scale import add_scale_arguments

    add_scale_arguments(parser)
    parser.add_argument("--strength", default="auto", metavar="auto|FLOAT",
                        help="denoising strength: 'auto' (default) measures per plane how "
                        "far to move from the input towards the network output, so that "
                        "nearly clean images keep their detail; a number fixes it (1: the "
                        "network output, 0: the input); other tasks: auto = 1")
    parser.add_argument("--noise", default="auto", metavar="auto|SD|GAIN,OFFSET_VARIANCE",
                        help="the noise level --strength auto assumes when denoising, in the "
                        "image's intensity units (0-255 for 8-bit, ADU for a camera): 'auto' "
                        "(default) estimates it from each image; SD: Gaussian noise of that "
                        "standard deviation; GAIN,OFFSET_VARIANCE: variance GAIN * I + "
                        "OFFSET_VARIANCE (Poisson-Gaussian; the second may be negative for a "
                        "camera offset); helps where the estimate is off (fine texture at "
                        "low noise)")
    parser.add_argument("--stages", action="store_true",
                        help="also write the stage-2 and stage-1 images")
    parser.add_argument("--show-removed", action="store_true",
                        help="also write <name>_removed.tif (input minus result, float32) and "
                        "warn where what the denoiser removed looks like structure, not noise "
                        "(image files only, not zarr stores or --cluster runs)")
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
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    existing.add_argument("--skip-existing", action="store_true",
                          help="skip inputs whose outputs all exist (resume a batch); a "
                          "--stages set with files missing is completed, existing files kept")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def _restore_job(job: Job, targets: list[Path], args: argparse.Namespace, model, options: dict,
                 bar_factory) -> None:
    from ..api import iter_restore
    from ..engine.runner import drive
    from ..io.image import read_image
    from ..io.zarr import is_zarr_path

    if is_zarr_path(job.source) or getattr(args, "client", None) is not None:
        from ._scale import restore_lazily

        if getattr(args, "show_removed", False):
            raise ValueError("--show-removed works on image files, not on zarr stores or "
                             "--cluster runs")

        restore_lazily(job, targets, args, options)
        return
    image = read_image(job.source)
    data = image.data
    axes = args.axes or image.axes
    output_dtype = parse_output_dtype(args.output_dtype, data.dtype)
    bar = bar_factory(job.source.name)
    try:
        results = drive(
            iter_restore(data, args.task, model, stages=args.stages, axes=axes,
                         output_dtype=output_dtype, clip=args.clip, **options),
            on_step=bar.update,
        )
    finally:
        bar.close()
    if axes is None:
        from ..engine.axes import infer_axes

        axes = infer_axes(data.shape)
    if getattr(args, "show_removed", False):
        from ..engine.removed import removed_part

        removed = removed_part(data, results[0], task=args.task, axes=axes)
        if removed.message():
            warnings.warn(removed.message(), UserWarning, stacklevel=1)
        results = [*results, removed.data]
    write_outputs(job, targets, results, image, axes, args.overwrite)


class _Bar:
    """A tqdm bar in tiles, with the time left from the first tile on (or nothing when
    quiet), driven by the engine's :class:`~napari_mprnet.engine.progress.Progress`."""

    def __init__(self, name: str, quiet: bool) -> None:
        self._bar = None
        if not quiet:
            from tqdm import tqdm

            self._bar = tqdm(desc=name, unit="tile", leave=False, file=sys.stderr)

    def update(self, step) -> None:
        if self._bar is not None:
            self._bar.total = step.tiles_total or step.total
            self._bar.n = step.tiles_done or step.done
            self._bar.set_postfix_str(step.describe().split(", ", 1)[-1], refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _prepare_folders(jobs: list[Job], out: Path) -> str | None:
    """Create the output folders and clear stale temporaries; return a problem, if any."""
    from ..io.atomic import remove_stale_temporaries

    folders = dict.fromkeys([out] + [t.parent for job in jobs for t in job.targets])
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return f"cannot create the output folder {folder}: {err.strerror or err}"
        if not folder.is_dir():
            return f"the output folder {folder} is not a folder"
        for stale in remove_stale_temporaries(folder):
            print(f"removed {stale.name}, left by an interrupted run", file=sys.stderr)
    return None


def _pending(job: Job, args: argparse.Namespace, inputs: set[Path]) -> list[Path]:
    """The job's outputs to write; raises for outputs that must not be written."""
    for target in job.targets:
        if target.resolve() in inputs:
            raise ValueError(f"output {target} would replace an input file; choose another --out")
    existing = job.existing()
    if args.overwrite or not existing:
        return list(job.targets)
    if args.skip_existing:
        return [t for t in job.targets if t not in existing]
    names = ", ".join(str(t) for t in existing)
    verb = "exists" if len(existing) == 1 else "exist"
    raise FileExistsError(f"{names} already {verb}; pass --overwrite to replace, or "
                          "--skip-existing to keep and go on")


def run(args: argparse.Namespace) -> int:
    """Restore every input; return 0, or 1 if any file failed."""
    from ..api import TASK_SUFFIX, prepare_model
    from ..engine.models import resolve_task

    files, problems = collect_inputs(args.inputs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not files:
        return fail("no input images found")
    try:
        args.task = resolve_task(args.task, args.weights)
        options = engine_options(args)
        options["strength"] = parse_strength(args.strength)
        noise = parse_noise(args.noise)
        if noise is not None:  # (only when given, like the backend)
            from ..engine.noise_level import check_noise, check_noise_use

            check_noise_use(check_noise(noise), options["strength"], args.task)
            options["noise"] = noise
        parse_output_dtype(args.output_dtype, np.dtype("float32"))
        jobs = plan_jobs(files, args.out, TASK_SUFFIX[args.task], args.stages,
                         args.show_removed)
    except (ValueError, TypeError, FileNotFoundError) as err:
        return fail(str(err))
    problem = _prepare_folders(jobs, args.out)
    if problem:
        return fail(problem)
    try:
        model = prepare_model(args.weights, args.task)
    except (ValueError, TypeError, FileNotFoundError) as err:
        return fail(str(err))
    inputs = set(files)
    failures, skipped, done, written = len(problems), 0, 0, 0
    start = time.perf_counter()
    from ._scale import cluster_client

    scale = contextlib.ExitStack()
    try:
        args.client = scale.enter_context(cluster_client(args))
    except (ValueError, OSError) as err:
        return fail(str(err))
    with scale:
        for job in jobs:
            try:
                targets = _pending(job, args, inputs)
                if not targets:
                    skipped += 1
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    _restore_job(job, targets, args, model, options,
                                 lambda name: _Bar(name, args.quiet))
                for warning in caught:
                    print(f"warning: {job.source.name}: {warning.message}", file=sys.stderr)
            except Exception as err:  # noqa: BLE001 - one line per failed file, batch goes on
                failures += 1
                print(f"error: {job.source}: {_describe(err)}", file=sys.stderr)
                continue
            done += 1
            written += len(targets)
            if not args.quiet:
                print(f"{job.source} -> {', '.join(str(p) for p in targets)}")
    elapsed = time.perf_counter() - start
    summary = f"restored {done} of {len(files)} file(s) in {elapsed:.1f} s"
    if args.stages:
        summary += f" ({written} outputs written)"
    if skipped:
        summary += f"; {skipped} skipped (outputs exist)"
    if failures:
        summary += f"; {failures} failure(s)"
    print(summary, file=sys.stderr)
    return 1 if failures else 0


def _describe(err: BaseException) -> str:
    """One line for a failure: the message, or the exception type when it has none."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, (ValueError, TypeError, OSError)) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__

"""``napari-mprnet demo``: restore a bundled sample with the bundled model and report the gain."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..model.tasks import TASKS
from .common import add_engine_arguments, engine_options, fail

__all__ = ["add_parser", "demo_files", "run_demo"]

SAMPLES = ("cells", "natural")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo", help="restore a bundled sample and print the PSNR gain",
        description="Restore a bundled sample image (with its clean reference) using the "
        "bundled default model of the task, print PSNR/SSIM before and after, and write the "
        "degraded, restored and clean images (TIFF) plus a side-by-side PNG to --out, named "
        "after the sample and the task (e.g. cells_noisy.tif, cells_denoised.tif, "
        "cells_noisy_reference.tif), so that demos of different tasks never overwrite each "
        "other.",
    )
    parser.add_argument("--task", choices=TASKS, default="denoise",
                        help="denoise (default), deblur or derain")
    parser.add_argument("--sample", choices=SAMPLES, default=None,
                        help="cells: synthetic fluorescence (noisy, or out of focus for "
                        "deblur); natural: a photograph (noisy, defocused, or under rain for "
                        "derain). Default: cells, natural for derain")
    parser.add_argument("--weights", type=str, default=None,  # "./denoise" is not "denoise"
                        help="model file instead of the bundled model of the task")
    parser.add_argument("-o", "--out", type=Path, default=Path("mprnet-demo"),
                        help="folder for the results, replaced files of an earlier demo "
                        "(default: ./mprnet-demo, ignored by git in a checkout)")
    add_engine_arguments(parser)
    parser.set_defaults(handler=run)


def _side_by_side(images: list[np.ndarray], low: float, high: float) -> np.ndarray:
    scaled = [np.clip((im.astype(np.float32) - low) / (high - low), 0, 1) for im in images]
    gap = np.ones((scaled[0].shape[0], 8) + scaled[0].shape[2:], np.float32)
    row = np.concatenate([part for im in scaled for part in (im, gap)][:-1], axis=1)
    return (row * 255).astype(np.uint8)


def demo_files(sample: str, task: str) -> dict[str, str]:
    """File names of a demo's images: the degraded input, the result and the clean reference
    (TIFF), and the side-by-side picture (PNG); e.g. ``cells_noisy.tif``,
    ``cells_denoised.tif``, ``cells_noisy_reference.tif``,
    ``cells_noisy_denoised_reference.png``. Different for every sample and task."""
    from .._sample_data import DEGRADED_NAMES
    from ..engine.pipeline import TASK_SUFFIX

    label, suffix = DEGRADED_NAMES[task], TASK_SUFFIX[task]
    return {"degraded": f"{sample}_{label}.tif", "restored": f"{sample}_{suffix}.tif",
            "clean": f"{sample}_{label}_reference.tif",
            "picture": f"{sample}_{label}_{suffix}_reference.png"}


def run_demo(sample: str | None = None, weights: Path | None = None, out: Path | None = None,
             task: str = "denoise", **options) -> dict:
    """Restore a bundled sample of ``task``; return the PSNR/SSIM before and after.

    ``psnr_input``/``ssim_input`` are those of the degraded input (noisy, blurred or rainy:
    ``label``), ``psnr_restored``/``ssim_restored`` those of the result; ``files`` the
    names written to ``out`` (:func:`demo_files`); ``source`` what the clean image is and
    ``documented_sample`` whether it is the one the documented figures use (a "natural"
    sample without scikit-image is a procedural scene).
    """
    from .. import _sample_data
    from ..api import prepare_model, restore
    from ..training.metrics import psnr, ssim

    if sample is None:
        sample = _sample_data.TASK_SAMPLES.get(task, SAMPLES)[0]
    degraded, clean = _sample_data.degraded_pair(task, sample)
    source, documented = _sample_data.sample_source(task, sample)
    label = _sample_data.DEGRADED_NAMES[task]
    model = prepare_model(weights, task)
    start = time.perf_counter()
    restored = restore(degraded, model=model, **options)
    seconds = time.perf_counter() - start
    low, high = float(clean.min()), float(clean.max())

    def unit(image: np.ndarray) -> np.ndarray:
        return (image.astype(np.float32) - low) / (high - low)

    channel_axis = -1 if clean.ndim == 3 else None
    report = {
        "task": task, "label": label, "sample": sample, "seconds": seconds,
        "source": source, "documented_sample": documented,
        "trained": bool(model.metadata.get("trained")),
        "model": model.source or "in-memory",
        "psnr_input": psnr(unit(degraded), unit(clean)),
        "psnr_restored": psnr(unit(restored), unit(clean)),
        "ssim_input": ssim(unit(degraded), unit(clean), channel_axis=channel_axis),
        "ssim_restored": ssim(unit(restored), unit(clean), channel_axis=channel_axis),
        "files": demo_files(sample, task),
    }
    if out is not None:
        import imageio.v3 as iio

        from ..io import atomic_write_bytes, write_tiff

        files = report["files"]
        out.mkdir(parents=True, exist_ok=True)
        for role, image in (("degraded", degraded), ("restored", restored), ("clean", clean)):
            write_tiff(out / files[role], image, overwrite=True)
        picture = _side_by_side([degraded, restored, clean], low, high)
        atomic_write_bytes(out / files["picture"],
                           lambda tmp: iio.imwrite(tmp, picture, extension=".png"),
                           overwrite=True)
    return report


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its report."""
    try:
        report = run_demo(args.sample, args.weights, args.out, args.task,
                          **engine_options(args))
    except (ValueError, TypeError, FileNotFoundError) as err:
        return fail(str(err))
    gain = report["psnr_restored"] - report["psnr_input"]
    if not report["documented_sample"]:
        print(f"note: the {report['sample']} sample is {report['source']}", file=sys.stderr)
    print(f"sample: {report['sample']}  model: {report['model']}  "
          f"({report['seconds']:.1f} s)")
    print(f"{'PSNR ' + report['label']:<13} {report['psnr_input']:6.2f} dB   "
          f"SSIM {report['ssim_input']:.3f}")
    print(f"PSNR restored {report['psnr_restored']:6.2f} dB   SSIM {report['ssim_restored']:.3f}")
    print(f"PSNR gain     {gain:+6.2f} dB")
    if not report["trained"]:
        print(f"warning: the bundled {report['task']} model is an UNTRAINED placeholder; it "
              "does not restore images yet (see docs/default_models.md)", file=sys.stderr)
    print(f"images written to {args.out}/: {', '.join(report['files'].values())}")
    return 0

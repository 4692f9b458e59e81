"""Arguments and helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import sys

from ..engine.tiling import validate_tiling

__all__ = ["BACKEND_CHOICES", "add_engine_arguments", "engine_options", "fail", "parse_noise",
           "parse_strength"]

#: ``engine.backends.BACKENDS``, spelled out so that building the parser does not import torch
#: (tests/test_cli_startup.py checks that the two agree).
BACKEND_CHOICES = ("auto", "eager", "compile", "tensorrt", "openvino")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Tiling, device and precision options of the restoration engine."""
    group = parser.add_argument_group("engine")
    group.add_argument("--tile-size", default="auto",
                       help="tile edge in pixels (>= 16) or 'auto' from free memory "
                       "(default: auto)")
    group.add_argument("--tile-overlap", type=int, default=32,
                       help="overlap of neighbouring tiles in pixels, blended (default: 32)")
    group.add_argument("--batch-size", type=int, default=None,
                       help="tiles per forward pass (default: from free memory)")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps")
    group.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default=None,
                       help="compute precision (default auto: fp16 autocast on CUDA; on a CPU "
                       "bf16 autocast where it computes bf16 natively (AVX512-BF16 or AMX) and "
                       "the model keeps its accuracy in it, fp32 elsewhere)")
    group.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                       help="default: openvino on a CPU where OpenVINO is installed (converted "
                       "once per model, cached on disk), eager elsewhere; eager, openvino, "
                       "compile (torch.compile, compiled once per tile shape), tensorrt "
                       "(Torch-TensorRT, engines cached on disk), or auto (the fastest on the "
                       "device); falls back with a warning on failure")
    group.add_argument("--split-patches", action="store_true",
                       help="the paper's multi-patch inference (stage 1 on every tile's "
                       "quarters, stage 2 on its halves) instead of whole tiles (default)")


def engine_options(args: argparse.Namespace) -> dict:
    """The ``restore()`` keyword arguments given by :func:`add_engine_arguments`."""
    tile = args.tile_size
    if tile != "auto":
        try:
            tile = int(tile)
        except ValueError:
            raise ValueError(f"--tile-size must be 'auto' or an integer, got {tile!r}") from None
        validate_tiling(tile, args.tile_overlap)
    elif args.tile_overlap < 0:
        raise ValueError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    from ..engine.devices import resolve_device  # torch: only when a command runs

    resolve_device(args.device)
    options = {
        "tile_size": tile,
        "tile_overlap": args.tile_overlap,
        "batch_size": args.batch_size,
        "device": args.device,
        "precision": None if args.precision == "auto" else args.precision,
    }
    backend = getattr(args, "backend", None)
    if backend is not None:  # only when asked for: not every engine path takes it yet
        from ..engine.backends import normalize_backend

        options["backend"] = normalize_backend(backend)
    if getattr(args, "split_patches", False):  # only when asked for, like the backend
        options["split_patches"] = True
    return options


def parse_strength(value: str) -> float | str:
    """``--strength``: "auto" or a number >= 0 (checked as ``restore()`` checks it)."""
    from ..engine.strength import check_strength

    if value.strip().lower() == "auto":
        return "auto"
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"--strength must be 'auto' or a number >= 0, got {value!r}") from None
    try:
        return check_strength(number)
    except ValueError:
        raise ValueError(f"--strength must be 'auto' or a finite number >= 0, "
                         f"got {value!r}") from None


def parse_noise(value: str) -> float | tuple[float, float] | None:
    """``--noise``: "auto" (None), a standard deviation ``SD`` or ``GAIN,OFFSET_VARIANCE``
    (image units), checked as ``restore(noise=...)`` checks it."""
    from ..engine.noise_level import check_noise

    text = value.strip()
    if text.lower() == "auto":
        return None
    usage = ("--noise must be 'auto', a Gaussian standard deviation SD > 0 or GAIN,"
             "OFFSET_VARIANCE (Poisson-Gaussian), in the image's intensity units, e.g. "
             "--noise 5 or --noise 2.0,25")
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{usage}; got {value!r}") from None
    if len(numbers) > 2:
        raise ValueError(f"{usage}; got {len(numbers)} numbers in {value!r}")
    noise = numbers[0] if len(numbers) == 1 else tuple(numbers)
    try:
        check_noise(noise)
    except (TypeError, ValueError) as err:
        reason = str(err).rsplit("; ", 1)[-1]  # (the part after the general usage)
        reason = reason.replace("strength=0", "--strength 0")  # this command's flag
        raise ValueError(f"{usage}; {reason}") from None
    return noise


def fail(message: str, status: int = 2) -> int:
    """Print a one-line error and return ``status``."""
    print(f"error: {message}", file=sys.stderr)
    return status

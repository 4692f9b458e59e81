"""Checking fine-tuning arguments: each bad value gets an error that names the argument."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .schedule import default_warmup

__all__ = ["check_args", "check_writable"]


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(value: Any, name: str, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0 or (
        number == 0 and not allow_zero
    ):
        kind = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return number


def check_args(args: dict) -> dict:
    """Validated, normalised copy of finetune's arguments (each error names the argument)."""
    out = dict(args)
    out["steps"] = _positive_int(args["steps"], "steps")
    patch = args["patch_size"]
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 16 or (
        patch % 8
    ):
        raise ValueError(f"patch_size must be a multiple of 8 and >= 16, got {patch!r}")
    out["patch_size"] = int(patch)
    out["batch_size"] = _positive_int(args["batch_size"], "batch_size")
    out["learning_rate"] = _positive_float(args["learning_rate"], "learning_rate")
    out["min_learning_rate"] = _positive_float(
        args["min_learning_rate"], "min_learning_rate", allow_zero=True
    )
    if out["min_learning_rate"] > out["learning_rate"]:
        raise ValueError(
            f"min_learning_rate ({out['min_learning_rate']}) must not exceed learning_rate "
            f"({out['learning_rate']})"
        )
    if args["warmup_steps"] is None:
        out["warmup_steps"] = default_warmup(out["steps"])
    else:
        out["warmup_steps"] = _positive_int(args["warmup_steps"], "warmup_steps", minimum=0)
        if out["warmup_steps"] > out["steps"]:
            raise ValueError(
                f"warmup_steps ({out['warmup_steps']}) must not exceed steps ({out['steps']})"
            )
    out["edge_weight"] = _positive_float(args["edge_weight"], "edge_weight", allow_zero=True)
    fraction = args["val_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0.0 <= fraction < 1.0
    ):
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction!r}")
    out["val_fraction"] = float(fraction)
    for name in ("val_every", "checkpoint_every"):
        if args[name] is not None:
            out[name] = _positive_int(args[name], name)
    if args["grad_clip"] is not None:
        out["grad_clip"] = _positive_float(args["grad_clip"], "grad_clip", allow_zero=True)
        if out["grad_clip"] == 0:
            out["grad_clip"] = None
    if (args["val_inputs"] is None) != (args["val_targets"] is None):
        raise ValueError("give both val_inputs and val_targets, or neither")
    if args["checkpoint_every"] is not None and args["checkpoint_path"] is None:
        raise ValueError("checkpoint_every needs checkpoint_path (where to write checkpoints)")
    if args["checkpoint_path"] is not None:
        path = Path(args["checkpoint_path"])
        if path.is_dir():
            raise ValueError(f"checkpoint_path must be a file, got the folder {path}")
    if args["callback"] is not None and not callable(args["callback"]):
        raise TypeError(f"callback must be callable, got {type(args['callback']).__name__}")
    if isinstance(args["seed"], bool) or not isinstance(args["seed"], (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {args['seed']!r}")
    out["seed"] = int(args["seed"])
    return out


def check_writable(path: Path, what: str) -> None:
    """Refuse, before any training, a file location that could not be written at the end.

    The nearest existing folder above ``path`` must be writable (missing folders are created
    when the file is written), and ``path`` must not be a folder or a read-only file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} '{path}' is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} '{path}' is read-only; choose another file or change its "
                         "permissions")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{what} '{path}': '{folder}' is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".napari-mprnet-probe.", dir=folder)
    except OSError as err:
        raise ValueError(f"{what} '{path}' cannot be written ({err.strerror or err} in "
                         f"'{folder}'); choose a writable location") from None
    os.close(fd)
    os.unlink(probe)

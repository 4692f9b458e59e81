"""The random degradation model of each task: draw parameters, apply them, or both."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .blur import blur, blur_kernel
from .common import DEGRADATION_MODEL, TASK_NAMES, float_image
from .noise import gaussian_noise, poisson_gaussian
from .rain import rain_streaks


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_params(task: str, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one random degradation of ``task`` from :data:`DEGRADATION_MODEL`."""
    if task not in TASK_NAMES:
        raise ValueError(f"task must be one of {TASK_NAMES}, got {task!r}")
    model = DEGRADATION_MODEL[task]
    if task == "denoise":
        if rng.random() < model["gaussian_fraction"]:
            lo, hi = model["gaussian_sigma"]
            u = float(rng.random()) ** model.get("gaussian_sigma_power", 1.0)
            return {"noise": "gaussian", "sigma": lo + (hi - lo) * u}
        return {
            "noise": "poisson_gaussian",
            "photons": _loguniform(rng, *model["poisson_photons_loguniform"]),
            "read_noise": float(rng.uniform(*model["poisson_read_noise_photons"])),
        }
    if task == "deblur":
        kind = str(rng.choice(model["kernels"]))
        return {
            "kernel_kind": kind,
            "kernel": blur_kernel(kind, rng=rng),
            "sigma": float(rng.uniform(*model["noise_sigma"])),
        }
    angle = float(rng.uniform(*model["angle_deg_from_vertical"]))
    layers = []
    for _ in range(int(rng.integers(model["layers"][0], model["layers"][1] + 1))):
        layers.append({
            "density": _loguniform(rng, *model["density_loguniform"]),
            "angle": angle + float(rng.uniform(-5, 5)),
            "length": float(rng.uniform(*model["length"])),
            "width": float(rng.uniform(*model["width"])),
            "brightness": float(rng.uniform(*model["brightness"])),
        })
    return {"layers": layers}


def apply_params(
    task: str, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Apply a degradation drawn by :func:`sample_params` (noise drawn from ``rng``)."""
    arr = float_image(img)
    if task == "denoise":
        if params["noise"] == "gaussian":
            return gaussian_noise(arr, params["sigma"], rng)
        return poisson_gaussian(arr, params["photons"], params["read_noise"], rng)
    if task == "deblur":
        return gaussian_noise(blur(arr, params["kernel"]), params["sigma"], rng)
    if task == "derain":
        out = arr
        for layer in params["layers"]:
            out = rain_streaks(out, rng, **layer)
        return out
    raise ValueError(f"task must be one of {TASK_NAMES}, got {task!r}")


def degrade(
    task: str, img: np.ndarray, rng: np.random.Generator, *, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Apply a random degradation of ``task`` (see the module docstring for the ranges).

    Returns a float32 image shaped like ``img``; noise is not clipped (so its statistics
    stay exact), hence values may lie slightly outside [0, 1]. With ``return_params`` the
    drawn parameters (e.g. the blur kernel) are returned too.
    """
    params = sample_params(task, rng)
    out = apply_params(task, img, params, rng)
    return (out, params) if return_params else out

"""Shared parts of the degradation models: task names, the recorded random models, the
image check and the line rasteriser used by motion blur and rain streaks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TASK_NAMES = ("denoise", "deblur", "derain")

#: The random degradation model of each task (recorded in trained models' provenance).
DEGRADATION_MODEL: dict[str, dict[str, Any]] = {
    "denoise": {
        "gaussian_fraction": 0.5,
        "gaussian_sigma": [0.0, 50.0 / 255.0],
        # sigma = lo + (hi - lo) * u**power, u uniform: more nearly clean images (32% of the
        # Gaussian draws below 5/255, 29% above 25/255) so that detail survives at low noise
        "gaussian_sigma_power": 2.0,
        # up to 3000 photons, so that 1000 photons (little noise) is not the edge of the range
        "poisson_photons_loguniform": [5.0, 3000.0],
        "poisson_read_noise_photons": [0.0, 4.0],
        "clipped": False,
    },
    "deblur": {
        "kernels": ["gaussian", "defocus", "motion"],
        "gaussian_sigma": [0.5, 3.0],
        "defocus_radius": [1.0, 5.0],
        "motion_length": [3.0, 21.0],
        "motion_curvature_rad_per_px": [-0.04, 0.04],
        "noise_sigma": [0.0, 2.0 / 255.0],
    },
    "derain": {
        "density_loguniform": [0.0005, 0.006],
        "angle_deg_from_vertical": [-35.0, 35.0],
        "length": [8.0, 40.0],
        "width": [0.4, 1.2],
        "brightness": [0.3, 1.0],
        "layers": [1, 2],
        "blend": "screen",
    },
}


def float_image(img: Any) -> np.ndarray:
    """``img`` as float32, checked to be (H, W) or (H, W, 1 or 3)."""
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3)):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {arr.shape}")
    return arr



def splat_path(ys: np.ndarray, xs: np.ndarray, half: int) -> np.ndarray:
    """Accumulate points (relative to the centre) bilinearly into a (2*half+1)^2 grid."""
    n = 2 * half + 1
    grid = np.zeros((n, n), np.float64)
    ys, xs = ys + half, xs + half
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yi, xi = y0 + dy, x0 + dx
            ok = (yi >= 0) & (yi < n) & (xi >= 0) & (xi < n)
            np.add.at(grid, (yi[ok], xi[ok]), (wy * wx)[ok])
    return grid


def line_kernel(length: float, dy: float, dx: float, curvature: float = 0.0) -> np.ndarray:
    """A (slightly curved) line of ``length`` px through the centre, direction (dy, dx)."""
    steps = max(int(length * 8), 2)
    t = np.linspace(-length / 2, length / 2, steps)
    base = math.atan2(dy, dx)
    # integrate a direction that turns by `curvature` radians per pixel
    angle = base + curvature * t
    dt = t[1] - t[0]
    ys, xs = np.cumsum(np.sin(angle)) * dt, np.cumsum(np.cos(angle)) * dt
    ys, xs = ys - ys.mean(), xs - xs.mean()
    half = math.ceil(max(np.abs(ys).max(), np.abs(xs).max())) + 1
    return splat_path(ys, xs, half)

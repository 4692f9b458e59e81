"""Synthetic rain: streak kernels screen-blended over the image."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, signal

from .common import float_image, line_kernel


def streak_kernel(length: float, angle: float, width: float) -> np.ndarray:
    """One rain streak: a line of ``length`` px at ``angle`` degrees from vertical
    (positive: leaning right towards the bottom), blurred to ``width``, peak about 1."""
    theta = math.radians(angle)
    line = line_kernel(float(length), math.cos(theta), math.sin(theta))
    line = line / max(line.max(), 1e-12)
    if width > 0:
        line = np.pad(line, 3)
        line = ndimage.gaussian_filter(line, width)
    return (line / max(line.max(), 1e-12)).astype(np.float32)


def rain_streaks(
    img: np.ndarray,
    rng: np.random.Generator,
    density: float = 0.005,
    angle: float = 0.0,
    length: float = 20.0,
    *,
    width: float = 0.8,
    brightness: float = 0.8,
    return_layer: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Screen-blend bright rain streaks over ``img``.

    Streak seeds fall at random pixels with probability ``density``, each with a random
    strength in [0.5, 1]; the seed map is convolved with a :func:`streak_kernel`, scaled by
    ``brightness`` and clipped to [0, 1], giving a rain layer ``R`` that is blended as
    ``1 - (1 - img) (1 - R)`` on every channel: streaks only brighten, most where the image
    is dark. ``angle`` is in degrees from vertical (positive: leaning right as it falls).

    Returns the rained image (float32), and the layer ``R`` (H, W) with ``return_layer``.
    """
    arr = float_image(img)
    if not 0 <= density <= 1:
        raise ValueError(f"density must be in [0, 1], got {density!r}")
    height, width_px = arr.shape[:2]
    strength = rng.uniform(0.5, 1.0, (height, width_px)) * (
        rng.random((height, width_px)) < density
    )
    kernel = streak_kernel(length, angle, width)
    pad = kernel.shape[0] // 2
    seeds = np.pad(strength, pad, mode="wrap")  # streaks enter from beyond the borders
    layer = signal.fftconvolve(seeds, kernel, mode="valid")
    layer = np.clip(layer * brightness, 0.0, 1.0).astype(np.float32)
    blend_layer = layer if arr.ndim == 2 else layer[..., None]
    out = (1.0 - (1.0 - arr) * (1.0 - blend_layer)).astype(np.float32)
    return (out, layer) if return_layer else out

"""Procedural clean images: dead leaves and synthetic fluorescence microscopy.

Every generator is deterministic for a given :class:`numpy.random.Generator` and returns
float32 images in [0, 1], shaped (H, W) for grey or (H, W, 3) for colour.

dead_leaves
    Occluding disks with a power-law size distribution (radius density ~ r^-3): the classic
    model of natural-image statistics (scale invariance, sharp edges, flat regions).
fluorescence
    Synthetic fluorescence microscopy: blobs (puncta and nuclei), filaments (persistent random
    walks) and membranes (Voronoi cell borders) on a dim background, blurred by a Gaussian PSF.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["FLUORESCENCE_KINDS", "check_size", "dead_leaves", "fluorescence"]

FLUORESCENCE_KINDS = ("blobs", "filaments", "membranes")


def check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` as (height, width), each an integer >= 8."""
    shape = (size, size) if np.isscalar(size) else tuple(size)
    if len(shape) != 2 or any(int(s) != s or s < 8 for s in shape):
        raise ValueError(f"size must be an integer >= 8 or (height, width), got {size!r}")
    return int(shape[0]), int(shape[1])



def _to_unit(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- dead leaves


def dead_leaves(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    *,
    color: bool = False,
    r_min: float | None = None,
    r_max: float | None = None,
    max_disks: int = 20000,
) -> np.ndarray:
    """A dead-leaves image: disks dropped front to back until the canvas is covered.

    Radii follow the scale-invariant density ``r^-3`` between ``r_min`` and ``r_max``
    (defaults 1.5 px and a quarter of the larger side); every disk has one random grey level
    (or colour) with a faint linear shading. Edges are anti-aliased by a slight blur.

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1], (H, W) or (H, W, 3) with ``color=True``.
    """
    height, width = check_size(size)
    r_min = 1.5 if r_min is None else float(r_min)
    r_max = max(height, width) / 4 if r_max is None else float(r_max)
    channels = 3 if color else 1
    canvas = np.zeros((height, width, channels), np.float32)
    free = np.ones((height, width), bool)
    remaining = free.size
    # inverse-CDF sampling of p(r) ~ r^-3 on [r_min, r_max]
    batch = 512
    drawn = 0
    # the last uncovered pixels would need many tiny disks: stop at 99.5% coverage and let
    # the holes take their nearest leaf's value
    stop_at = int(0.005 * free.size)
    while remaining > stop_at and drawn < max_disks:
        u = rng.random(batch)
        radii = 1.0 / np.sqrt(r_min**-2 - u * (r_min**-2 - r_max**-2))
        centers_y = rng.uniform(-r_max / 2, height + r_max / 2, batch)
        centers_x = rng.uniform(-r_max / 2, width + r_max / 2, batch)
        if color:
            base = rng.random((batch, 1))
            tint = rng.random((batch, 3))
            saturation = rng.random((batch, 1)) ** 2
            values = (1 - saturation) * base + saturation * tint
        else:
            values = rng.random((batch, 1))
        shading = rng.normal(0.0, 0.15, (batch, 2))
        for r, cy, cx, value, shade in zip(radii, centers_y, centers_x, values, shading):
            drawn += 1
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, height)
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, width)
            if y0 >= y1 or x0 >= x1:
                continue
            yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
            xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
            mask = (yy * yy + xx * xx <= r * r) & free[y0:y1, x0:x1]
            if not mask.any():
                continue
            ramp = (shade[0] * yy + shade[1] * xx) / max(r, 1.0) * 0.5
            level = value[None, None, :] * (1.0 + ramp[..., None])
            canvas[y0:y1, x0:x1][mask] = level[mask]
            free[y0:y1, x0:x1] &= ~mask
            remaining -= int(mask.sum())
            if remaining <= stop_at:
                break
    if free.all():
        canvas[:] = rng.random(channels)
    elif remaining > 0:
        _, (iy, ix) = ndimage.distance_transform_edt(free, return_indices=True)
        canvas = canvas[iy, ix]
    canvas = ndimage.gaussian_filter(canvas, sigma=(0.6, 0.6, 0), mode="reflect")
    out = _to_unit(canvas)
    return out if color else out[..., 0]


# --------------------------------------------------------------------------- fluorescence


def _blobs(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((height, width), np.float32)
    area = height * width / 256**2
    # puncta: sub-resolution spots (become PSF-sized after blurring)
    n_puncta = int(rng.integers(0, int(200 * area) + 2))
    ys, xs = rng.integers(0, height, n_puncta), rng.integers(0, width, n_puncta)
    np.add.at(img, (ys, xs), rng.uniform(0.3, 1.0, n_puncta).astype(np.float32) * 6.0)
    # larger blobs (vesicles, nuclei): textured ellipses
    n_blobs = int(rng.integers(2, int(25 * area) + 4))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 2)
    texture /= max(float(np.abs(texture).max()), 1e-6)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry = rng.uniform(3, max(height, width) / 10)
        rx = ry * rng.uniform(0.6, 1.6)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u = ((yy - cy) * c + (xx - cx) * s) / ry
        v = (-(yy - cy) * s + (xx - cx) * c) / rx
        edge = np.clip((np.sqrt(u * u + v * v) - 1.0) * 8.0, -30.0, 30.0)
        inside = 1.0 / (1.0 + np.exp(edge))
        img += inside * rng.uniform(0.2, 0.8) * (1 + 0.4 * texture)
    return img


def _filaments(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((height, width), np.float32)
    area = height * width / 256**2
    n = max(2, int(rng.integers(5, 40) * area))
    length = int(2 * max(height, width))
    step = 0.5  # sub-pixel steps leave no gaps
    stiffness = rng.uniform(0.01, 0.08, (n, 1))
    angles = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(
        rng.standard_normal((n, length)) * stiffness, axis=1
    )
    ys = rng.uniform(0, height, (n, 1)) + np.cumsum(np.sin(angles) * step, axis=1)
    xs = rng.uniform(0, width, (n, 1)) + np.cumsum(np.cos(angles) * step, axis=1)
    stop = rng.integers(length // 8, length, (n, 1))
    keep = (np.arange(length)[None, :] < stop) & (ys >= 0) & (ys < height - 1) & (xs >= 0) & (
        xs < width - 1
    )
    brightness = np.broadcast_to(rng.uniform(0.3, 1.0, (n, 1)), ys.shape)
    np.maximum.at(
        img,
        (np.rint(ys[keep]).astype(int), np.rint(xs[keep]).astype(int)),
        brightness[keep].astype(np.float32),
    )
    return ndimage.gaussian_filter(img, 0.5) * 1.5


def _membranes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    area = height * width / 256**2
    n = max(3, int(rng.integers(6, 50) * area))
    candidates = np.stack([rng.uniform(0, height, 4 * n), rng.uniform(0, width, 4 * n)], 1)
    # cells need some size: two near-coincident seeds would make a border everywhere
    min_dist = 0.5 * math.sqrt(height * width / n)
    kept: list[np.ndarray] = []
    for point in candidates:
        if all(np.hypot(*(point - other)) >= min_dist for other in kept):
            kept.append(point)
            if len(kept) == n:
                break
    seeds = np.array(kept)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # smooth warping gives cells curved borders
    warp = [
        ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 12)
        for _ in range(2)
    ]
    scale = rng.uniform(0, 8) / max(float(np.abs(warp[0]).max()), 1e-6)
    yy, xx = yy + warp[0] * scale, xx + warp[1] * scale
    d = np.sqrt((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2)
    d.sort(axis=-1)
    gap = (d[..., 1] - d[..., 0]) / 2
    thickness = rng.uniform(0.5, 1.5)
    border = np.exp(-0.5 * (gap / thickness) ** 2)
    cytoplasm = rng.uniform(0.0, 0.25)
    return (border + cytoplasm * (gap > thickness)).astype(np.float32)


_KINDS = {"blobs": _blobs, "filaments": _filaments, "membranes": _membranes}


def fluorescence(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    kind: str = "mixed",
    *,
    psf_sigma: float | None = None,
) -> np.ndarray:
    """A synthetic fluorescence image: structures blurred by a Gaussian PSF on a background.

    Parameters
    ----------
    size : int or (int, int)
        Image side, or (height, width).
    rng : numpy.random.Generator
        The source of randomness (the result is a function of its state).
    kind : {"mixed", "blobs", "filaments", "membranes"}
        Structures to draw; "mixed" overlays one to three kinds with random weights.
    psf_sigma : float, optional
        Gaussian PSF width in pixels; default random in [0.8, 2.2].

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1]: background in [0, 0.1], brightest structure in [0.5, 1].
    """
    height, width = check_size(size)
    if kind == "mixed":
        count = int(rng.integers(1, 4))
        kinds = list(rng.choice(FLUORESCENCE_KINDS, size=count, replace=False))
    elif kind in _KINDS:
        kinds = [kind]
    else:
        raise ValueError(f"kind must be 'mixed' or one of {FLUORESCENCE_KINDS}, got {kind!r}")
    img = np.zeros((height, width), np.float32)
    for name in kinds:
        part = _KINDS[str(name)](height, width, rng)
        img += part / max(float(np.percentile(part, 99.9)), 1e-6) * rng.uniform(0.4, 1.0)
    sigma = rng.uniform(0.8, 2.2) if psf_sigma is None else float(psf_sigma)
    img = ndimage.gaussian_filter(img, sigma, mode="reflect")
    # a high percentile, not the maximum, sets the scale: one hot spot must not darken all
    img /= max(float(np.percentile(img, 99.9)), 1e-6)
    background = rng.uniform(0.0, 0.1)
    peak = rng.uniform(0.5, 1.0)
    return _to_unit(background + (peak - background) * img)

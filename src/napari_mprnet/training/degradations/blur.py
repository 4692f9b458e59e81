"""Blur kernels (Gaussian, defocus disk, curved motion) and the convolution that applies
them."""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from .common import DEGRADATION_MODEL, float_image, line_kernel


def _odd(n: float) -> int:
    n = max(math.ceil(n), 1)
    return n if n % 2 else n + 1


def _fit(kernel: np.ndarray, size: int | None) -> np.ndarray:
    """Centre-crop or zero-pad to ``size`` (odd), then normalise to sum 1."""
    if size is not None:
        if int(size) != size or size < 1 or size % 2 == 0:
            raise ValueError(f"kernel size must be a positive odd integer, got {size!r}")
        current = kernel.shape[0]
        if current > size:
            cut = (current - size) // 2
            kernel = kernel[cut : cut + size, cut : cut + size]
        elif current < size:
            pad = (size - current) // 2
            kernel = np.pad(kernel, pad)
    kernel = np.clip(kernel, 0.0, None)
    total = kernel.sum()
    if total <= 0:
        kernel = np.zeros_like(kernel)
        kernel[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1.0
        total = 1.0
    return (kernel / total).astype(np.float32)


def _gaussian_kernel(sigma_y: float, sigma_x: float, theta: float) -> np.ndarray:
    half = _odd(3.5 * max(sigma_y, sigma_x, 0.3) * 2 + 1) // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    return np.exp(-0.5 * ((u / max(sigma_x, 1e-3)) ** 2 + (v / max(sigma_y, 1e-3)) ** 2))


def _disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    half = math.ceil(radius) + 1
    n = 2 * half + 1
    fine = (np.arange(n * supersample) + 0.5) / supersample - n / 2
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    inside = (yy**2 + xx**2 <= radius**2).astype(np.float64)
    return inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))


def blur_kernel(
    kind: str = "gaussian",
    size: int | None = None,
    rng: np.random.Generator | None = None,
    *,
    sigma: float | tuple[float, float] | None = None,
    radius: float | None = None,
    length: float | None = None,
    angle: float | None = None,
    curvature: float | None = None,
) -> np.ndarray:
    """A normalised (sum 1, non-negative) 2-D blur kernel.

    Parameters
    ----------
    kind : {"gaussian", "defocus", "motion"}
        Gaussian (optionally anisotropic), an anti-aliased disk (defocus), or a line
        (linear motion, optionally slightly curved).
    size : int, optional
        Odd side of the returned kernel; default: just large enough for its support.
    rng : numpy.random.Generator, optional
        Draws every parameter not given, from the deblur ranges of :data:`DEGRADATION_MODEL`.
        Without ``rng``, missing parameters take fixed defaults (sigma 1.5, radius 3,
        length 9, angle 0, no curvature).
    sigma : float or (float, float)
        Gaussian standard deviation(s) (along the rotated y and x axes), in px.
    radius : float
        Defocus disk radius, in px.
    length : float
        Motion length, in px.
    angle : float
        Degrees, counter-clockwise from the image x axis (rows grow downwards): the motion
        direction, or the rotation of an anisotropic Gaussian.
    curvature : float
        Motion path curvature, radians per pixel.
    """
    model = DEGRADATION_MODEL["deblur"]
    if angle is None:
        angle = float(rng.uniform(0, 180)) if rng is not None else 0.0
    theta = math.radians(angle)
    if kind == "gaussian":
        if sigma is None:
            if rng is not None:
                lo, hi = model["gaussian_sigma"]
                sy = float(rng.uniform(lo, hi))
                sigma = (sy, sy * float(rng.uniform(0.5, 1.0)))
            else:
                sigma = 1.5
        sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
        kernel = _gaussian_kernel(float(sy), float(sx), theta)
    elif kind == "defocus":
        if radius is None:
            radius = float(rng.uniform(*model["defocus_radius"])) if rng is not None else 3.0
        kernel = _disk_kernel(float(radius))
    elif kind == "motion":
        if length is None:
            length = float(rng.uniform(*model["motion_length"])) if rng is not None else 9.0
        if curvature is None:
            curvature = (
                float(rng.uniform(*model["motion_curvature_rad_per_px"]))
                if rng is not None else 0.0
            )
        kernel = line_kernel(float(length), -math.sin(theta), math.cos(theta), float(curvature))
    else:
        raise ValueError(f"kind must be 'gaussian', 'defocus' or 'motion', got {kind!r}")
    return _fit(kernel, size)


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel with ``kernel`` (reflecting the borders); float32."""
    arr = float_image(img)
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got shape {k.shape}")
    pad_y, pad_x = k.shape[0] // 2, k.shape[1] // 2
    planes = arr[..., None] if arr.ndim == 2 else arr
    out = np.empty_like(planes)
    for c in range(planes.shape[-1]):
        padded = np.pad(planes[..., c], ((pad_y, pad_y), (pad_x, pad_x)), mode="symmetric")
        out[..., c] = signal.fftconvolve(padded, k, mode="valid")
    return out[..., 0] if arr.ndim == 2 else out

"""Noise models: white Gaussian noise and Poisson-Gaussian (photon-counting) noise, never
clipped (a clipped noisy image has a biased mean and a smaller variance near 0 and 1)."""

from __future__ import annotations

import numpy as np

from .common import float_image


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``img`` plus white Gaussian noise of standard deviation ``sigma`` (not clipped)."""
    arr = float_image(img)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    noise = rng.standard_normal(arr.shape, dtype=np.float32)
    return arr + np.float32(sigma) * noise


def poisson_gaussian(
    img: np.ndarray, photons: float, read_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Photon-counting noise: Poisson shot noise plus Gaussian read noise (not clipped).

    The image is scaled so that intensity 1 collects ``photons`` photons, counts are drawn
    from a Poisson distribution, Gaussian read noise of ``read_noise`` photons rms is added
    and the result is scaled back. In photon units the variance of a pixel is therefore
    ``img * photons + read_noise**2``.
    """
    arr = float_image(img)
    if photons <= 0:
        raise ValueError(f"photons must be > 0, got {photons!r}")
    if read_noise < 0:
        raise ValueError(f"read_noise must be >= 0, got {read_noise!r}")
    rate = np.clip(arr, 0.0, None).astype(np.float64) * photons
    counts = rng.poisson(rate).astype(np.float32)
    counts += np.float32(read_noise) * rng.standard_normal(arr.shape, dtype=np.float32)
    return counts / np.float32(photons)

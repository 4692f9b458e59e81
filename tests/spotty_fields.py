"""A small fluorescence-like test field shared by the outlier tests (engine and training)."""

from __future__ import annotations

import numpy as np


def spotty_field(size: int = 64, seed: int = 0, photons: float = 50.0,
                 spot_sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """A smooth field with six spots and its Poisson-noisy image, in units of the peak.

    Returns ``(clean, noisy, rng)``; ``rng`` continues the stream that drew the noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    clean = 0.1 + 0.4 * np.exp(-((yy - size / 3) ** 2 + (xx - size / 2) ** 2) / (2 * 8.0**2))
    for cy, cx in rng.uniform(4, size - 4, (6, 2)):
        clean += 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * spot_sigma**2))
    noisy = rng.poisson(clean * photons) / photons
    return clean, noisy, rng

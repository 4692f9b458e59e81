"""Noise level of a single noisy image, with no clean reference.

The noise model is Poisson-Gaussian: a pixel of mean intensity ``m`` has variance
``a * m + b`` (``a`` the Poisson gain, ``b`` the Gaussian floor; Gaussian noise is ``a = 0``).

How the variance is measured
----------------------------
In a region without structure, the 7x7 patches differ from each other by noise only. Their
covariance matrix then has all eigenvalues equal to the noise variance; structure adds a few
large eigenvalues on top. Sorting the eigenvalues in descending order, the noise variance is
the mean of the tail that starts at the first index where the tail looks like noise alone
(no more values below its mean than above it): the estimator of Chen, Zhu and Heng (ICCV
2015). It is run on the fifth of patches with the least texture (mean squared gradient of a
slightly blurred copy, over the patch), which keeps edges out of the statistics.

For Poisson-Gaussian noise the patches are split into intensity bins by their mean; each bin
gets its own variance, and ``variance = a * mean + b`` is fitted through them with ``a`` and
``b`` kept >= 0.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

__all__ = ["MIN_SIZE", "PATCH", "estimate_noise", "patch_noise_variance"]

#: Patch edge (pixels) of the covariance analysis.
PATCH = 7
#: Smallest image edge the estimate accepts.
MIN_SIZE = 32
#: Share of patches, the least textured, the variance is measured on.
_FLAT_SHARE = 0.2
#: Intensity bins of the Poisson-Gaussian fit, and the fewest patches a bin needs.
_BINS = 6
_MIN_BIN_PATCHES = 500
#: The Poisson-Gaussian fit is kept only if, at the flattest patches' mean intensity, it gives
#: at most this multiple of their directly measured variance (else: Gaussian).
_AGREEMENT = 1.3


def patch_noise_variance(patches: np.ndarray) -> float:
    """Noise variance of ``patches`` ``(N, d)`` from the tail of their covariance spectrum.

    Parameters
    ----------
    patches : numpy.ndarray
        One flattened patch per row (``N`` well above ``d``).

    Returns
    -------
    float
        The mean of the smallest eigenvalues, from the first index where the tail has at
        least as many values above its mean as below it.
    """
    centred = patches - patches.mean(axis=0)
    covariance = centred.T @ centred / max(len(patches), 1)
    eigenvalues = np.sort(np.linalg.eigvalsh(covariance))[::-1]
    for i in range(len(eigenvalues)):
        tail = eigenvalues[i:]
        mean = tail.mean()
        if np.count_nonzero(tail > mean) >= np.count_nonzero(tail < mean):
            return max(float(mean), 0.0)
    return max(float(eigenvalues[-1]), 0.0)


def _patches_and_texture(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ``PATCH`` x ``PATCH`` patches of ``plane`` (rows) and the texture of each."""
    work = plane.astype(np.float64, copy=False)
    patches = sliding_window_view(work, (PATCH, PATCH)).reshape(-1, PATCH * PATCH)
    gy, gx = np.gradient(ndimage.gaussian_filter(work, 1.5))
    energy = ndimage.uniform_filter(gy * gy + gx * gx, PATCH)
    o = PATCH // 2
    texture = energy[o:work.shape[0] - o, o:work.shape[1] - o].reshape(-1)
    return patches, texture


def _flattest(patches: np.ndarray, texture: np.ndarray) -> np.ndarray:
    return patches[texture <= np.quantile(texture, _FLAT_SHARE)]


def estimate_noise(plane: np.ndarray, model: str = "poisson-gaussian") -> tuple[float, float]:
    """Estimate the noise of one 2-D image as ``variance = a * intensity + b``.

    Parameters
    ----------
    plane : numpy.ndarray
        A 2-D image (at least 32 x 32 pixels), in any intensity units.
    model : {"poisson-gaussian", "gaussian"}
        "gaussian" returns ``a = 0``. "poisson-gaussian" fits ``a`` and ``b`` over
        intensity bins; it falls back to the Gaussian estimate where the bins are too few (a
        small or flat image) or where the fit disagrees with the variance of the flattest
        patches (texture left in the bins of a detailed photograph).

    Returns
    -------
    (float, float)
        ``a`` and ``b`` (both >= 0), in the plane's units (``b`` a variance).

    Raises
    ------
    ValueError
        If ``plane`` is not 2-D, is smaller than 32 x 32 or the model is unknown.
    """
    plane = np.asarray(plane)
    if plane.ndim != 2 or min(plane.shape) < MIN_SIZE:
        raise ValueError(f"estimate_noise needs a 2-D image of at least {MIN_SIZE} x "
                         f"{MIN_SIZE} pixels, got shape {plane.shape}")
    if model not in ("poisson-gaussian", "gaussian"):
        raise ValueError(f"model must be 'poisson-gaussian' or 'gaussian', got {model!r}")
    patches, texture = _patches_and_texture(plane)
    flat = _flattest(patches, texture)
    gaussian = (0.0, patch_noise_variance(flat))
    if model == "gaussian":
        return gaussian
    fitted = _poisson_gaussian_fit(patches, texture)
    if fitted is None:
        return gaussian
    # texture left in the bins of a detailed image inflates their variances: trust the fit
    # only where it agrees with the direct measurement on the flattest patches
    a, b = fitted
    if a * float(flat.mean()) + b > _AGREEMENT * gaussian[1]:
        return gaussian
    return fitted


def _poisson_gaussian_fit(patches: np.ndarray, texture: np.ndarray
                          ) -> tuple[float, float] | None:
    """``(a, b)`` fitted through per-intensity-bin variances; None with under 2 bins."""
    means = patches.mean(axis=1)
    edges = np.quantile(means, np.linspace(0, 1, _BINS + 1))
    levels, variances = [], []
    for lo, hi in pairwise(edges):
        chosen = (means >= lo) & (means <= hi)
        if np.count_nonzero(chosen) < _MIN_BIN_PATCHES or hi <= lo:
            continue
        levels.append(means[chosen].mean())
        variances.append(patch_noise_variance(_flattest(patches[chosen], texture[chosen])))
    if len(levels) < 2:
        return None
    levels_arr, variances_arr = np.array(levels), np.array(variances)
    a, b = np.polyfit(levels_arr, variances_arr, 1)
    if a < 0:
        return 0.0, float(np.median(variances_arr))
    if b < 0:
        scale = float(np.sum(levels_arr * levels_arr))
        return (float(np.sum(levels_arr * variances_arr) / scale) if scale > 0 else 0.0), 0.0
    return float(a), float(b)

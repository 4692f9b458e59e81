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
2015).

It is run on the *weak-texture* patches only, chosen as Liu, Tanaka and Okutomi (IEEE TIP
2013) propose: a patch's texture is the sum of its squared horizontal and vertical pixel
differences; on noise of variance ``v`` alone that sum stays below ``v * TEXTURE_LIMIT``
(:data:`TEXTURE_LIMIT`: the 99 % point of its Gamma approximation), so patches above the
line hold structure. Starting from the variance of all patches (too high where there is
structure, never too low), the choice and the variance are refined in turn until they
settle. A fixed share of the flattest patches would, on a detailed photograph, still hold
texture (a far too high variance), and on a flat one keep only the patches where the noise
happened to be weak (too low); a start that is too low spirals down the same way.

For Poisson-Gaussian noise the patches are split into intensity bins by their mean; each bin
gets its own variance, placed at the mean intensity of the patches it was measured on (the
bin's weak-texture patches: in a wide bright bin the flat ones are the dimmest), bins where
under half the patches are weak-texture are left out (their few flat patches are a biased
sample), and ``variance = a * mean + b`` is fitted through them
with ``a >= 0``. ``b`` may be negative: a camera stores its signal above an offset, so the
line reaches zero at the offset, not at intensity 0 (a line forced through ``b >= 0`` reads
the slope of a camera image 10-70 times too low). The line is kept >= 0 at the darkest bin
measured; below it the variance is ``max(a * I + b, 0)``.

The weak-texture patches are what this estimate sees: on sparse fluorescence (a dark,
nearly noise-free background and bright structures with no flat patch on them) it measures
the background and extrapolates to the structures. :mod:`.noise_profile` checks that
extrapolation against the network's level sets.
"""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

__all__ = ["MIN_SIZE", "PATCH", "TEXTURE_LIMIT", "WeakTexture", "estimate_noise",
           "patch_noise_variance", "weak_texture"]

#: Patch edge (pixels) of the covariance analysis.
PATCH = 7
#: Smallest image edge the estimate accepts.
MIN_SIZE = 32
#: A patch of noise of variance ``v`` alone has a texture (sum of squared differences) below
#: ``v * TEXTURE_LIMIT`` with probability 0.99: a Gamma law of shape ``PATCH**2 / 2`` and mean
#: the number of differences times 2 (each difference of two pixels has variance ``2 v``).
_DIFFERENCES = 2 * PATCH * (PATCH - 1)
TEXTURE_LIMIT = float(stats.gamma.ppf(0.99, PATCH * PATCH / 2,
                                      scale=2 * 2 * _DIFFERENCES / (PATCH * PATCH)))
#: Refinements of the weak-texture choice, and the fewest patches a choice may keep.
_ROUNDS = 8
_MIN_PATCHES = 200
#: Intensity bins of the Poisson-Gaussian fit (at most; fewer on a small image), the fewest
#: patches a bin needs, and the least share of weak-texture patches for a bin to be used.
_BINS = 10
_MIN_BIN_PATCHES = 500
_MIN_WEAK_SHARE = 0.5
#: The Poisson-Gaussian fit is kept only if, at the weak-texture patches' mean intensity, it
#: gives at most this multiple of their directly measured variance (else: Gaussian).
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

    Raises
    ------
    ValueError
        If the patches' covariance overflows (intensities far beyond the network's range).
    """
    centred = patches - patches.mean(axis=0)
    covariance = centred.T @ centred / max(len(patches), 1)
    if not np.isfinite(covariance).all():  # numpy's LinAlgError would not say why
        raise ValueError("the noise estimate overflowed on this image's intensities; pass "
                         "noise= (its standard deviation) or a fixed strength")
    eigenvalues = np.sort(np.linalg.eigvalsh(covariance))[::-1]
    for i in range(len(eigenvalues)):
        tail = eigenvalues[i:]
        mean = tail.mean()
        if np.count_nonzero(tail > mean) >= np.count_nonzero(tail < mean):
            return max(float(mean), 0.0)
    return max(float(eigenvalues[-1]), 0.0)


def _patches_and_texture(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ``PATCH`` x ``PATCH`` patches of ``plane`` (rows) and the texture of each: the sum
    of its squared horizontal and vertical pixel differences."""
    work = plane.astype(np.float64, copy=False)
    patches = sliding_window_view(work, (PATCH, PATCH)).reshape(-1, PATCH * PATCH)
    across = sliding_window_view(np.diff(work, axis=1) ** 2, (PATCH, PATCH - 1))
    down = sliding_window_view(np.diff(work, axis=0) ** 2, (PATCH - 1, PATCH))
    texture = across.sum(axis=(-2, -1)) + down.sum(axis=(-2, -1))
    return patches, texture.reshape(-1)


def _weak_texture_variance(patches: np.ndarray, texture: np.ndarray
                           ) -> tuple[float, np.ndarray]:
    """Noise variance of the weak-texture patches, and which patches those are (a mask)."""
    variance = patch_noise_variance(patches)
    for _ in range(_ROUNDS):
        weak = texture <= variance * TEXTURE_LIMIT
        if np.count_nonzero(weak) < _MIN_PATCHES:
            break
        previous, variance = variance, patch_noise_variance(patches[weak])
        if abs(variance - previous) <= 1e-3 * previous:
            break
    return variance, texture <= variance * TEXTURE_LIMIT


def estimate_noise(plane: np.ndarray, model: str = "poisson-gaussian") -> tuple[float, float]:
    """Estimate the noise of one 2-D image as ``variance = a * intensity + b``.

    Parameters
    ----------
    plane : numpy.ndarray
        A 2-D image (at least 32 x 32 pixels), in any intensity units.
    model : {"poisson-gaussian", "gaussian"}
        "gaussian" returns ``a = 0``. "poisson-gaussian" fits ``a`` and ``b`` over
        intensity bins; it falls back to the Gaussian estimate where the usable bins are too
        few (a small, flat or detailed image) or where the fit disagrees with the variance
        of the weak-texture patches (texture left in the bins of a detailed photograph).

    Returns
    -------
    (float, float)
        ``a >= 0`` and ``b`` in the plane's units (``b`` a variance where ``a`` is 0; a
        Poisson-Gaussian line may be negative below a camera offset: the variance there is
        ``max(a * I + b, 0)``).

    Raises
    ------
    ValueError
        If ``plane`` is not 2-D, is smaller than 32 x 32 or the model is unknown.
    """
    if model not in ("poisson-gaussian", "gaussian"):
        raise ValueError(f"model must be 'poisson-gaussian' or 'gaussian', got {model!r}")
    fit = weak_texture(plane)
    if model == "gaussian":
        return 0.0, fit.variance
    return fit.line


class WeakTexture(NamedTuple):
    """What the weak-texture patches of a plane say about its noise.

    ``line``: ``(a, b)``, the estimate (:func:`estimate_noise`); ``points``: the direct
    ``(level, variance)`` measurements, one per intensity bin where at least half the
    patches are weak-texture, or the single ``(level, variance)`` of all weak-texture
    patches where no bin qualifies; ``variance``: that of all weak-texture patches (the
    Gaussian estimate).
    """

    line: tuple[float, float]
    points: tuple[tuple[float, float], ...]
    variance: float


def weak_texture(plane: np.ndarray) -> WeakTexture:
    """The weak-texture noise measurements of one 2-D plane (see the module notes).

    Raises
    ------
    ValueError
        If ``plane`` is not 2-D or is smaller than 32 x 32.
    """
    plane = np.asarray(plane)
    if plane.ndim != 2 or min(plane.shape) < MIN_SIZE:
        raise ValueError(f"estimate_noise needs a 2-D image of at least {MIN_SIZE} x "
                         f"{MIN_SIZE} pixels, got shape {plane.shape}")
    patches, texture = _patches_and_texture(plane)
    variance, weak = _weak_texture_variance(patches, texture)
    level = float(patches[weak].mean()) if weak.any() else float(plane.mean())
    points = _bin_points(patches, texture)
    gaussian = WeakTexture((0.0, variance), tuple(points) or ((level, variance),), variance)
    fitted = _poisson_gaussian_fit(points)
    if fitted is None:
        return gaussian
    # texture left in the bins of a detailed image inflates their variances: trust the fit
    # only where it agrees with the direct measurement on the weak-texture patches
    a, b = fitted
    if a * level + b > _AGREEMENT * variance:
        return gaussian
    return WeakTexture(fitted, tuple(points), variance)


def _bin_points(patches: np.ndarray, texture: np.ndarray) -> list[tuple[float, float]]:
    """``(level, variance)`` of every intensity bin where at least half the patches are
    weak-texture."""
    means = patches.mean(axis=1)
    bins = min(_BINS, len(means) // _MIN_BIN_PATCHES)
    edges = np.quantile(means, np.linspace(0, 1, bins + 1))
    points = []
    for lo, hi in pairwise(edges):
        chosen = (means >= lo) & (means <= hi)
        if np.count_nonzero(chosen) < _MIN_BIN_PATCHES or hi <= lo:
            continue
        variance, weak = _weak_texture_variance(patches[chosen], texture[chosen])
        if weak.mean() >= _MIN_WEAK_SHARE:  # the level of the patches measured
            points.append((float(means[chosen][weak].mean()), variance))
    return points


def _poisson_gaussian_fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """``(a, b)`` fitted through the bins' ``(level, variance)`` points, kept >= 0 at the
    darkest level; None with under 2 points or a falling line."""
    if len(points) < 2:
        return None
    levels, variances = np.array(points).T
    if np.ptp(levels) <= 0:  # e.g. every measured patch on a zero background
        return None
    a, b = np.polyfit(levels, variances, 1)
    if a < 0:
        return None
    darkest = float(levels.min())
    if a * darkest + b < 0:  # pivot at the darkest bin: the line through (darkest, 0)
        shifted = levels - darkest
        scale = float(np.sum(shifted * shifted))
        a = float(np.sum(shifted * variances) / scale) if scale > 0 else 0.0
        b = -a * darkest
    return float(a), float(b)

"""Isolated outliers of a noisy plane: hot and dead pixels.

A hot pixel is a camera defect: one pixel far brighter than its neighbours allow, with no
support from them (a dead pixel: far darker). :func:`isolated_outliers` finds them: a pixel
whose excess over the largest (or the smallest) of its 8 neighbours is more than
:data:`THRESHOLD` times the noise at its level, while its 4 direct neighbours stand less than
:data:`SUPPORT` of that excess above the ring 2 pixels away.

- The noise at a pixel's level is a trimmed RMS (the largest 2 % left out) of the residual to
  the (lower) median of the 8 neighbours, within :data:`LEVEL_BINS` bins of that median, so
  Poisson noise of bright and of nearly dark pixels is judged by its own scale; it is never
  below one step of the data (the smallest non-zero residual: one photon count, one grey
  level), or a nearly dark photon-counting plane would call every single photon an outlier.
- The support test keeps real spots: a spot blurred by the optics, even an undersampled one
  (PSF sigma 0.7 px: its direct neighbours at a third of its peak), lifts its direct
  neighbours above the ring; a defect does not.

Measured on the generated microscopy families (128 px, ``napari_mprnet.training.microscopy``):
84-91 % of 1 % hot pixels found (the misses touch another hot pixel), every sCMOS hot pixel
above 30 photons, and no pixel flagged on Poisson, Poisson-Gaussian or EMCCD planes, on
undersampled puncta at 3000 photons or on nearly dark photon counting at 3 photons.

Used by the blind-spot training (``napari_mprnet.training.outliers``) and by the automatic
strength (:mod:`.strength`), whose risk estimate takes an outlier's squared excess as its
noise variance.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["LEVEL_BINS", "SUPPORT", "THRESHOLD", "isolated_outliers"]

#: Excess over the neighbours, in noise standard deviations, from which a pixel is an outlier.
THRESHOLD = 8.0
#: An outlier's direct neighbours rise less than this share of its excess above the ring.
SUPPORT = 0.25
#: Level bins of the noise scale.
LEVEL_BINS = 8
_TRIM = 98.0  # percentile of the squared residuals kept in each bin's RMS
_FLOOR = 1e-6  # relative to the plane's range: the smallest noise scale of a flat plane
# offsets of a 5 x 5 window, row-major: the 8 neighbours, the 4 direct ones, the ring at 2
_INNER = [6, 7, 8, 11, 13, 16, 17, 18]
_DIRECT = [7, 11, 13, 17]
_RING = [i for i in range(25) if i not in _INNER and i != 12]


def _noise_scale(level: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Trimmed RMS of ``residual`` within level bins, per pixel, floored at one data step."""
    flat_level, flat_res = level.ravel(), residual.ravel()
    edges = np.percentile(flat_level, np.linspace(0, 100, LEVEL_BINS + 1)[1:-1])
    bins = np.searchsorted(edges, flat_level)
    scale = np.zeros(flat_res.shape, np.float64)
    for k in range(LEVEL_BINS):
        chosen = bins == k
        if not chosen.any():
            continue
        squares = flat_res[chosen] ** 2
        kept = squares[squares <= np.percentile(squares, _TRIM)]
        scale[chosen] = np.sqrt(kept.mean())
    steps = np.abs(flat_res[flat_res != 0])
    floor = max(float(steps.min()) if steps.size else 0.0,
                _FLOOR * float(np.ptp(flat_level)) if flat_level.size else 0.0, 1e-12)
    return np.maximum(scale, floor).reshape(level.shape)


def isolated_outliers(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hot and dead pixels of one noisy plane (see the module docstring).

    Parameters
    ----------
    plane : numpy.ndarray
        (H, W) noisy intensities, any scale.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (H, W) bool, True at outliers; and float64 (H, W), the outliers' excess over the
        median of their 8 neighbours (signed, 0 elsewhere).
    """
    plane = np.asarray(plane, np.float64)
    if plane.ndim != 2:
        raise ValueError(f"plane must be 2-D, got shape {plane.shape}")
    height, width = plane.shape
    windows = sliding_window_view(np.pad(plane, 2, mode="edge"), (5, 5))
    windows = windows.reshape(height, width, 25)
    eight = windows[..., _INNER]
    top, bottom = eight.max(-1), eight.min(-1)
    # the lower median: a value of the plane, so residuals are whole steps of the data
    median = np.partition(eight, 3, axis=-1)[..., 3]
    direct = windows[..., _DIRECT].mean(-1)
    ring = np.median(windows[..., _RING], -1)
    scale = _noise_scale(median, plane - median)
    hot = (plane - top > THRESHOLD * scale) & (direct - ring < SUPPORT * (plane - top))
    dead = (bottom - plane > THRESHOLD * scale) & (ring - direct < SUPPORT * (bottom - plane))
    flags = hot | dead
    return flags, np.where(flags, plane - median, 0.0)

"""Impulses: hot pixels, cosmic rays, EMCCD multiplication outliers.

No Gaussian or Poisson-Gaussian law describes them, so the automatic strength leaves them out
of its risk estimate (:mod:`.strength`), and removing them is always wanted: where the
strength keeps part of the input (``x + w (f(x) - x)``, ``w < 1``), it would keep that part
of every hot pixel too. So after the blend, the impulses of the whole plane take the network
output, whatever the weights (:func:`replace_impulses`), where the noise is a camera's
(Poisson-Gaussian).

A pixel is an impulse where it stands more than :data:`IMPULSE` noise standard deviations
from the median of its 8 neighbours and the network moved it by as much. The standard
deviation is the larger of the noise model's and the robust spread (median absolute
deviation) of the differences to the neighbours, so that a noise level given too low does not
turn ordinary noise into impulses. The whole plane is judged with the model and the robust
spread measured on its probe window (:func:`impulse_model`), so that the result does not
depend on tiles or chunks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["IMPULSE", "IMPULSE_COLUMNS", "impulse_model", "impulses", "neighbour_median",
           "replace_impulses"]

#: Impulses stand out of their neighbours' median, and were moved by the network, by more
#: than this many noise standard deviations.
IMPULSE = 5.0
#: ``(a1, b1, a2, b2, robust)`` per plane: the variance ``max(a1 I + b1, a2 I + b2, 0)`` at
#: output intensity ``I`` and the robust variance of the differences to the neighbours.
IMPULSE_COLUMNS = 5
_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)


def neighbour_median(x: np.ndarray) -> np.ndarray:
    """The median of every pixel's 8 neighbours in a ``(..., h, w, c)`` array (reflected at
    its border)."""
    x = np.asarray(x, np.float64)
    footprint = _RING.reshape((1,) * (x.ndim - 3) + (3, 3, 1))
    return ndimage.median_filter(x, footprint=footprint, mode="reflect")


def _robust_variance(spread: np.ndarray) -> np.ndarray:
    """Per channel: the variance read from the median absolute difference to the neighbours."""
    return (1.4826 * np.median(np.abs(spread), axis=(-3, -2))) ** 2


def impulses(x: np.ndarray, output: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Where a ``(h, w, c)`` image ``x`` holds impulses (see the module notes), given the
    network ``output`` for it and the noise ``variance`` per pixel."""
    x = np.asarray(x, np.float64)
    spread = x - neighbour_median(x)
    return _standing_out(spread, output - x, np.maximum(variance, _robust_variance(spread)))


def _standing_out(spread: np.ndarray, moved: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Impulses: more than :data:`IMPULSE` sd (``variance``) from the neighbours' median
    (``spread``) and moved by the network (``moved``) by as much."""
    limit = IMPULSE * np.sqrt(variance)
    return (np.abs(spread) > limit) & (np.abs(moved) > limit)


def impulse_model(x: np.ndarray, lines: np.ndarray, envelopes: np.ndarray) -> np.ndarray:
    """``(a1, b1, a2, b2, robust)`` of a ``(h, w, c)`` probe window ``x`` whose channels have
    the noise variance ``max(a I + b, a' I + b', 0)`` (``lines`` ``(c, 2)``: ``(a, b)`` per
    channel, margin included; ``envelopes`` ``(c, 2)``, zeros where none); channels share the
    largest of each, which can only find fewer impulses."""
    robust = _robust_variance(np.asarray(x, np.float64) - neighbour_median(x))
    return np.concatenate([np.max(lines, axis=0), np.max(envelopes, axis=0),
                           [float(np.max(robust))]])


def replace_impulses(x: np.ndarray, blended: np.ndarray, output: np.ndarray,
                     models: np.ndarray, neighbours: np.ndarray | None = None) -> np.ndarray:
    """``blended`` planes ``(P, H, W, c)`` with the impulses of the input planes ``x`` set to
    the network ``output``.

    ``models`` ``(P, IMPULSE_COLUMNS)`` from :func:`impulse_model`. Nothing is replaced in a
    plane that was too small to measure (a row of NaN) or whose noise is Gaussian (no line
    rises with intensity: a photograph or a processed image, where an isolated bright pixel
    is detail more often than a camera defect: 3-10 such pixels on 3 of 23 photographs at
    sigma 5, -0.01 to -0.11 dB). ``neighbours``: :func:`neighbour_median` of ``x``, given
    where ``x`` is the inside of a larger array (a chunk with its halo).
    """
    models = np.asarray(models, np.float64)
    neighbours = neighbour_median(x) if neighbours is None else neighbours
    result = np.array(blended, np.float32, copy=True)
    for p, (a1, b1, a2, b2, robust) in enumerate(models):
        if not np.isfinite(robust) or max(a1, a2) <= 0:  # unmeasured, or Gaussian noise
            continue
        out = output[p].astype(np.float64)
        level = np.maximum(out, 0.0)
        variance = np.maximum(np.maximum(a1 * level + b1, a2 * level + b2), robust)
        found = _standing_out(x[p] - neighbours[p], out - x[p], variance)
        result[p][found] = output[p][found]
    return result

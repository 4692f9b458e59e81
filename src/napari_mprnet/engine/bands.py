"""The two frequency bands of the denoising residual that "auto" strength weighs apart.

The residual ``h = f(x) - x`` (what the network removes) is split into a low band ``G h``
and a high band ``h - G h``, where ``G`` is a Gaussian filter of :data:`BAND_SIGMA` pixels
with reflecting borders (``d c b a | a b c d``, scipy's ``mode="reflect"``), truncated at
:data:`BAND_RADIUS` pixels. ``G`` is separable, so as a linear map on a ``height`` x ``width``
plane it is ``G_y ⊗ G_x`` with the 1-D matrices of :func:`band_matrix`; its diagonal, which
SURE needs because it is not constant near the borders, is the outer product of their
diagonals (:func:`low_band_diagonal`).

Two uses:

- :func:`low_band` applies ``G`` exactly (float64 matrices) to a probe window, to measure the
  weights (:mod:`.strength`);
- :func:`residual_low_band` filters the residual of every network tile (tile-local ``G``,
  reflecting at the tile border), so that the low band is accumulated with the tiles' blend
  weights like any other output. It uses only elementwise float32 operations (gathers,
  products and sums in one fixed order), so a tile gives the same bits on every device, with
  any batch size and whether its input arrived as a numpy array or a device tensor: the
  chunked dask path stays bit-for-bit equal to an in-memory run.
"""

from __future__ import annotations

import functools
from typing import TypeVar

import numpy as np
import torch

__all__ = ["BAND_RADIUS", "BAND_SIGMA", "band_matrix", "low_band", "low_band_diagonal",
           "low_pass", "residual_low_band"]

#: Standard deviation (pixels) of the Gaussian that separates the low band.
BAND_SIGMA = 2.0
#: The Gaussian is cut at this distance (4 standard deviations, as scipy does by default).
BAND_RADIUS = int(4.0 * BAND_SIGMA + 0.5)

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _taps() -> np.ndarray:
    k = np.arange(-BAND_RADIUS, BAND_RADIUS + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (k / BAND_SIGMA) ** 2)
    return taps / taps.sum()


def _reflected(n: int) -> np.ndarray:
    """Source index of positions ``-BAND_RADIUS .. n - 1 + BAND_RADIUS`` of a length-``n``
    axis, reflected at the borders with the edge sample repeated (any ``n >= 1``)."""
    m = np.mod(np.arange(-BAND_RADIUS, n + BAND_RADIUS), 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


@functools.lru_cache(maxsize=16)
def band_matrix(n: int) -> np.ndarray:
    """The 1-D low-band filter on ``n`` samples as an ``(n, n)`` float64 matrix (read-only):
    ``band_matrix(n) @ v`` filters ``v``."""
    matrix = np.zeros((n, n))
    rows = np.arange(n)
    source = _reflected(n)
    for k, tap in enumerate(_taps()):
        np.add.at(matrix, (rows, source[rows + k]), tap)
    matrix.flags.writeable = False
    return matrix


def low_band(plane: np.ndarray) -> np.ndarray:
    """``G`` applied exactly to a ``(h, w, c)`` plane (float64)."""
    gy, gx = band_matrix(plane.shape[0]), band_matrix(plane.shape[1])
    rows = np.tensordot(gy, plane.astype(np.float64, copy=False), axes=(1, 0))  # (h, w, c)
    return np.moveaxis(np.tensordot(gx, rows, axes=(1, 1)), 0, 1)


def low_band_diagonal(height: int, width: int) -> np.ndarray:
    """``diag(G)`` on a ``height`` x ``width`` plane, shape ``(height, width)`` (float64)."""
    return np.outer(np.diag(band_matrix(height)), np.diag(band_matrix(width)))


def low_pass(tensor: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
    """The tile-local low-band filter along ``dims`` (Y, X) of a float32 tensor.

    Elementwise only (one gather per axis, then products and sums in tap order), so that
    each value is rounded the same way on every device and for every batch size.
    """
    taps = [float(t) for t in _taps().astype(np.float32)]
    for dim in dims:
        n = tensor.shape[dim]
        index = torch.from_numpy(_reflected(n)).to(tensor.device)
        padded = tensor.index_select(dim, index)
        total = padded.narrow(dim, 0, n) * taps[0]
        for k in range(1, len(taps)):
            total = total + padded.narrow(dim, k, n) * taps[k]
        tensor = total
    return tensor


def residual_low_band(output: Array, source: Array) -> Array:
    """``G (output - source)`` per tile, tile-local: numpy ``(B, h, w, c)`` arrays on the
    host give a numpy array, torch ``(B, c, h, w)`` tensors a tensor on their device."""
    if isinstance(output, torch.Tensor):
        return low_pass(output.float() - source.float(), (2, 3))
    residual = np.asarray(output, np.float32) - np.asarray(source, np.float32)
    return low_pass(torch.from_numpy(residual), (1, 2)).numpy()

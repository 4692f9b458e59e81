"""Blind-spot masking for self-supervised denoising (the Noise2Void family).

A blind-spot network learns to predict a pixel from its surroundings only: a few pixels of
every training patch (about 1.5 %) are chosen, their values are replaced, and the loss is
taken at those pixels alone, against their original noisy values. When the noise of
different pixels is independent (given the signal) and has zero mean, the best prediction
of a noisy value from its neighbours is the clean value, so the network learns to denoise
without ever seeing a clean image.

Choices made here:

- **Stratified positions.** Each patch is divided into square cells of side
  ``round(1 / sqrt(fraction))`` and one position is drawn uniformly inside every cell, so the
  masked pixels cover the patch evenly (never clumped) and every pixel is equally likely.
- **All channels together.** A masked position is replaced in every channel. The bundled
  models see grey images as three identical copies; masking one copy alone would leave the
  original value readable from the others.
- **Replacement.** ``"neighbour"``: the value of one random pixel of the ``(2r+1)^2``
  window, never the centre (the original Noise2Void). ``"median"`` / ``"mean"``: the median /
  mean of the window without its centre, the refinement of N2V2, whose authors trace the
  checkerboard artefacts of blind-spot networks partly to the neighbour replacement. (N2V2
  also changes a U-Net's pooling and top skip connection; MPRNet has no max-pooling and the
  architecture is left unchanged.) Neighbours outside the patch are never used.
- **Loss.** The paper's Charbonnier distance, summed over the stage outputs, at masked pixels
  only (:func:`blind_spot_loss`). The paper's edge (Laplacian) term does not apply: the
  Laplacian at a masked pixel mixes in unmasked pixels, whose noisy values the network sees,
  so it would reward copying the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "REPLACEMENTS",
    "blind_spot_loss",
    "mask_batch",
    "masked_charbonnier",
    "stratified_positions",
]

#: How a masked pixel's value is replaced.
REPLACEMENTS = ("median", "mean", "neighbour")


def _cell_side(fraction: float) -> int:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0.001 <= fraction <= 0.25
    ):
        raise ValueError(f"mask fraction must be in [0.001, 0.25], got {fraction!r}")
    return max(2, round(1.0 / math.sqrt(fraction)))


def stratified_positions(
    batch: int, height: int, width: int, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Positions to mask, one uniformly drawn inside every square cell of every patch.

    Parameters
    ----------
    batch, height, width : int
        Batch size and patch size.
    fraction : float
        Wanted share of masked pixels (0.001-0.25); the cell side is
        ``round(1 / sqrt(fraction))``. Positions that fall outside a partial cell at the
        right or bottom border are dropped.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        ``(n, 3)`` int64 rows of (patch index, y, x), each position at most once.
    """
    side = _cell_side(fraction)
    cells_y, cells_x = -(-height // side), -(-width // side)
    b, cy, cx = np.meshgrid(np.arange(batch), np.arange(cells_y), np.arange(cells_x),
                            indexing="ij")
    b, cy, cx = b.ravel(), cy.ravel(), cx.ravel()
    y = cy * side + rng.integers(0, side, size=b.size)
    x = cx * side + rng.integers(0, side, size=b.size)
    keep = (y < height) & (x < width)
    return np.stack([b[keep], y[keep], x[keep]], axis=1).astype(np.int64)


def _neighbour_offsets(n: int, radius: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` offsets drawn uniformly from the window without its centre."""
    side = 2 * radius + 1
    flat = rng.integers(0, side * side - 1, size=n)
    flat = flat + (flat >= (side * side) // 2)  # skip the centre
    return np.stack([flat // side - radius, flat % side - radius], axis=1)


def _window(positions: np.ndarray, radius: int, height: int, width: int) -> tuple:
    """Coordinates of every position's window without its centre, and which lie inside."""
    side = 2 * radius + 1
    dy, dx = np.divmod(np.arange(side * side), side)
    ring = np.arange(side * side) != (side * side) // 2
    dy, dx = dy[ring] - radius, dx[ring] - radius
    ys = positions[:, 1:2] + dy[None]
    xs = positions[:, 2:3] + dx[None]
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    return np.clip(ys, 0, height - 1), np.clip(xs, 0, width - 1), inside


def mask_batch(
    x: Tensor,
    rng: np.random.Generator,
    *,
    fraction: float = 0.015,
    radius: int = 2,
    replacement: str = "median",
) -> tuple[Tensor, Tensor]:
    """Replace a stratified sample of pixels of a batch, for blind-spot training.

    Parameters
    ----------
    x : torch.Tensor
        Noisy patches (B, C, H, W); left unchanged.
    rng : numpy.random.Generator
        Source of the positions and offsets (keep its state to resume exactly).
    fraction : float
        Share of pixels to mask (0.5-2 % is usual).
    radius : int
        The replacement window is ``(2 * radius + 1)`` pixels square (centre excluded).
    replacement : {"median", "mean", "neighbour"}
        A local statistic of the window (N2V2) or one random pixel of it (N2V).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The masked input (a copy of ``x``) and the mask (B, 1, H, W), 1.0 at replaced pixels.
    """
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a 4-D tensor (B, C, H, W), got {getattr(x, 'shape', x)}")
    if replacement not in REPLACEMENTS:
        raise ValueError(
            f"replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}"
        )
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise ValueError(f"radius must be an integer >= 1, got {radius!r}")
    batch, _, height, width = x.shape
    if min(height, width) <= 2 * radius:
        raise ValueError(f"patches of {height}x{width} are too small for radius {radius}")
    positions = stratified_positions(batch, height, width, fraction, rng)
    b, y, xx = (torch.from_numpy(positions[:, i]).to(x.device) for i in range(3))
    if replacement == "neighbour":
        offsets = _neighbour_offsets(len(positions), int(radius), rng)
        ny, nx = positions[:, 1] + offsets[:, 0], positions[:, 2] + offsets[:, 1]
        # an offset that leaves the patch is mirrored (still not the centre: it is non-zero)
        ny = np.where((ny < 0) | (ny >= height), positions[:, 1] - offsets[:, 0], ny)
        nx = np.where((nx < 0) | (nx >= width), positions[:, 2] - offsets[:, 1], nx)
        ny_t, nx_t = torch.from_numpy(ny).to(x.device), torch.from_numpy(nx).to(x.device)
        values = x[b, :, ny_t, nx_t]  # (n, C)
    else:
        ys, xs, inside = _window(positions, int(radius), height, width)
        ys_t, xs_t = torch.from_numpy(ys).to(x.device), torch.from_numpy(xs).to(x.device)
        windows = x[b[:, None], :, ys_t, xs_t]  # (n, K, C)
        keep = torch.from_numpy(inside).to(x.device)[..., None].expand_as(windows)
        windows = torch.where(keep, windows, torch.full_like(windows, float("nan")))
        if replacement == "median":
            values = torch.nanmedian(windows, dim=1).values
        else:
            values = torch.nanmean(windows, dim=1)
    masked = x.clone()
    masked[b, :, y, xx] = values.to(x.dtype)
    mask = torch.zeros((batch, 1, height, width), dtype=x.dtype, device=x.device)
    mask[b, 0, y, xx] = 1.0
    return masked, mask


def masked_charbonnier(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier distance averaged over the masked pixels (and all channels) only.

    Parameters
    ----------
    pred, target : torch.Tensor
        (B, C, H, W) of the same shape.
    mask : torch.Tensor
        (B, 1, H, W), 1 where the loss is taken, 0 elsewhere.
    eps : float
        Charbonnier constant.

    Returns
    -------
    torch.Tensor
        A scalar; pixels where ``mask`` is 0 have no influence on it or on its gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != pred.shape[0] or (
        mask.shape[2:] != pred.shape[2:]
    ):
        raise ValueError(f"mask must be (B, 1, H, W) matching {tuple(pred.shape)}, "
                         f"got {tuple(mask.shape)}")
    count = mask.sum() * pred.shape[1]
    if float(count) == 0:
        raise ValueError("the mask selects no pixel")
    # select before the distance, so unmasked pixels stay out of the graph entirely
    chosen = mask.expand_as(pred) > 0
    diff = pred[chosen] - target[chosen]
    return torch.sqrt(diff * diff + eps * eps).sum() / count


def blind_spot_loss(
    stages: Sequence[Tensor], noisy: Tensor, mask: Tensor, eps: float = 1e-3
) -> Tensor:
    """The paper's Charbonnier loss summed over the stages, at masked pixels only.

    ``stages`` are the network's outputs for the *masked* input (a list, finest first),
    ``noisy`` the unmasked patches (B, C, H, W) and ``mask`` (B, 1, H, W) from
    :func:`mask_batch`; returns a scalar tensor.
    """
    if isinstance(stages, Tensor) or not len(stages):
        raise TypeError("stages must be a non-empty sequence of tensors (one per stage)")
    return sum(masked_charbonnier(s, noisy, mask, eps) for s in stages)

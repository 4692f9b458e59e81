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
- **Structured masks** (structN2V idea, for noise correlated between neighbouring pixels:
  line or blotch camera noise). ``mask="horizontal"`` / ``"vertical"`` hide a line of
  ``2 * span + 1`` pixels through every masked position, ``"square"`` a
  ``(2 * span + 1)^2`` block, so that the correlated neighbours cannot give the centre's
  noise away. Every hidden pixel (centre included) takes the value of a random pixel of the
  same patch farther than ``2 * span`` from the centre (a value of the image, whose noise is
  not correlated with the centre's); the loss is still taken at the centres only. Fewer positions are
  drawn when the structures would hide more than a quarter of the patch
  (:data:`MAX_HIDDEN`).
- **Loss.** A distance summed over the stage outputs, at masked pixels only
  (:func:`blind_spot_loss`). ``distance="mse"`` (the squared error, the objective's default)
  learns the conditional *mean* of the noisy value, the clean value for any zero-mean
  noise; ``"charbonnier"``, the paper's distance, is close to L1 and learns the conditional
  *median*: robust to outliers and right for symmetric noise, but biased for skewed noise
  (the median of a Poisson count of mean below 0.7 is 0: at 1 photon per unit intensity a
  Charbonnier run darkened the images and lost 9 dB, docs/self_supervised.md). The paper's
  edge (Laplacian) term does not apply: the Laplacian at a masked pixel mixes in unmasked
  pixels, whose noisy values the network sees, so it would reward copying the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DISTANCES",
    "MASKS",
    "MAX_HIDDEN",
    "REPLACEMENTS",
    "blind_spot_loss",
    "mask_batch",
    "masked_charbonnier",
    "stratified_positions",
    "structure_offsets",
]

#: Distances of the blind-spot loss: the paper's Charbonnier (median-seeking) or squared error.
DISTANCES = ("charbonnier", "mse")
#: How a masked pixel's value is replaced.
REPLACEMENTS = ("median", "mean", "neighbour")
#: Which pixels around a masked position are hidden: the position alone (Noise2Void), a line
#: through it along x or y, or a square block (structured blind spots).
MASKS = ("pixel", "horizontal", "vertical", "square")
#: Structured masks hide at most about this share of a patch (fewer positions are drawn).
MAX_HIDDEN = 0.25


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


def structure_offsets(mask: str, span: int) -> np.ndarray:
    """``(K, 2)`` offsets (dy, dx) of the pixels a ``mask`` hides, the centre (0, 0) first.

    ``"pixel"``: the centre alone; ``"horizontal"`` / ``"vertical"``: ``2 * span + 1``
    pixels along x / y; ``"square"``: the ``(2 * span + 1)^2`` block.
    """
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {mask!r}")
    if isinstance(span, bool) or not isinstance(span, (int, np.integer)) or span < 1:
        raise ValueError(f"mask span must be an integer >= 1, got {span!r}")
    if mask == "pixel":
        return np.zeros((1, 2), dtype=np.int64)
    line = np.array([0] + [d for d in range(-span, span + 1) if d], dtype=np.int64)
    if mask == "horizontal":
        return np.stack([np.zeros_like(line), line], axis=1)
    if mask == "vertical":
        return np.stack([line, np.zeros_like(line)], axis=1)
    dy, dx = np.meshgrid(line, line, indexing="ij")
    return np.stack([dy.ravel(), dx.ravel()], axis=1)


def _far_pixels(pixels: np.ndarray, distance: int, height: int, width: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random pixel of the patch per row of ``pixels`` ((n, 2) y, x), farther than
    ``distance`` (Chebyshev) from it."""
    ys = rng.integers(0, height, size=len(pixels))
    xs = rng.integers(0, width, size=len(pixels))
    for _ in range(100):  # a redraw succeeds with probability >= 1 - (2 d + 1)^2 / (H W)
        near = np.maximum(np.abs(ys - pixels[:, 0]), np.abs(xs - pixels[:, 1])) <= distance
        if not near.any():
            break
        ys[near] = rng.integers(0, height, size=int(near.sum()))
        xs[near] = rng.integers(0, width, size=int(near.sum()))
    return ys, xs


def _hide_structures(x: Tensor, masked: Tensor, positions: np.ndarray, mask: str, span: int,
                     rng: np.random.Generator) -> None:
    """Give every pixel of every position's structure (in ``masked``) the value a pixel of
    the same patch has in ``x`` farther than ``3 * span`` from it, so farther than
    ``2 * span`` from every centre whose structure holds it (structures may overlap)."""
    _, _, height, width = x.shape
    offsets = structure_offsets(mask, span)
    ys = (positions[:, 1:2] + offsets[None, :, 0]).ravel()
    xs = (positions[:, 2:3] + offsets[None, :, 1]).ravel()
    b = np.repeat(positions[:, 0], len(offsets))
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    b, ys, xs = b[inside], ys[inside], xs[inside]
    src_y, src_x = _far_pixels(np.stack([ys, xs], axis=1), 3 * span, height, width, rng)
    b_t, ys_t, xs_t = (torch.from_numpy(a).to(x.device) for a in (b, ys, xs))
    sy_t, sx_t = torch.from_numpy(src_y).to(x.device), torch.from_numpy(src_x).to(x.device)
    masked[b_t, :, ys_t, xs_t] = x[b_t, :, sy_t, sx_t]


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
    mask: str = "pixel",
    span: int = 2,
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
        A local statistic of the window (N2V2) or one random pixel of it (N2V); for the
        ``"pixel"`` mask only.
    mask : {"pixel", "horizontal", "vertical", "square"}
        Hide the position alone, or a structure of correlated neighbours around it (see the
        module docstring): each of its pixels takes the value of a far pixel of the patch.
    span : int
        Half-length of a structured mask (``2 * span + 1`` pixels across).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The masked input (a copy of ``x``) and the mask (B, 1, H, W), 1.0 at the positions
        whose loss counts (the centres).
    """
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a 4-D tensor (B, C, H, W), got {getattr(x, 'shape', x)}")
    if replacement not in REPLACEMENTS:
        raise ValueError(
            f"replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}"
        )
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise ValueError(f"radius must be an integer >= 1, got {radius!r}")
    hidden = len(structure_offsets(mask, span))
    batch, _, height, width = x.shape
    if min(height, width) <= 2 * radius:
        raise ValueError(f"patches of {height}x{width} are too small for radius {radius}")
    if hidden > 1 and min(height, width) <= 6 * span + 1:
        raise ValueError(f"patches of {height}x{width} are too small for a {mask} mask of "
                         f"span {span} (need more than {6 * span + 1} pixels)")
    if hidden > 1:
        _cell_side(fraction)  # checks it
        fraction = max(0.001, min(fraction, MAX_HIDDEN / hidden))
    positions = stratified_positions(batch, height, width, fraction, rng)
    b, y, xx = (torch.from_numpy(positions[:, i]).to(x.device) for i in range(3))
    if hidden > 1:
        masked = x.clone()
        _hide_structures(x, masked, positions, mask, span, rng)
        values = None
    elif replacement == "neighbour":
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
    if values is not None:
        masked = x.clone()
        masked[b, :, y, xx] = values.to(x.dtype)
    loss_mask = torch.zeros((batch, 1, height, width), dtype=x.dtype, device=x.device)
    loss_mask[b, 0, y, xx] = 1.0
    return masked, loss_mask


def masked_charbonnier(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-3,
                       distance: str = "charbonnier") -> Tensor:
    """Charbonnier distance (or squared error) averaged over the masked pixels (and all
    channels) only.

    Parameters
    ----------
    pred, target : torch.Tensor
        (B, C, H, W) of the same shape.
    mask : torch.Tensor
        (B, 1, H, W), 1 where the loss is taken, 0 elsewhere.
    eps : float
        Charbonnier constant.
    distance : {"charbonnier", "mse"}
        ``sqrt(d^2 + eps^2)`` (median-seeking) or ``d^2`` (mean-seeking).

    Returns
    -------
    torch.Tensor
        A scalar; pixels where ``mask`` is 0 have no influence on it or on its gradient.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
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
    if distance == "mse":
        return (diff * diff).sum() / count
    return torch.sqrt(diff * diff + eps * eps).sum() / count


def blind_spot_loss(
    stages: Sequence[Tensor], noisy: Tensor, mask: Tensor, eps: float = 1e-3,
    distance: str = "charbonnier",
) -> Tensor:
    """The paper's Charbonnier loss (or squared error) summed over the stages, at masked
    pixels only.

    ``stages`` are the network's outputs for the *masked* input (a list, finest first),
    ``noisy`` the unmasked patches (B, C, H, W) and ``mask`` (B, 1, H, W) from
    :func:`mask_batch`; returns a scalar tensor.
    """
    if isinstance(stages, Tensor) or not len(stages):
        raise TypeError("stages must be a non-empty sequence of tensors (one per stage)")
    return sum(masked_charbonnier(s, noisy, mask, eps, distance) for s in stages)

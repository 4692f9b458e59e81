"""Isolated outliers (hot and dead pixels) in blind-spot training.

A hot pixel is a camera defect: one pixel far brighter than its neighbours allow, with no
support from them. It breaks blind-spot training twice:

- **as a target** it cannot be predicted from its neighbours (it is not signal), so the
  squared error at the few masked hot pixels dominates the loss and pulls every prediction
  up by the hot pixels' mean excess;
- **as an input** it is never trained on at all: the loss is taken only where the centre is
  hidden, so what the network does with a visible centre stays what the starting model did.
  A supervised denoiser trained on Poisson-Gaussian noise keeps much of a hot pixel (a
  bright spike is a plausible bright spot to it), and so does the fine-tuned network.

:func:`isolated_outliers` finds them in a batch of noisy patches: a pixel whose excess over
the largest (or the smallest, for dead pixels) of its 8 neighbours is more than
:data:`THRESHOLD` times the noise at its level (a trimmed RMS of the residual to the 3 x 3
median, in 8 level bins of the patch, so Poisson noise of bright and of nearly dark pixels
is judged by its own scale, and never below one step of the data), while its 4 direct neighbours stand less than
:data:`SUPPORT` of that excess above the ring 2 pixels away (a spot blurred by the optics,
even an undersampled one, lifts its direct neighbours; a defect does not).
:func:`teach_outliers` then leaves those pixels out of the loss and plants outliers of the
same sizes on a share of the hidden centres, so the network learns from the exact blind-spot
targets that a pixel standing alone far above its neighbours carries no signal. Images
without such pixels get neither: their training is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["INJECTED_SHARE", "SUPPORT", "THRESHOLD", "isolated_outliers", "teach_outliers"]

#: Excess over the neighbours, in noise standard deviations, from which a pixel is an outlier.
THRESHOLD = 8.0
#: An outlier's direct neighbours rise less than this share of its excess above the ring.
SUPPORT = 0.25
#: Share of the hidden centres given a planted outlier (when the batch has outliers).
INJECTED_SHARE = 0.2
_LEVEL_BINS = 8
_TRIM = 0.98  # the largest 2 % of squared residuals per level bin are left out of the RMS
_FLOOR = 1e-3  # smallest noise scale (normalised units): flat or quantised patches


def _neighbourhood(grey: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per pixel of (B, 1, H, W): max, min and median of the 8 neighbours, mean of the 4
    direct ones, and median of the 16-pixel ring at distance 2 (borders replicated)."""
    b, _, h, w = grey.shape
    padded = F.pad(grey, (2, 2, 2, 2), mode="replicate")
    window = F.unfold(padded, 5).view(b, 25, h, w)  # row-major 5 x 5 offsets
    inner = [6, 7, 8, 11, 13, 16, 17, 18]
    direct = [7, 11, 13, 17]
    ring = [i for i in range(25) if i not in inner and i != 12]
    eight = window[:, inner]
    return (eight.max(1, keepdim=True).values, eight.min(1, keepdim=True).values,
            eight.median(1, keepdim=True).values, window[:, direct].mean(1, keepdim=True),
            window[:, ring].median(1, keepdim=True).values)


def _noise_scale(level: Tensor, residual: Tensor) -> Tensor:
    """Trimmed RMS of ``residual`` within level bins of each patch, per pixel (B, 1, H, W)."""
    b = level.shape[0]
    flat_level, flat_res = level.reshape(b, -1), residual.reshape(b, -1)
    edges = torch.quantile(flat_level, torch.linspace(0, 1, _LEVEL_BINS + 1)[1:-1], dim=1).T
    bins = torch.searchsorted(edges.contiguous(), flat_level.contiguous())
    scale = torch.empty_like(flat_res)
    for i in range(b):
        for k in range(_LEVEL_BINS):
            chosen = bins[i] == k
            if not chosen.any():
                continue
            squares = flat_res[i][chosen] ** 2
            keep = squares <= torch.quantile(squares, _TRIM)
            scale[i][chosen] = squares[keep].mean().sqrt()
        # never below one step of the data (a photon count, a grey level): in a nearly dark
        # photon-counting patch most residuals are 0 and a single photon is no outlier
        steps = flat_res[i].abs()
        steps = steps[steps > 0]
        if steps.numel():
            scale[i] = scale[i].clamp_min(float(steps.min()))
    return scale.clamp_min(_FLOOR).view_as(level)


def isolated_outliers(x: Tensor) -> tuple[Tensor, Tensor]:
    """Hot and dead pixels of noisy patches (see the module docstring).

    Parameters
    ----------
    x : torch.Tensor
        (B, C, H, W) noisy patches in the network's range (channels averaged).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(B, 1, H, W)`` bool, True at outliers; and the outliers' excess over the median of
        their 8 neighbours (signed, 0 elsewhere).
    """
    grey = x.float().mean(1, keepdim=True)
    top, bottom, median, direct, ring = _neighbourhood(grey)
    scale = _noise_scale(median, grey - median)
    hot = (grey - top > THRESHOLD * scale) & (direct - ring < SUPPORT * (grey - top))
    dead = (bottom - grey > THRESHOLD * scale) & (ring - direct < SUPPORT * (bottom - grey))
    flags = hot | dead
    return flags, torch.where(flags, grey - median, torch.zeros_like(grey))


def teach_outliers(inputs: Tensor, masked: Tensor, mask: Tensor, rng: np.random.Generator
                   ) -> tuple[Tensor, Tensor]:
    """Leave the outliers of ``inputs`` out of the loss and plant outliers in ``masked``.

    Parameters
    ----------
    inputs : torch.Tensor
        The noisy patches (B, C, H, W) (the blind-spot targets).
    masked, mask : torch.Tensor
        The masked input and loss mask of :func:`~napari_mprnet.training.blindspot.
        mask_batch`; neither is modified.
    rng : numpy.random.Generator
        Picks the centres and the planted sizes.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The new masked input: on :data:`INJECTED_SHARE` of the hidden centres (the loss
        positions) the replacement value plus the excess of a random outlier of the batch;
        and the new mask, 0 at the outliers. Both unchanged when the batch has none.
    """
    flags, excess = isolated_outliers(inputs)
    if not bool(flags.any()):
        return masked, mask
    kept = mask * (~flags).to(mask.dtype)
    if not bool(kept.any()):  # every loss position is an outlier: keep the batch usable
        return masked, mask
    sizes = excess[flags].cpu().numpy()
    centres = kept[:, 0].nonzero().cpu().numpy()  # (n, 3): patch, y, x
    count = round(INJECTED_SHARE * len(centres))
    if count == 0:
        return masked, kept
    chosen = centres[rng.choice(len(centres), count, replace=False)]
    planted = torch.from_numpy(rng.choice(sizes, count)).to(masked.device, masked.dtype)
    b, y, xx = (torch.from_numpy(chosen[:, i]).to(masked.device) for i in range(3))
    out = masked.clone()
    out[b, :, y, xx] = out[b, :, y, xx] + planted[:, None]
    return out, kept

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

:func:`teach_outliers` finds them in every patch
(:func:`napari_mprnet.engine.outliers.isolated_outliers`), leaves them out of the loss and
plants outliers of the same sizes on a share of the hidden centres, so the network learns
from the exact blind-spot targets that a pixel standing alone far above (or below) its
neighbours carries no signal. Batches without such pixels get neither: their training is
unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..engine.outliers import isolated_outliers

__all__ = ["INJECTED_SHARE", "batch_outliers", "teach_outliers"]

#: Share of the hidden centres given a planted outlier (when the batch has outliers).
INJECTED_SHARE = 0.2


def batch_outliers(x: Tensor) -> tuple[Tensor, Tensor]:
    """Outliers of every patch of ``x`` (B, C, H, W), channels averaged: ``(B, 1, H, W)``
    bool flags and their signed excess over their neighbours' median (0 elsewhere)."""
    grey = x.detach().float().mean(1).cpu().numpy()
    found = [isolated_outliers(patch) for patch in grey]
    flags = torch.from_numpy(np.stack([f for f, _ in found]))[:, None]
    excess = torch.from_numpy(np.stack([e for _, e in found]).astype(np.float32))[:, None]
    return flags.to(x.device), excess.to(x.device)


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
    flags, excess = batch_outliers(inputs)
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

"""Validation during fine-tuning: PSNR/SSIM of the final stage on held-out planes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import distributed as _ddp
from .data import PairSet
from .metrics import psnr, ssim
from .sampling import center_crops

__all__ = ["VAL_CROP", "Validator", "evaluate", "validation_crops"]

#: Validation planes are centre-cropped to at most this side (keeps validation cheap).
VAL_CROP = 256


def validation_crops(val: PairSet, channels: int, patch_size: int) -> list[tuple]:
    """``(input, target, grey)`` per validation plane, centre-cropped (see :data:`VAL_CROP`)."""
    if len(val) == 0:
        return []
    crops = center_crops(val, size=max(VAL_CROP, patch_size), channels=channels)
    grey = [plane.shape[-1] == 1 for plane in val.inputs]
    return [(x, y, g) for (x, y), g in zip(crops, grey)]


def evaluate(model: torch.nn.Module, crops: list[tuple], device: torch.device,
             autocast: Callable, channels_last: bool) -> tuple[float, float]:
    """Mean PSNR and SSIM (data range 1) of the final output over the validation crops."""
    was_training = model.training
    model.eval()
    psnrs, ssims = [], []
    try:
        with torch.inference_mode():
            for x, y, grey in crops:
                x = x.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    out = model(x)[0]
                out = out.float().cpu()
                if grey and out.shape[1] == 3:  # as inference does: average the copies
                    out, y = out.mean(dim=1, keepdim=True), y[:, :1]
                psnrs.append(psnr(out, y))
                ssims.append(ssim(out, y) if min(out.shape[-2:]) >= 11 else float("nan"))
    finally:
        model.train(was_training)
    return float(np.mean(psnrs)), float(np.mean(ssims))


class Validator:
    """When to validate and how: the crops, the precision, the distributed share.

    Parameters
    ----------
    crops : list
        From :func:`validation_crops` (empty: no validation).
    every, steps : int
        Validate every ``every`` steps and at the last step.
    device, autocast, channels_last
        How the network runs (``autocast`` a context factory).
    session : distributed.Session or None
        In a distributed run each rank scores every world_size-th crop and the sums are
        all-reduced, so every rank gets the same means.
    """

    def __init__(self, crops: list[tuple], every: int, steps: int, device: torch.device,
                 autocast: Callable, channels_last: bool,
                 session: _ddp.Session | None = None) -> None:
        self.crops = crops
        self.every = every
        self.steps = steps
        self.device = device
        self.autocast = autocast
        self.channels_last = channels_last
        self.session = session

    def __bool__(self) -> bool:
        return bool(self.crops)

    def due(self, step: int) -> bool:
        """Whether ``step`` is validated."""
        return bool(self.crops) and (step % self.every == 0 or step == self.steps)

    def score(self, model: torch.nn.Module) -> tuple[float, float]:
        """Mean PSNR and SSIM of ``model`` over the crops (the same on every rank)."""
        session = self.session
        if session is None:
            return evaluate(model, self.crops, self.device, self.autocast, self.channels_last)
        mine = self.crops[session.rank::session.world_size]
        psnr_sum = ssim_sum = 0.0
        if mine:
            mean_psnr, mean_ssim = evaluate(model, mine, self.device, self.autocast,
                                            self.channels_last)
            psnr_sum, ssim_sum = mean_psnr * len(mine), mean_ssim * len(mine)
        psnr_total, ssim_total, count = session.sums([psnr_sum, ssim_sum, len(mine)])
        return psnr_total / count, ssim_total / count

"""Validation during fine-tuning: PSNR/SSIM of the final stage on held-out planes.

Without clean validation images (self-supervised objectives), the held-out planes are scored
by the objective's own loss instead (:class:`~napari_mprnet.training.self_supervised.
SelfSupervisedScore`, lower is better); with clean images both are reported and PSNR decides.
Given the starting network, a blind-spot score must also beat it significantly
(``val_loss_z``, :func:`~napari_mprnet.training.self_supervised.paired_z`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import distributed as _ddp
from .data import PairSet
from .metrics import psnr, ssim
from .objectives import Objective
from .sampling import center_crops
from .self_supervised import MIN_Z, SelfSupervisedScore, paired_z

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
    objective : Objective, optional
        A self-supervised objective (any but "supervised") also scores the crops with its
        own loss (``val_loss``).
    clean : bool
        Whether the crops' targets are clean images (PSNR/SSIM are measured and decide
        which model is best); otherwise ``val_loss`` decides.
    seed : int
        Seed of the fixed validation masks.
    reference : torch.nn.Module, optional
        A copy of the starting network. Without clean targets, a blind-spot objective then
        also reports ``val_loss_z``: how many standard errors the masked-pixel errors lie
        below the starting network's (paired pixel by pixel); a model is only kept over the
        starting one from :data:`~napari_mprnet.training.self_supervised.MIN_Z` on.
    """

    def __init__(self, crops: list[tuple], every: int, steps: int, device: torch.device,
                 autocast: Callable, channels_last: bool,
                 session: _ddp.Session | None = None, *, objective: Objective | None = None,
                 clean: bool = True, seed: int = 0,
                 reference: torch.nn.Module | None = None) -> None:
        self.crops = crops
        self.every = every
        self.steps = steps
        self.device = device
        self.autocast = autocast
        self.channels_last = channels_last
        self.session = session
        self.clean = bool(clean)
        self_supervised = objective is not None and objective.name != "supervised"
        self.loss_score = (SelfSupervisedScore(objective, crops, seed)
                           if self_supervised and crops else None)
        if crops and not self.clean and self.loss_score is None:
            raise ValueError("validation without clean targets needs a self-supervised objective")
        #: the history key that decides which model is best
        self.measure = "val_psnr" if self.clean else "val_loss"
        paired = (not self.clean and self.loss_score is not None
                  and self.loss_score.blind_spot and reference is not None)
        self.reference = reference if paired else None
        self._reference_errors: dict[int, np.ndarray] = {}

    def __bool__(self) -> bool:
        return bool(self.crops)

    def due(self, step: int) -> bool:
        """Whether ``step`` is validated."""
        return bool(self.crops) and (step % self.every == 0 or step == self.steps)

    def better(self, scores: dict, best: dict) -> bool:
        """Whether ``scores`` beat ``best`` (higher PSNR, or lower self-supervised loss)."""
        old, new = best.get(self.measure), scores[self.measure]
        if "val_loss_z" in scores and scores["val_loss_z"] < MIN_Z and old is not None:
            return False  # not significantly better than the starting network
        return old is None or (new > old if self.clean else new < old)

    def _local(self, model: torch.nn.Module, indices: list[int]) -> dict[str, float]:
        """Sums of the scores over the crops at ``indices``."""
        sums: dict[str, float] = {}
        if not indices:
            return sums
        run = (self.device, self.autocast, self.channels_last)
        if self.clean:
            mean_psnr, mean_ssim = evaluate(model, [self.crops[i] for i in indices], *run)
            sums["val_psnr"], sums["val_ssim"] = mean_psnr * len(indices), mean_ssim * len(
                indices)
        if self.loss_score is not None:
            losses, errors = self.loss_score.losses_and_errors(model, *run, indices=indices)
            sums["val_loss"] = float(np.mean(losses)) * len(indices)
        if self.reference is not None:
            diff = np.concatenate([self._start_errors(i) - errors[i] for i in indices])
            sums.update({"diff": float(diff.sum()), "diff_square": float(np.sum(diff * diff)),
                         "diff_count": float(diff.size)})
        return sums

    def _start_errors(self, index: int) -> np.ndarray:
        """The starting network's masked-pixel errors on crop ``index`` (measured once)."""
        if index not in self._reference_errors:
            self._reference_errors[index] = self.loss_score.pixel_errors(
                self.reference, self.device, self.autocast, self.channels_last, index=index)
        return self._reference_errors[index]

    def score(self, model: torch.nn.Module) -> dict[str, float]:
        """Mean scores of ``model`` over the crops (the same on every rank): ``val_psnr``
        and ``val_ssim`` with clean targets, ``val_loss`` with a self-supervised objective."""
        keys = (["val_psnr", "val_ssim"] if self.clean else []) + (
            ["val_loss"] if self.loss_score is not None else [])
        paired = ["diff", "diff_square", "diff_count"] if self.reference is not None else []
        session = self.session
        if session is None:
            sums, count = self._local(model, list(range(len(self.crops)))), len(self.crops)
        else:
            mine = list(range(session.rank, len(self.crops), session.world_size))
            local = self._local(model, mine)
            *totals, count = session.sums([local.get(k, 0.0) for k in keys + paired]
                                          + [len(mine)])
            sums = dict(zip(keys + paired, totals))
        scores = {k: float(sums[k]) / count for k in keys}
        if paired:
            scores["val_loss_z"] = paired_z(*(float(sums[k]) for k in paired))
        return scores

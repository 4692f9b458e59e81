"""Self-supervised fine-tuning: training objectives and validation without clean images.

Two objectives for :func:`napari_mprnet.training.trainer.finetune` when there are no clean
images:

- :class:`Noise2Void` (``method="noise2void"``, no targets): blind-spot training, see
  :mod:`napari_mprnet.training.blindspot`. Needs noise that is independent from pixel to
  pixel (given the signal) and has zero mean; with a structured mask (``mask="horizontal"``,
  ``"vertical"`` or ``"square"``) noise correlated over a few pixels along those directions
  is tolerated too (the correlated neighbours are hidden with the centre).
- :class:`Noise2Noise` (``method="noise2noise"``): the targets are a second, independent
  noisy acquisition of the same scene (for a time series of a static sample:
  :func:`napari_mprnet.training.series.series_pairs`). The noise may be correlated between
  pixels, but must be independent between the two acquisitions. The paper's loss applies
  unchanged (Charbonnier + edge): both are unbiased for a noisy target of zero-mean noise
  up to the Charbonnier's median-seeking.

Validation without ground truth (:class:`SelfSupervisedScore`) scores held-out planes with
the objective's own loss on the final stage: for Noise2Noise the distance to the other
acquisition, for Noise2Void the blind-spot loss with fixed masks (the same pixels every
time, so that steps compare; several mask sets on small crops, :data:`VAL_MASKED_PIXELS`).
A lower score estimates a lower error to the unknown clean image (the noise adds the same
constant to every model's score).

A blind-spot score is noisy: a few hundred masked pixels, each carrying the full noise of
its target. So a fine-tuned network replaces the starting one only where its masked-pixel
errors are lower than the starting network's by :data:`MIN_Z` standard errors of the
paired per-pixel differences (:func:`paired_z`); measured on generated camera fields, a
single validation 3 % below the start, not significant, picked a model 0.5 dB worse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .blindspot import (
    DISTANCES,
    MASKS,
    REPLACEMENTS,
    blind_spot_loss,
    mask_batch,
    structure_offsets,
)
from .objectives import Batch, Objective, Supervised
from .outliers import teach_outliers

__all__ = [
    "LEARNING_RATES",
    "METHODS",
    "MIN_Z",
    "VAL_MASKED_PIXELS",
    "Noise2Noise",
    "Noise2Void",
    "SelfSupervisedScore",
    "default_learning_rate",
    "objective_for",
    "paired_z",
    "resolve_objective",
]

#: The training methods of ``finetune(method=...)``.
METHODS = ("supervised", "noise2noise", "noise2void")
#: Peak learning rates when ``finetune(learning_rate=None)``: self-supervised targets are
#: noisy, so fine-tuning steps are kept small (the starting model drifts less).
LEARNING_RATES = {"supervised": 2e-4, "self-supervised": 5e-5}
#: Blind-spot validation draws fixed mask sets until about this many pixels are masked
#: (at most :data:`_MAX_MASK_SETS` sets per crop).
VAL_MASKED_PIXELS = 2000
_MAX_MASK_SETS = 8
#: A fine-tuned network must beat the starting one on the blind-spot validation by this
#: many standard errors of the paired per-pixel differences.
MIN_Z = 2.0


@dataclass(frozen=True)
class Noise2Void(Objective):
    """Blind-spot objective: mask a few pixels, predict them from their surroundings.

    Parameters
    ----------
    fraction : float
        Share of pixels masked per patch (stratified: one per cell).
    radius : int
        Replacement window ``(2 * radius + 1)`` square, centre excluded.
    replacement : {"median", "mean", "neighbour"}
        N2V2's local median / mean, or N2V's random neighbour (``mask="pixel"`` only).
    mask : {"pixel", "horizontal", "vertical", "square"}
        Hide the masked pixel alone, or with its neighbours along x / along y / in a block,
        for noise correlated between neighbouring pixels (structured blind spot).
    span : int
        Half-length of a structured mask (``2 * span + 1`` pixels across).
    distance : {"mse", "charbonnier"}
        The squared error (default: mean-seeking, unbiased for any zero-mean noise, skewed
        photon counts included) or the paper's Charbonnier (median-seeking: robust to
        outliers, but biased low for skewed noise; see :mod:`~napari_mprnet.training.
        blindspot`).
    outliers : bool
        Find isolated outliers (hot and dead pixels) in every batch, leave them out of the
        loss and plant outliers of their sizes on a share of the hidden centres, so the
        network learns not to reproduce them (:mod:`~napari_mprnet.training.outliers`);
        batches without any train as if False.
    """

    fraction: float = 0.015
    radius: int = 2
    replacement: str = "median"
    mask: str = "pixel"
    span: int = 2
    distance: str = "mse"
    outliers: bool = True
    name = "noise2void"
    needs_targets = False

    def __post_init__(self) -> None:
        if self.replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {', '.join(REPLACEMENTS)}, "
                             f"got {self.replacement!r}")
        structure_offsets(self.mask, self.span)  # checks both
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, "
                             f"got {self.distance!r}")

    def prepare(self, inputs: Tensor, targets: Tensor, rng: np.random.Generator) -> Batch:
        masked, mask = mask_batch(inputs, rng, fraction=self.fraction, radius=self.radius,
                                  replacement=self.replacement, mask=self.mask,
                                  span=self.span)
        if self.outliers:
            masked, mask = teach_outliers(inputs, masked, mask, rng)
        return Batch(masked, inputs, mask)

    def loss(self, stages: Sequence[Tensor], batch: Batch) -> Tensor:
        return blind_spot_loss(stages, batch.targets, batch.mask, distance=self.distance)


@dataclass(frozen=True)
class Noise2Noise(Supervised):
    """Independent noisy acquisitions as targets, with the paper's loss (see module doc)."""

    name = "noise2noise"


def objective_for(method: str, edge_weight: float = 0.05, **options) -> Objective:
    """The objective of a ``finetune(method=...)`` name.

    Parameters
    ----------
    method : {"supervised", "noise2noise", "noise2void"}
    edge_weight : float
        Edge-loss weight of the objectives that have one (not Noise2Void: see
        :mod:`napari_mprnet.training.blindspot`).
    **options
        Noise2Void settings (``fraction``, ``radius``, ``replacement``, ``mask``, ``span``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "noise2void":
        return Noise2Void(**options)
    if options:
        raise ValueError(f"{', '.join(sorted(options))}: only for method='noise2void'")
    if method == "noise2noise":
        return Noise2Noise(edge_weight=edge_weight)
    return Supervised(edge_weight=edge_weight)


class SelfSupervisedScore:
    """Validation loss of an objective on held-out crops (lower is better).

    Parameters
    ----------
    objective : Objective
        Its ``prepare`` builds each crop's batch from a generator seeded by ``(seed, index)``
        (fixed masks), its ``loss`` is taken on the final stage only.
    crops : list of (input, target, grey)
        Validation crops (the target is the input again for Noise2Void).
    seed : int
        Seed of the fixed masks. A blind-spot objective draws ``sets`` mask sets per crop,
        enough for about :data:`VAL_MASKED_PIXELS` masked pixels in all (at most 8).
    """

    def __init__(self, objective: Objective, crops: list[tuple], seed: int = 0) -> None:
        self.objective = objective
        self.blind_spot = isinstance(objective, Noise2Void)
        pixels = sum(int(x.shape[-1] * x.shape[-2]) for x, _y, _g in crops)
        per_set = max(1.0, pixels * objective.fraction) if self.blind_spot else 1.0
        self.sets = (int(np.clip(np.ceil(VAL_MASKED_PIXELS / per_set), 1, _MAX_MASK_SETS))
                     if self.blind_spot else 1)
        self.batches = [
            [objective.prepare(x, y, np.random.default_rng([seed, index] + [k] * (k > 0)))
             for k in range(self.sets)]
            for index, (x, y, _grey) in enumerate(crops)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def _evaluated(self, model: torch.nn.Module, run: Callable) -> Any:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return run()
        finally:
            model.train(was_training)

    def losses_and_errors(self, model: torch.nn.Module, device: torch.device,
                          autocast: Callable, channels_last: bool,
                          indices: Sequence[int] | None = None
                          ) -> tuple[list[float], dict[int, np.ndarray]]:
        """One pass over the crops (or those at ``indices``): the loss of every mask set and,
        for a blind-spot objective, each crop's distance at every masked pixel (all its mask
        sets, channels averaged, in a fixed order; their mean per set is that set's loss)."""
        chosen = range(len(self.batches)) if indices is None else indices

        def run() -> tuple[list[float], dict[int, np.ndarray]]:
            losses, errors = [], {}
            for index in chosen:
                per_set = []
                for batch in self.batches[index]:
                    batch = batch.to(device, channels_last)
                    with autocast():
                        final = model(batch.inputs)[0].float()
                    if not self.blind_spot:
                        losses.append(float(self.objective.loss([final], batch)))
                        continue
                    diff = (final - batch.targets.float()).permute(0, 2, 3, 1)[
                        batch.mask[:, 0] > 0]
                    error = (diff * diff if self.objective.distance == "mse"
                             else torch.sqrt(diff * diff + 1e-6))  # the loss's eps 1e-3
                    per_set.append(error.mean(-1).double().cpu().numpy())
                    losses.append(float(per_set[-1].mean()))
                if per_set:
                    errors[index] = np.concatenate(per_set)
            return losses, errors

        return self._evaluated(model, run)

    def __call__(self, model: torch.nn.Module, device: torch.device, autocast: Callable,
                 channels_last: bool, indices: Sequence[int] | None = None) -> float:
        """Mean loss over the crops (or those at ``indices``) and their mask sets."""
        losses, _ = self.losses_and_errors(model, device, autocast, channels_last, indices)
        return float(np.mean(losses)) if losses else float("nan")

    def pixel_errors(self, model: torch.nn.Module, device: torch.device, autocast: Callable,
                     channels_last: bool, index: int) -> np.ndarray:
        """A blind-spot objective's distance at every masked pixel of crop ``index`` (see
        :meth:`losses_and_errors`)."""
        if not self.blind_spot:
            raise TypeError("per-pixel errors need a blind-spot objective (Noise2Void)")
        return self.losses_and_errors(model, device, autocast, channels_last, [index])[1][index]


def paired_z(diff_sum: float, diff_square_sum: float, count: float) -> float:
    """How many standard errors the mean of paired differences (starting network's error
    minus the candidate's: > 0 where the candidate is better) lies above zero; 0 where there
    are fewer than two or they do not vary."""
    if count < 2:
        return 0.0
    mean = diff_sum / count
    spread = max(diff_square_sum / count - mean * mean, 0.0) * count / (count - 1)
    if spread <= 0.0:
        return 0.0
    return float(mean / np.sqrt(spread / count))


def default_learning_rate(objective: Objective) -> float:
    """The peak learning rate ``finetune`` uses for ``objective`` when none is given."""
    kind = "supervised" if objective.name == "supervised" else "self-supervised"
    return LEARNING_RATES[kind]


def resolve_objective(method: str | None, objective: Objective | None, targets: object,
                      pairs_from_series: bool, edge_weight: float,
                      blind_spot_mask: str = "pixel", blind_spot_span: int = 2,
                      blind_spot_distance: str = "mse") -> Objective:
    """The objective of a ``finetune`` call, checked against its data.

    ``method`` None picks ``"noise2noise"`` with ``pairs_from_series``, ``"supervised"``
    with targets and ``"noise2void"`` without; an explicit ``objective`` replaces ``method``.
    ``blind_spot_mask``/``blind_spot_span``/``blind_spot_distance`` are Noise2Void's
    ``mask``/``span``/``distance``.
    """
    blind_spot = {"mask": blind_spot_mask, "span": blind_spot_span,
                  "distance": blind_spot_distance}
    custom_blind_spot = blind_spot != {"mask": "pixel", "span": 2, "distance": "mse"}
    if blind_spot_mask not in MASKS:
        raise ValueError(f"blind_spot_mask must be one of {', '.join(MASKS)}, "
                         f"got {blind_spot_mask!r}")
    if objective is not None:
        if method is not None:
            raise ValueError("give method or objective, not both")
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be an Objective, got {type(objective).__name__}")
        if custom_blind_spot:
            raise ValueError("give the blind-spot settings to the objective (Noise2Void(mask=..., "
                             "span=..., distance=...)), not as blind_spot_* arguments")
        chosen = objective
    else:
        if method is None:
            method = ("noise2noise" if pairs_from_series
                      else "supervised" if targets is not None else "noise2void")
        if custom_blind_spot and method != "noise2void":
            raise ValueError(f"blind_spot_mask/_span/_distance are Noise2Void settings; "
                             f"method {method!r} has no blind spot")
        chosen = (objective_for(method, edge_weight, **blind_spot)
                  if custom_blind_spot else objective_for(method, edge_weight))
    if pairs_from_series:
        if chosen.name != "noise2noise":
            raise ValueError("pairs_from_series=True makes Noise2Noise pairs of neighbouring "
                             f"frames: use method='noise2noise' (got {chosen.name!r})")
        if targets is not None:
            raise ValueError("pairs_from_series=True takes the targets from the inputs' next "
                             "frames: give no targets")
    elif chosen.needs_targets and targets is None:
        raise ValueError(
            f"method {chosen.name!r} needs targets; without clean images use "
            "method='noise2void', or method='noise2noise' with pairs_from_series=True for a "
            "series of repeated acquisitions"
        )
    elif not chosen.needs_targets and targets is not None:
        raise ValueError(f"method {chosen.name!r} trains on the noisy inputs alone: give no "
                         "targets (clean images for validation go to val_inputs/val_targets)")
    return chosen

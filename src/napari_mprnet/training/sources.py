"""What a fine-tuning run trains on: its training/validation planes and its starting network."""

from __future__ import annotations

import copy
from typing import Any

from ..model.arch import MPRNet
from ..model.presets import TASKS
from .data import PairSet, load_pairs, split_pairs, split_region
from .series import series_pairs

__all__ = ["base_network", "load_training_data"]


def load_training_data(inputs: Any, targets: Any, val_inputs: Any, val_targets: Any,
                       normalize: Any, val_fraction: float, seed: int,
                       series: bool, min_train: int = 0) -> tuple[PairSet, PairSet]:
    """Training and validation planes: given pairs, planes paired with themselves (no
    targets), or neighbouring frames of a series; validation given, split off (whole planes,
    or a band of a single plane keeping ``min_train`` px for training), or none."""
    if series:  # Noise2Noise pairs of neighbouring frames, validation by frame blocks
        pairs, val = series_pairs(inputs, val_fraction=val_fraction, seed=seed,
                                  normalize=normalize)
    else:  # without targets (blind spot) every plane is paired with itself
        pairs = load_pairs(inputs, inputs if targets is None else targets, normalize=normalize)
    if val_inputs is not None:
        val = load_pairs(val_inputs, val_targets, normalize=pairs.normalization)
        return pairs, val
    if series:
        return pairs, val
    if val_fraction > 0 and len(pairs) >= 2:
        return split_pairs(pairs, val_fraction, seed)
    if val_fraction > 0 and len(pairs) == 1:
        return split_region(pairs, val_fraction, min_train)
    return pairs, pairs.subset([])


def base_network(model: Any) -> tuple[MPRNet, MPRNet]:
    """The base model as given/loaded, and the fp32 CPU copy that is trained."""
    from ..engine.models import prepare_model

    task_hint = model if isinstance(model, str) and model in TASKS else "denoise"
    base = prepare_model(model, task_hint)
    return base, copy.deepcopy(base).to("cpu")

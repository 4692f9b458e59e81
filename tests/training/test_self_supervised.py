"""Self-supervised objectives and the validation score without ground truth."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from napari_mprnet.training.objectives import Supervised
from napari_mprnet.training.self_supervised import (
    Noise2Noise,
    Noise2Void,
    SelfSupervisedScore,
    objective_for,
)


def test_objective_for_names():
    assert isinstance(objective_for("noise2void", replacement="neighbour"), Noise2Void)
    assert isinstance(objective_for("noise2noise"), Noise2Noise)
    assert type(objective_for("supervised")) is Supervised
    with pytest.raises(ValueError, match="method"):
        objective_for("noise2self")
    with pytest.raises(ValueError, match="only for method='noise2void'"):
        objective_for("supervised", fraction=0.01)
    with pytest.raises(ValueError, match="replacement"):
        Noise2Void(replacement="zeros")
    assert objective_for("noise2void").describe() == {
        "name": "noise2void", "fraction": 0.015, "radius": 2, "replacement": "median",
        "mask": "pixel", "span": 2, "distance": "mse", "outliers": True}
    with pytest.raises(ValueError, match="distance must be one of"):
        Noise2Void(distance="l1")
    with pytest.raises(ValueError, match="mask must be one of"):
        Noise2Void(mask="ring")
    structured = objective_for("noise2void", mask="vertical", span=3).describe()
    assert structured["mask"] == "vertical" and structured["span"] == 3
    assert objective_for("noise2noise").describe()["name"] == "noise2noise"


def test_noise2void_prepare_masks_and_keeps_noisy_target():
    x = torch.rand(2, 3, 32, 32)
    batch = Noise2Void().prepare(x, x, np.random.default_rng(0))
    assert torch.equal(batch.targets, x)
    changed = (batch.inputs != x).any(dim=1, keepdim=True)
    assert torch.equal(changed, batch.mask.bool())


def test_noise2void_loss_ignores_unmasked_outputs():
    x = torch.rand(1, 3, 32, 32)
    objective = Noise2Void()
    batch = objective.prepare(x, x, np.random.default_rng(1))
    # an output equal to the noisy input everywhere except at the mask: only the mask counts
    far = batch.targets + 0.5 * (1 - batch.mask)
    near = batch.targets + 0.5 * batch.mask
    assert float(objective.loss([far], batch)) < 2e-3
    assert float(objective.loss([near], batch)) > 0.2  # 0.5 ** 2: squared error


def test_score_is_fixed_and_lower_for_a_better_prediction(tiny_model):
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(np.tile(np.linspace(0, 1, 48, dtype=np.float32), (48, 1)))
    noisy = clean + 0.2 * torch.from_numpy(rng.standard_normal((48, 48)).astype(np.float32))
    x = noisy[None, None].repeat(1, 3, 1, 1)
    crops = [(x, x, True)]
    score = SelfSupervisedScore(Noise2Void(), crops, seed=0)

    class Smooth(torch.nn.Module):  # predicts the clean ramp: the best blind-spot guess
        def forward(self, t):
            return [clean[None, None].expand_as(t).clone()]

    class Copy(torch.nn.Module):  # returns its (masked) input: worse at the masked pixels
        def forward(self, t):
            return [t]

    run = {"device": torch.device("cpu"), "autocast": contextlib.nullcontext,
           "channels_last": False}
    good, bad = score(Smooth(), **run), score(Copy(), **run)
    assert good < bad
    assert score(Copy(), **run) == bad  # the same masks every time
    assert score(tiny_model, **run) == score(tiny_model, **run)
    assert len(SelfSupervisedScore(Noise2Noise(), [(x, x, True)] * 3)) == 3

"""A blind-spot validation keeps a fine-tuned network only where it beats the start clearly."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from napari_mprnet.training.self_supervised import (
    MIN_Z,
    VAL_MASKED_PIXELS,
    Noise2Noise,
    Noise2Void,
    SelfSupervisedScore,
    paired_z,
)
from napari_mprnet.training.validation import Validator

RUN = {"device": torch.device("cpu"), "autocast": contextlib.nullcontext,
       "channels_last": False}


def _ramp(size: int = 48, sigma: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    clean = torch.from_numpy(np.tile(np.linspace(0, 1, size, dtype=np.float32), (size, 1)))
    noisy = clean + sigma * torch.from_numpy(rng.standard_normal((size, size)).astype(np.float32))
    return clean, noisy[None, None].repeat(1, 3, 1, 1)


class _Copy(torch.nn.Module):
    """Returns its (masked) input: a poor blind-spot predictor."""

    def forward(self, t):
        return [t]


class _Predict(torch.nn.Module):
    """Returns a fixed image: ``clean`` (the best guess) or anything else."""

    def __init__(self, image):
        super().__init__()
        self.image = image

    def forward(self, t):
        return [self.image[None, None].expand_as(t).clone()]


def test_paired_z():
    rng = np.random.default_rng(1)
    better = 0.5 + rng.standard_normal(400)
    z = paired_z(better.sum(), np.sum(better**2), better.size)
    assert z == pytest.approx(better.mean() / (better.std(ddof=1) / np.sqrt(400)))
    assert z > 5
    worse = -better
    assert paired_z(worse.sum(), np.sum(worse**2), worse.size) == pytest.approx(-z)
    assert paired_z(4.0, 16.0, 1) == 0.0  # one difference: no spread to judge it by
    assert paired_z(6.0, 12.0, 3) == 0.0  # identical differences: no spread


def test_small_crops_get_several_fixed_mask_sets():
    _clean, x = _ramp(48)
    score = SelfSupervisedScore(Noise2Void(), [(x, x, True)], seed=0)
    per_set = 48 * 48 * Noise2Void().fraction
    assert score.sets == min(8, int(np.ceil(VAL_MASKED_PIXELS / per_set))) > 1
    # the first set is the single set of before: (seed, index)
    single = Noise2Void().prepare(x, x, np.random.default_rng([0, 0]))
    assert torch.equal(score.batches[0][0].mask, single.mask)
    assert not torch.equal(score.batches[0][1].mask, single.mask)
    errors = score.pixel_errors(_Copy(), **RUN, index=0)
    assert errors.size == int(sum(b.mask.sum() for b in score.batches[0]))
    assert np.array_equal(errors, score.pixel_errors(_Copy(), **RUN, index=0))  # fixed
    # the per-pixel errors and the score are one pass: the score is the objective's loss
    losses = [float(Noise2Void().loss([b.inputs], b)) for b in score.batches[0]]
    assert score(_Copy(), **RUN) == pytest.approx(np.mean(losses), rel=1e-5)
    big = torch.zeros(1, 3, 512, 512)
    assert SelfSupervisedScore(Noise2Void(), [(big, big, True)]).sets == 1
    noise2noise = SelfSupervisedScore(Noise2Noise(), [(x, x, True)])
    assert noise2noise.sets == 1
    with pytest.raises(TypeError, match="blind-spot"):
        noise2noise.pixel_errors(_Copy(), **RUN, index=0)


def _validator(x, reference):
    return Validator([(x, x, True)], every=1, steps=2, objective=Noise2Void(), clean=False,
                     seed=0, reference=reference, **RUN)


def test_a_clearly_better_network_replaces_the_start():
    clean, x = _ramp()
    validator = _validator(x, _Copy())
    start = validator.score(_Copy())
    assert start["val_loss_z"] == 0.0
    best = {"step": 0, **start}
    good = validator.score(_Predict(clean))
    assert good["val_loss"] < start["val_loss"] and good["val_loss_z"] > MIN_Z
    assert validator.better(good, best)


def test_a_barely_better_network_does_not_replace_the_start():
    clean, x = _ramp()
    validator = _validator(x, _Predict(clean))
    start = validator.score(_Predict(clean))
    best = {"step": 0, **start}
    # a tiny nudge of the best guess: lower loss on these masks by chance, or not, but never
    # by MIN_Z standard errors
    rng = np.random.default_rng(3)
    nudged = clean + 1e-3 * torch.from_numpy(rng.standard_normal(clean.shape).astype(np.float32))
    scores = validator.score(_Predict(nudged))
    assert abs(scores["val_loss_z"]) < MIN_Z
    assert not validator.better(scores, best)
    # the same loss, decided without the paired test (no reference), would be compared plainly
    plain = Validator([(x, x, True)], every=1, steps=2, objective=Noise2Void(), clean=False,
                      seed=0, **RUN)
    assert "val_loss_z" not in plain.score(_Predict(nudged))
    assert plain.better({"val_loss": start["val_loss"] - 1e-9}, best)
    assert not validator.better({"val_loss": start["val_loss"] - 1e-9, "val_loss_z": 1.0},
                                best)

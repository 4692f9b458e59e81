"""With one plane, fine-tuning holds out a band of it for validation (never a pixel it trains
on), so quality is always reported."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mprnet.training.data import MIN_VAL_BAND, PairSet, split_region
from napari_mprnet.training.sources import load_training_data


def _one(height, width, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.random((height, width, 1)).astype(np.float32)
    noisy = clean + np.float32(0.1) * rng.standard_normal(clean.shape).astype(np.float32)
    return PairSet([noisy], [clean], ["img"])


@pytest.mark.parametrize(("shape", "axis", "band"), [((384, 300), 0, 40), ((120, 500), 1, 56)])
def test_band_along_the_longer_side_is_disjoint_and_covers_the_plane(shape, axis, band):
    pairs = _one(*shape)
    train, val = split_region(pairs, 0.1, min_train=64)
    assert len(train) == len(val) == 1
    assert val.inputs[0].shape[axis] == band and band % 8 == 0
    assert train.inputs[0].shape[axis] + band == shape[axis]
    whole = np.concatenate([train.inputs[0], val.inputs[0]], axis=axis)
    np.testing.assert_array_equal(whole, pairs.inputs[0])  # disjoint, nothing lost
    np.testing.assert_array_equal(np.concatenate([train.targets[0], val.targets[0]], axis=axis),
                                  pairs.targets[0])
    what = "rows" if axis == 0 else "columns"
    assert val.names == [f"img[{what} {shape[axis] - band}-{shape[axis] - 1}]"]


def test_small_fraction_still_holds_out_the_minimum_band():
    _train, val = split_region(_one(200, 200), 0.01, min_train=64)
    assert val.inputs[0].shape[0] == MIN_VAL_BAND


def test_too_small_a_plane_keeps_everything_for_training():
    pairs = _one(80, 80)
    train, val = split_region(pairs, 0.3, min_train=64)
    assert len(train) == 1 and len(val) == 0 and train.inputs[0].shape == (80, 80, 1)
    assert len(split_region(_one(300, 300), 0.0)[1]) == 0


def test_refuses_several_planes_and_bad_fractions():
    two = PairSet(_one(64, 64).inputs * 2, _one(64, 64).targets * 2, ["a", "b"])
    with pytest.raises(ValueError, match="one plane"):
        split_region(two, 0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        split_region(_one(64, 64), 1.0)


def test_training_data_of_one_image_gets_a_validation_band():
    rng = np.random.default_rng(1)
    clean = rng.random((256, 192)).astype(np.float32)
    noisy = clean + np.float32(0.05) * rng.standard_normal(clean.shape).astype(np.float32)
    train, val = load_training_data(noisy, clean, None, None, "none", 0.1, 0, False,
                                    min_train=64)
    assert len(train) == 1 and len(val) == 1
    assert train.inputs[0].shape[0] + val.inputs[0].shape[0] == 256
    # self-supervised (no target): the same band, the input its own target
    train, val = load_training_data(noisy, None, None, None, "none", 0.1, 0, False,
                                    min_train=64)
    assert len(val) == 1 and np.array_equal(val.inputs[0], val.targets[0])

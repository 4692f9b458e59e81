"""Noise2Noise pairs from a series: neighbouring frames, validation split by frame blocks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from napari_mprnet.training.series import frame_block_split, series_pairs


def _frames_of(names):
    out = set()
    for name in names:
        a, b = map(int, re.search(r"t=(\d+)->(\d+)", name).groups())
        assert b == a + 1
        out.update((a, b))
    return out


def test_block_split_is_by_whole_blocks():
    train, val = frame_block_split(100, 0.2, block=10, seed=3)
    assert not (train & val).any() and (train | val).all()
    assert val.sum() == 20
    starts = np.flatnonzero(np.diff(np.r_[0, val.astype(int)]) == 1)
    assert all(s % 10 == 0 for s in starts)
    assert frame_block_split(100, 0.0)[1].sum() == 0


def test_pairs_are_neighbouring_frames_and_val_frames_never_train():
    rng = np.random.default_rng(0)
    scene = rng.random((48, 48))
    stack = np.stack([scene + 0.1 * rng.standard_normal((48, 48)) + t for t in range(40)])
    train, val = series_pairs(stack.astype(np.float32), val_fraction=0.25, block=5,
                              normalize="none", both_directions=False)
    assert len(val) > 0 and len(train) > 0
    train_frames, val_frames = _frames_of(train.names), _frames_of(val.names)
    assert not train_frames & val_frames
    # input is frame t, target frame t + 1 (the +t offset identifies the frame)
    for name, inp, tgt in zip(train.names, train.inputs, train.targets):
        t = int(re.search(r"t=(\d+)", name).group(1))
        assert abs(float(inp.mean()) - (scene.mean() + t)) < 0.05
        assert abs(float(tgt.mean()) - (scene.mean() + t + 1)) < 0.05
    # pairs straddling a block boundary are dropped, the rest kept
    assert len(train) + len(val) < 39


def test_both_directions_and_normalization_shared():
    stack = np.random.default_rng(1).poisson(20, size=(12, 32, 32)).astype(np.uint16)
    train, val = series_pairs(stack, val_fraction=0.2, block=3)
    forward = [n for n in train.names if "reversed" not in n]
    assert len(train) == 2 * len(forward)
    assert train.normalization is val.normalization
    i = train.names.index(forward[0] + "(reversed)")
    assert train.inputs[i] is train.targets[0] and train.targets[i] is train.inputs[0]


def test_stack_of_volumes_and_folder(tmp_path):
    vol = np.random.default_rng(2).random((6, 3, 32, 32)).astype(np.float32)
    train, val = series_pairs(vol, val_fraction=0.0, normalize="none",
                              both_directions=False)
    assert len(train) == 5 * 3 and len(val) == 0
    assert np.array_equal(train.inputs[4][..., 0], vol[1, 1])
    assert np.array_equal(train.targets[4][..., 0], vol[2, 1])
    tifffile.imwrite(tmp_path / "a.tif", vol[:, 0])
    tifffile.imwrite(tmp_path / "b.tif", vol[:, 1])
    train, _ = series_pairs(tmp_path, val_fraction=0.0, both_directions=False)
    assert len(train) == 10 and train.names[0].startswith("a.tif")


def test_not_a_series():
    with pytest.raises(ValueError, match="at least 2 frames"):
        series_pairs(np.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match="not a series"):
        series_pairs(np.zeros((16, 16)))

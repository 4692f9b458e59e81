"""Paired training data: loading, splitting, patch sampling and validation crops."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from napari_mprnet.engine.normalize import Normalization, choose_normalization
from napari_mprnet.training.data import PairSet, load_pairs, split_pairs
from napari_mprnet.training.sampling import PatchSampler, center_crops


def _rand(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _dihedral(patch: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        rotated = np.rot90(patch, k)
        out += [rotated, rotated[::-1]]
    return out


# --------------------------------------------------------------------------- loading


def test_array_pair_2d():
    x, y = _rand((20, 24)), _rand((20, 24), 1)
    pairs = load_pairs(x, y)
    assert len(pairs) == 1 and pairs.names == ["image"]
    assert pairs.inputs[0].shape == (20, 24, 1) and pairs.inputs[0].dtype == np.float32
    assert pairs.normalization == Normalization()  # floats in [0, 1] stay untouched
    np.testing.assert_array_equal(pairs.inputs[0][..., 0], x)
    np.testing.assert_array_equal(pairs.targets[0][..., 0], y)


def test_stacks_become_planes():
    x = _rand((4, 16, 18))
    pairs = load_pairs(x, x * 0.5)
    assert len(pairs) == 4
    assert pairs.names == [f"image[z={i}]" for i in range(4)]
    np.testing.assert_array_equal(pairs.inputs[2][..., 0], x[2])
    np.testing.assert_allclose(pairs.targets[3][..., 0], x[3] * 0.5)

    x4 = _rand((2, 3, 16, 16))
    pairs = load_pairs([x4], [x4])
    assert len(pairs) == 6 and pairs.names[5] == "image0[1,2]"
    np.testing.assert_array_equal(pairs.inputs[5][..., 0], x4[1, 2])


def test_rgb_and_alpha():
    rgb = (_rand((2, 16, 20, 3)) * 255).astype(np.uint8)
    pairs = load_pairs(rgb, rgb)
    assert len(pairs) == 2 and pairs.inputs[0].shape == (16, 20, 3)
    assert pairs.normalization.mode == "uint8"
    np.testing.assert_allclose(pairs.inputs[1], rgb[1] / 255.0, rtol=1e-6)

    rgba = _rand((16, 20, 4))
    pairs = load_pairs(rgba, rgba)
    assert len(pairs) == 1 and pairs.inputs[0].shape == (16, 20, 3)
    np.testing.assert_array_equal(pairs.inputs[0], rgba[..., :3])

    # rgb=False: the last axis is width, every leading index a plane
    pairs = load_pairs(rgba, rgba, rgb=False)
    assert len(pairs) == 16 and pairs.inputs[0].shape == (20, 4, 1)
    with pytest.raises(ValueError, match="RGB"):
        load_pairs(_rand((16, 20)), _rand((16, 20)), rgb=True)


def test_layer_like_objects():
    data = _rand((16, 16, 3))
    layer_in = SimpleNamespace(data=data, rgb=False, name="cells")
    layer_out = SimpleNamespace(data=data * 2, rgb=False, name="clean")
    pairs = load_pairs(layer_in, layer_out)
    assert len(pairs) == 16 and pairs.names[0] == "cells[z=0]"
    rgb_layer = SimpleNamespace(data=data, rgb=True)
    pairs = load_pairs([rgb_layer], [SimpleNamespace(data=data, rgb=True)])
    assert len(pairs) == 1 and pairs.inputs[0].shape == (16, 16, 3)


def test_folders_matched_by_name(tmp_path):
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    noisy.mkdir()
    clean.mkdir()
    images = {name: _rand((16, 24), i) for i, name in enumerate(["b.tif", "a.tiff", "c.tif"])}
    for name, img in images.items():
        tifffile.imwrite(noisy / name, img)
        tifffile.imwrite(clean / name, img * 0.5)
    (noisy / "notes.txt").write_text("ignored")
    pairs = load_pairs(str(noisy), clean)
    assert pairs.names == ["a.tiff", "b.tif", "c.tif"]
    for name, inp, tgt in zip(pairs.names, pairs.inputs, pairs.targets):
        np.testing.assert_array_equal(inp[..., 0], images[name])
        np.testing.assert_allclose(tgt[..., 0], images[name] * 0.5)

    tifffile.imwrite(noisy / "lonely.tif", images["b.tif"])
    tifffile.imwrite(clean / "orphan.tif", images["b.tif"])
    with pytest.raises(ValueError, match="lonely.tif") as err:
        load_pairs(noisy, clean)
    assert "orphan.tif" in str(err.value)


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    tifffile.imwrite(full / "x.tif", _rand((16, 16)))
    with pytest.raises(ValueError, match="no TIFF files"):
        load_pairs(empty, full)
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path / "missing", full)
    with pytest.raises(TypeError):
        load_pairs(full, _rand((16, 16)))


def test_mismatched_shapes_name_the_pair():
    with pytest.raises(ValueError, match=r"image1.*\(16, 16\).*\(16, 18\)"):
        load_pairs([_rand((8, 8)), _rand((16, 16))], [_rand((8, 8)), _rand((16, 18))])
    with pytest.raises(ValueError, match="2 input images but 1"):
        load_pairs([_rand((8, 8))] * 2, [_rand((8, 8))])


def test_bad_values_and_types():
    bad = _rand((16, 16))
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_pairs(bad, _rand((16, 16)))
    inf = _rand((16, 16))
    inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="target.*NaN or infinite"):
        load_pairs(_rand((16, 16)), inf)
    text = np.array([["a", "b"], ["c", "d"]])
    with pytest.raises(ValueError, match="non-numeric"):
        load_pairs(text, text)
    mask = np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match="non-numeric"):
        load_pairs(mask, mask)
    with pytest.raises(TypeError):
        load_pairs(42, 42)
    with pytest.raises(ValueError, match="2-D"):
        load_pairs(np.zeros(5), np.zeros(5))


def test_normalisation_fitted_on_inputs_and_shared():
    rng = np.random.default_rng(0)
    a = rng.integers(100, 1000, (32, 32)).astype(np.uint16)
    b = rng.integers(2000, 4000, (2, 16, 16)).astype(np.uint16)
    ta, tb = (a * 5).astype(np.uint16), (b // 2).astype(np.uint16)
    pairs = load_pairs([a, b], [ta, tb])
    norm = pairs.normalization
    assert norm.mode == "percentile"
    everything = np.concatenate([a.ravel(), b.ravel()])
    assert norm == choose_normalization(everything, "auto")
    low, high = np.percentile(everything.astype(np.float64), [0.5, 99.8])
    assert (norm.low, norm.high) == pytest.approx((low, high))
    want = (ta.astype(np.float64) - low) / (high - low)
    np.testing.assert_allclose(pairs.targets[0][..., 0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        pairs.targets[2][..., 0], (tb[1] - low) / (high - low), rtol=1e-5, atol=1e-6
    )
    assert pairs.targets[0].max() > 1.1  # targets are not re-fitted into [0, 1]

    fixed = Normalization("range", 0.0, 65535.0)
    pairs = load_pairs(a, ta, normalize=fixed)
    assert pairs.normalization is fixed
    np.testing.assert_allclose(pairs.targets[0][..., 0], ta / 65535.0, rtol=1e-6)
    pairs = load_pairs(a, ta, normalize="range")
    assert pairs.normalization.high == 65535.0


# --------------------------------------------------------------------------- splitting


def _planes(n, size=16):
    x = _rand((n, size, size))
    return load_pairs(x, x)


def test_split_by_plane():
    pairs = _planes(10)
    train, val = split_pairs(pairs, 0.3, seed=4)
    assert len(train) == 7 and len(val) == 3
    assert not set(train.names) & set(val.names)
    assert sorted(train.names + val.names) == sorted(pairs.names)
    assert train.normalization == val.normalization == pairs.normalization
    for name, inp in zip(val.names, val.inputs):  # whole planes, not patches
        assert inp is pairs.inputs[pairs.names.index(name)]
    again = split_pairs(pairs, 0.3, seed=4)
    assert again[1].names == val.names
    others = {tuple(split_pairs(pairs, 0.3, seed=s)[1].names) for s in range(6)}
    assert len(others) > 1


def test_split_edge_cases():
    assert [len(s) for s in split_pairs(_planes(2), 0.1)] == [1, 1]
    assert [len(s) for s in split_pairs(_planes(1), 0.5)] == [1, 0]
    assert [len(s) for s in split_pairs(_planes(3), 0.0)] == [3, 0]
    assert [len(s) for s in split_pairs(_planes(3), 0.99)] == [1, 2]
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            split_pairs(_planes(3), bad)


# --------------------------------------------------------------------------- sampling


def test_sampler_shapes_and_errors():
    pairs = load_pairs([_rand((40, 30)), _rand((24, 64))], [_rand((40, 30)), _rand((24, 64))])
    x, y = PatchSampler(pairs, 24, 5).sample()
    assert x.shape == y.shape == (5, 3, 24, 24)
    assert x.dtype == y.dtype == torch.float32
    x, _ = PatchSampler(pairs, 16, 2, channels=1).sample()
    assert x.shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"image0.*40x30.*32"):
        PatchSampler(pairs, 32, 2)
    for bad in (8, 12, 20):
        with pytest.raises(ValueError, match="patch_size"):
            PatchSampler(pairs, bad, 2)
    rgb = load_pairs(_rand((32, 32, 3)), _rand((32, 32, 3)))
    with pytest.raises(ValueError, match="RGB"):
        PatchSampler(rgb, 16, 2, channels=1)


def test_grey_is_replicated_to_identical_channels():
    pairs = load_pairs(_rand((32, 32)), _rand((32, 32), 1))
    x, y = PatchSampler(pairs, 16, 4).sample()
    for t in (x, y):
        assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 0], t[:, 2])


@pytest.mark.parametrize("augment", [True, False])
def test_same_crop_and_augmentation_in_input_and_target(augment):
    h, w = 40, 48
    ramp = (np.arange(h * w, dtype=np.float32) / (h * w)).reshape(h, w)
    pairs = load_pairs(ramp, ramp * 2)  # unique values: a patch reveals where it came from
    sampler = PatchSampler(pairs, 16, 8, augment=augment, seed=3)
    transformed = 0
    for _ in range(4):
        x, y = sampler.sample()
        torch.testing.assert_close(y, x * 2, rtol=0, atol=0)
        for patch in x[:, 0].numpy():
            top, left = divmod(int(np.argmin(np.abs(ramp - patch.min()))), w)
            crop = ramp[top : top + 16, left : left + 16]
            matches = [np.array_equal(patch, c) for c in _dihedral(crop)]
            assert any(matches)
            transformed += not matches[0]
    assert (transformed > 0) == augment


def test_sampler_reproducible_and_resumable():
    pairs = load_pairs([_rand((32, 40)), _rand((48, 32), 1)], [_rand((32, 40)), _rand((48, 32))])
    a, b = PatchSampler(pairs, 16, 3, seed=7), PatchSampler(pairs, 16, 3, seed=7)
    for _ in range(2):
        xa, ya = a.sample()
        xb, yb = b.sample()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(PatchSampler(pairs, 16, 3, seed=8).sample()[0], xa)

    state = a.state_dict()
    uninterrupted = [a.sample() for _ in range(3)]
    resumed = PatchSampler(pairs, 16, 3, seed=123)
    resumed.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(uninterrupted, (resumed.sample() for _ in range(3))):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    with pytest.raises(ValueError):
        resumed.load_state_dict({"bit_generator": "MT19937"})

    # an explicit generator leaves the sampler's own state alone
    before = a.state_dict()
    a.sample(np.random.default_rng(0))
    assert a.state_dict() == before


def test_sampler_weights_images_by_area():
    small, big = np.zeros((16, 16), np.float32), np.ones((16, 144), np.float32)
    pairs = load_pairs([small, big], [small, big])
    x, _ = PatchSampler(pairs, 16, 400, augment=False).sample()
    from_big = (x[:, 0, 0, 0] == 1).float().mean().item()
    assert 0.8 < from_big < 0.97  # expected 0.9


# --------------------------------------------------------------------------- validation


def test_center_crops():
    x = _rand((37, 50))
    pairs = load_pairs([x, _rand((3, 16, 16))], [x * 2, _rand((3, 16, 16))])
    crops = center_crops(pairs)
    assert len(crops) == 4
    inp, tgt = crops[0]
    assert inp.shape == tgt.shape == (1, 3, 32, 48) and inp.dtype == torch.float32
    np.testing.assert_array_equal(inp[0, 1].numpy(), x[2:34, 1:49])
    np.testing.assert_array_equal(tgt[0, 2].numpy(), x[2:34, 1:49] * 2)

    inp, _ = center_crops(pairs, size=20, channels=1)[0]
    assert inp.shape == (1, 1, 16, 16)
    np.testing.assert_array_equal(inp[0, 0].numpy(), x[10:26, 17:33])
    assert center_crops(pairs, size=64)[0][0].shape == (1, 3, 32, 48)

    tiny = PairSet([np.zeros((5, 9, 1), np.float32)], [np.zeros((5, 9, 1), np.float32)], ["t"])
    with pytest.raises(ValueError, match="'t'"):
        center_crops(tiny)
    rgb = load_pairs(_rand((16, 16, 3)), _rand((16, 16, 3)))
    with pytest.raises(ValueError, match="RGB"):
        center_crops(rgb, channels=1)

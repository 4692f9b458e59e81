"""Procedural and natural clean images for training: determinism, ranges, splits."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from napari_mprnet.training import synthetic
from napari_mprnet.training.synthetic import (
    NATURAL_TRAIN,
    NATURAL_VAL,
    clean_image_pool,
    dead_leaves,
    fluorescence,
    image_rng,
    natural_images,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_unit(img: np.ndarray) -> None:
    assert img.dtype == np.float32
    assert np.isfinite(img).all()
    assert img.min() >= 0.0 and img.max() <= 1.0


# --------------------------------------------------------------------------- dead leaves


@pytest.mark.parametrize("color", [False, True])
def test_dead_leaves_shape_range_determinism(color):
    a = dead_leaves(48, _rng(1), color=color)
    b = dead_leaves(48, _rng(1), color=color)
    c = dead_leaves(48, _rng(2), color=color)
    assert a.shape == ((48, 48, 3) if color else (48, 48))
    _check_unit(a)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std() > 0.05  # many leaves, not a flat image


def test_dead_leaves_rectangular():
    img = dead_leaves((32, 56), _rng())
    assert img.shape == (32, 56)
    _check_unit(img)


def test_dead_leaves_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        dead_leaves(4, _rng())


# --------------------------------------------------------------------------- fluorescence


@pytest.mark.parametrize("kind", ["mixed", "blobs", "filaments", "membranes"])
def test_fluorescence_kinds(kind):
    a = fluorescence(64, _rng(3), kind)
    b = fluorescence(64, _rng(3), kind)
    assert a.shape == (64, 64)
    _check_unit(a)
    np.testing.assert_array_equal(a, b)
    assert a.max() >= 0.45  # a visible structure
    assert np.median(a) < 0.5 * a.max()  # on a dim background


def test_fluorescence_is_smooth():
    """PSF blurred: neighbouring pixels are strongly correlated."""
    img = fluorescence(64, _rng(4), "filaments", psf_sigma=1.5)
    centred = img - img.mean()
    corr = (centred[:, 1:] * centred[:, :-1]).mean() / centred.var()
    assert corr > 0.8


def test_fluorescence_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        fluorescence(32, _rng(), "nuclei")


# --------------------------------------------------------------------------- natural images


def test_natural_split_names_disjoint():
    assert set(NATURAL_TRAIN).isdisjoint(NATURAL_VAL)
    assert NATURAL_VAL == ("camera", "astronaut", "coffee")
    val = natural_images("val")
    assert tuple(val) == NATURAL_VAL
    for img in val.values():
        _check_unit(img)
        assert img.ndim == 2 or img.shape[-1] == 3
        assert not img.flags.writeable
    assert val["camera"].ndim == 2 and val["astronaut"].ndim == 3


def test_natural_train_images_load_offline():
    train = natural_images("train")
    assert tuple(train) == NATURAL_TRAIN
    assert {img.ndim for img in train.values()} == {2, 3}  # grey and colour


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        natural_images("test")
    with pytest.raises(ValueError, match="split"):
        clean_image_pool("test", 32, 1)


# --------------------------------------------------------------------------- pool


def test_pool_deterministic_and_mixed():
    images, info = clean_image_pool("train", 32, 24, seed=5, return_info=True)
    again = clean_image_pool("train", 32, 24, seed=5)
    assert len(images) == 24
    for a, b in zip(images, again):
        np.testing.assert_array_equal(a, b)
    for img in images:
        _check_unit(img)
        assert img.shape[:2] == (32, 32) and img.ndim in (2, 3)
    assert {i["family"] for i in info} == {"natural", "dead_leaves", "fluorescence"}
    assert {img.ndim for img in images} == {2, 3}
    assert all(i["source"] in NATURAL_TRAIN for i in info if i["family"] == "natural")


def test_pool_splits_disjoint():
    train = clean_image_pool("train", 32, 12, seed=0)
    val, v_info = clean_image_pool("val", 32, 12, seed=0, return_info=True)
    assert all(i["source"] in NATURAL_VAL for i in v_info if i["family"] == "natural")
    for a in train:
        for b in val:
            assert a.shape != b.shape or not np.array_equal(a, b)
    # the random streams themselves differ between splits for the same seed and index
    assert image_rng("train", 0, 3).random() != image_rng("val", 0, 3).random()


def test_pool_family_weights():
    images, info = clean_image_pool("val", 32, 4, seed=1, families={"fluorescence": 1.0},
                                    return_info=True)
    assert all(i["family"] == "fluorescence" for i in info)
    assert all(img.ndim == 2 for img in images)
    with pytest.raises(ValueError, match="families"):
        clean_image_pool("val", 32, 1, families={"clouds": 1.0})


def test_pool_enlarges_small_sources():
    """Crops larger than a source image still work (the image is enlarged)."""
    images = clean_image_pool("val", 600, 1, seed=0, families={"natural": 1.0})
    assert images[0].shape[:2] == (600, 600)
    assert synthetic.FAMILIES == {"natural": 0.4, "dead_leaves": 0.3, "fluorescence": 0.3}

"""Isolated outliers (hot and dead pixels) of a noisy plane."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mprnet.engine.outliers import isolated_outliers
from spotty_fields import spotty_field


def test_hot_pixels_are_found_and_nothing_else():
    _, noisy, rng = spotty_field()
    hot = rng.random(noisy.shape) < 0.01
    image = noisy.copy()
    image[hot] += rng.uniform(0.5, 2.0, hot.sum())
    flags, excess = isolated_outliers(image)
    assert (flags & hot).sum() >= 0.7 * hot.sum()  # neighbouring hot pairs may be missed
    assert (flags & ~hot).sum() == 0
    assert (excess[flags] > 0.4).all() and (excess[~flags] == 0).all()
    # the same in camera counts with an offset: the scale of the data does not matter
    counts = np.rint(100 + 500 * image).astype(np.uint16)
    assert np.array_equal(isolated_outliers(counts)[0], flags)


@pytest.mark.parametrize("name", ["poisson", "undersampled_spots", "single_photons",
                                  "gaussian"])
def test_noise_real_spots_and_single_photons_are_not_outliers(name):
    if name == "poisson":
        _, image, _ = spotty_field()
    elif name == "undersampled_spots":  # PSF sigma 0.7 px at a high photon count
        _, image, _ = spotty_field(seed=1, photons=3000.0, spot_sigma=0.7)
    elif name == "single_photons":  # nearly dark photon counting: mostly 0, a photon here
        image = np.random.default_rng(2).poisson(0.05, (64, 64)) / 3.0  # and there
    else:
        image = 0.5 + 0.1 * np.random.default_rng(3).standard_normal((64, 64))
    assert not isolated_outliers(image)[0].any()


def test_dead_pixels_are_found_with_a_negative_excess():
    _, noisy, _ = spotty_field(photons=200.0)
    image = noisy + 0.2
    image[10, 10] = image[40, 50] = 0.0
    flags, excess = isolated_outliers(image)
    assert flags.sum() == 2 and flags[10, 10] and flags[40, 50]
    assert excess[10, 10] < 0 and excess[40, 50] < 0


def test_flat_plane_and_bad_shapes():
    assert not isolated_outliers(np.full((16, 16), 7.0))[0].any()
    with pytest.raises(ValueError, match="2-D"):
        isolated_outliers(np.zeros((2, 16, 16)))

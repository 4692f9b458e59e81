"""Noise estimation without a clean image: known Gaussian and Poisson-Gaussian levels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_mprnet.engine.noise import estimate_noise, patch_noise_variance


def _scene(size=256, seed=0):
    """A clean image with smooth shading, edges and some fine texture, in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    shading = 0.5 + 0.3 * np.sin(3 * xx + 2 * yy)
    blocks = (ndimage.zoom(rng.random((8, 8)), size / 8, order=0) - 0.5) * 0.2
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2) * 0.05
    return np.clip(shading + blocks + texture, 0.1, 0.9)


def test_pure_noise_patches_give_their_variance():
    rng = np.random.default_rng(1)
    patches = rng.normal(0, 0.1, (5000, 49))
    assert patch_noise_variance(patches) == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("sigma", [2 / 255, 5 / 255, 25 / 255])
@pytest.mark.parametrize("model", ["gaussian", "poisson-gaussian"])
def test_known_gaussian_sigma_is_recovered(sigma, model):
    clean = _scene(seed=2)
    noisy = clean + np.random.default_rng(3).normal(0, sigma, clean.shape)
    a, b = estimate_noise(noisy, model)
    level = a * clean.mean() + b
    assert np.sqrt(level) == pytest.approx(sigma, rel=0.1)
    if model == "gaussian":
        assert a == 0.0


def _mostly_texture(size=256, seed=6):
    """Fine high-contrast texture everywhere but one smooth ninth of the image."""
    rng = np.random.default_rng(seed)
    image = 0.5 + ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.8) * 0.4
    image[: size // 3, : size // 3] = 0.3 + 0.2 * np.linspace(0, 1, size // 3)[None, :]
    return np.clip(image, 0.05, 0.95)


@pytest.mark.parametrize("sigma", [2 / 255, 5 / 255, 15 / 255])
def test_detailed_image_with_little_flat_area_is_not_taken_for_noise(sigma):
    # a fixed share of the flattest patches (a fifth) would reach into the texture and read
    # the noise 1.7-3.6 times too high here; the weak-texture choice keeps to the smooth part
    clean = _mostly_texture()
    noisy = clean + np.random.default_rng(7).normal(0, sigma, clean.shape)
    for model in ("gaussian", "poisson-gaussian"):
        a, b = estimate_noise(noisy, model)
        assert np.sqrt(a * clean.mean() + b) == pytest.approx(sigma, rel=0.08)


def test_known_poisson_gaussian_parameters_are_recovered():
    clean = _scene(seed=4)
    photons, read = 100.0, 2.0  # variance clean / photons + (read / photons)^2
    rng = np.random.default_rng(5)
    noisy = rng.poisson(clean * photons) / photons + rng.normal(0, read / photons, clean.shape)
    a, b = estimate_noise(noisy)
    assert a == pytest.approx(1 / photons, rel=0.15)
    for level in (0.2, 0.5, 0.8):  # the noise sd at every intensity within 10%
        true = level / photons + (read / photons) ** 2
        assert np.sqrt(a * level + b) == pytest.approx(np.sqrt(true), rel=0.1)


def test_clean_image_has_no_noise_and_bad_input_is_refused():
    a, b = estimate_noise(np.tile(np.linspace(0, 1, 64), (64, 1)))
    assert a < 1e-12 and b < 1e-12
    with pytest.raises(ValueError, match="2-D image of at least 32"):
        estimate_noise(np.zeros((20, 64)))
    with pytest.raises(ValueError, match="2-D"):
        estimate_noise(np.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match="model"):
        estimate_noise(np.zeros((64, 64)), "laplace")



def test_the_brightest_bin_point_sits_at_the_level_of_the_patches_it_measures():
    # EMCCD on a dark sparse field: the brightest bin spans a wide range of intensities and
    # its flat patches are its dimmest ones; its point belongs at their level (where the
    # camera's law gives their variance), not at the mean of the whole bin (far brighter,
    # 0.70 of the law there)
    from napari_mprnet.engine.noise import weak_texture
    from napari_mprnet.training import cameras, microscopy

    rng = np.random.default_rng(8)
    clean = microscopy.clean_field("dark_sparse", 256, rng)
    acq = cameras.acquire(clean, "emccd", 10.0, 12, rng)
    a, b = acq.noise_law()
    points = weak_texture(acq.noisy.astype(np.float64)).points
    assert len(points) >= 4
    level, variance = max(points)
    assert 0.8 < variance / (a * level + b) < 1.25


def test_bins_measured_at_one_level_give_a_finite_estimate():
    # a photon-counting background stored as zero with rare single-count steps either way:
    # the two outer bins both measure only the all-zero patches (variance 0 at level 0);
    # no line goes through points at one level, and the estimate must stay finite
    rng = np.random.default_rng(9)
    plane = np.zeros((160, 160))
    u = rng.random(plane.shape)
    plane[u < 0.001], plane[u > 0.999] = -1.0, 1.0
    a, b = estimate_noise(plane)
    assert (a, b) == (0.0, 0.0)

"""The noise of sparse fluorescence and camera data (issue 30): weak-texture line with a
camera offset, high-pass profile over the network's level sets, impulses, and restore()'s
defaults on generated photon-counting and EMCCD fields with the bundled denoiser."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_mprnet import restore
from napari_mprnet.engine import strength as st
from napari_mprnet.engine.impulses import impulses
from napari_mprnet.engine.noise import estimate_noise, weak_texture
from napari_mprnet.engine.noise_profile import lower_envelope, noise_model
from napari_mprnet.training.microscopy import acquire, bench_cases, clean_field


def test_a_camera_offset_does_not_flatten_the_poisson_gaussian_line():
    # variance = gain * (I - offset) + read^2: negative at I = 0; a line forced through b >= 0
    # read the slope of such images 10-70 times too low
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:192, :192] / 192
    clean = 0.2 + 0.7 * (0.5 + 0.5 * np.sin(4 * xx) * np.cos(3 * yy))
    photons, gain, offset, read = 40.0, 4.0, 500.0, 6.0
    noisy = offset + gain * (rng.poisson(clean * photons) + rng.normal(0, read / gain,
                                                                      clean.shape))
    a, b = estimate_noise(noisy)
    assert a == pytest.approx(gain, rel=0.15)
    for level in (0.3, 0.6, 0.9):  # the sd at every intensity within 10 %
        intensity = offset + gain * photons * level
        true = gain * (intensity - offset) + read**2
        assert np.sqrt(a * intensity + b) == pytest.approx(np.sqrt(true), rel=0.1)


def test_lower_envelope_is_the_line_under_structure_bumps():
    levels = np.linspace(0.0, 1.0, 10)
    line = 0.02 * levels + 0.001
    bumps = line + np.array([0, 0.01, 0.03, 0, 0.02, 0.05, 0.01, 0, 0.04, 0])
    a, b = lower_envelope(levels, bumps)
    np.testing.assert_allclose((a, b), (0.02, 0.001), atol=1e-12)
    assert np.all(a * levels + b <= bumps + 1e-15)
    assert lower_envelope(levels, 0.5 - 0.1 * levels) == (0.0, pytest.approx(0.4))


def _dark_sparse(photons=20.0, seed=5):
    rng = np.random.default_rng(seed)
    clean = clean_field("dark_sparse", 128, rng)
    return acquire(clean, "photon_counting", photons, 16, rng)


def test_sparse_photon_counting_noise_is_measured_at_the_bright_levels():
    acq = _dark_sparse()
    image = (acq.noisy - acq.offset) / (acq.gain * acq.photons)  # peak about 1
    true = lambda level: level / acq.photons
    weak = weak_texture(image)
    a, b = weak.line  # measured on the background only, extrapolated: far too low
    assert a * 0.6 + b < true(0.6) / 3
    # the smoothed clean image stands in for the network output (its level sets)
    output = ndimage.gaussian_filter(acq.clean - acq.offset, 0.5) / (acq.gain * acq.photons)
    model = noise_model(image, output, weak)
    assert model.envelope is not None
    for level in (0.3, 0.6, 0.9):
        assert model.variance(level) == pytest.approx(true(level), rel=0.35)



@pytest.mark.parametrize("reads_low", [1.2, 1.4])
def test_a_rising_envelope_is_trusted_over_weak_bins_that_read_somewhat_low(reads_low):
    # between a dark background and bright structures the few flat patches are the quietest:
    # weak-texture bins reading up to 1.45 times low must not make a shot-noise envelope
    # (slope > 0) untrusted, or the bright levels keep an extrapolated, far too low variance
    from napari_mprnet.engine.noise import WeakTexture

    acq = _dark_sparse(photons=100.0, seed=7)
    image = (acq.noisy - acq.offset) / (acq.gain * acq.photons)
    output = ndimage.gaussian_filter(acq.clean - acq.offset, 0.5) / (acq.gain * acq.photons)
    read = (acq.read_sd**2 + 1 / 12) / (acq.gain * acq.photons) ** 2
    points = tuple((level, (level / acq.photons + read) / reads_low) for level in (0.1, 0.3))
    weak = WeakTexture((0.0, points[0][1]), points, points[0][1])
    model = noise_model(image, output, weak)
    assert model.envelope is not None and model.envelope[0] > 0



def test_the_flattest_patches_of_a_textured_field_may_read_the_noise_low():
    # no intensity bin had enough flat patches: the one measurement left is the flattest
    # patches of all (a dense cytoplasm), about 0.6 times the noise; a rising envelope is
    # trusted over it to 2x, while bins measured at two levels keep the 1.5x rule
    from napari_mprnet.engine.noise import WeakTexture

    acq = _dark_sparse(photons=100.0, seed=7)
    image = (acq.noisy - acq.offset) / (acq.gain * acq.photons)
    output = ndimage.gaussian_filter(acq.clean - acq.offset, 0.5) / (acq.gain * acq.photons)
    read = (acq.read_sd**2 + 1 / 12) / (acq.gain * acq.photons) ** 2
    low = [(level, (level / acq.photons + read) / 1.8) for level in (0.1, 0.3)]
    pooled = WeakTexture((0.0, low[1][1]), (low[1],), low[1][1])
    binned = WeakTexture((0.0, low[1][1]), tuple(low), low[1][1])
    assert noise_model(image, output, pooled).envelope is not None
    assert noise_model(image, output, binned).envelope is None

def test_a_flat_envelope_needs_close_agreement():
    # a flat envelope only restates a Gaussian level; 1.45 times the direct measurement is
    # texture leaking into the high-pass filter (textured photographs at low noise), even
    # though a rising envelope is trusted that far
    from napari_mprnet.engine.noise import WeakTexture

    rng = np.random.default_rng(4)
    sigma = 0.02
    noisy = 0.5 + rng.normal(0, sigma, (160, 160))
    output = np.full_like(noisy, 0.5)  # one level: the envelope is flat
    for measured, trusted in ((sigma**2 / 1.1, True), (sigma**2 / 1.45, False)):
        weak = WeakTexture((0.0, measured), ((0.5, measured),), measured)
        model = noise_model(noisy, output, weak)
        assert (model.envelope is not None) == trusted
        if trusted:
            assert model.envelope[0] == 0.0

def test_texture_everywhere_keeps_the_weak_texture_estimate():
    # fine texture leaks into any high-pass filter: a photograph with little flat area and
    # Gaussian noise must keep the direct measurement (the envelope would read several times
    # the noise and give the network's oversmoothing free rein)
    rng = np.random.default_rng(6)
    clean = 0.5 + ndimage.gaussian_filter(rng.standard_normal((192, 192)), 0.8) * 0.4
    clean[:64, :64] = 0.3 + 0.2 * np.linspace(0, 1, 64)[None, :]
    sigma = 5 / 255
    noisy = np.clip(clean, 0.05, 0.95) + rng.normal(0, sigma, clean.shape)
    weak = weak_texture(noisy)
    model = noise_model(noisy, ndimage.gaussian_filter(noisy, 1.0), weak)
    assert model.envelope is None
    assert np.sqrt(model.variance(0.5)) == pytest.approx(sigma, rel=0.1)


def test_impulses_are_hot_pixels_not_noise_under_a_level_given_too_low():
    rng = np.random.default_rng(7)
    x = 0.3 + rng.normal(0, 0.02, (96, 96, 1))
    hot = rng.random(x.shape) < 0.01
    x[hot] += rng.uniform(0.3, 1.0, int(hot.sum()))
    output = np.full_like(x, 0.3)  # a denoiser that removes noise and hot pixels
    found = impulses(x, output, np.full(x.shape, 0.02**2))
    assert found[hot].mean() > 0.95 and found[~hot].mean() < 0.001
    # a noise level given 4x too low does not turn ordinary noise into impulses
    found = impulses(x, output, np.full(x.shape, 0.005**2))
    assert found[~hot].mean() < 0.001


def _case(family, camera, photons):
    case = next(c for c in bench_cases(quick=True)
                if (c.family, c.camera, c.photons) == (family, camera, photons))
    return case.generate()


@pytest.mark.parametrize(("family", "camera", "photons"), [
    ("filaments", "emccd", 30.0),  # 2026-12-06 main: defaults 11.3 dB below strength 1
    ("puncta", "photon_counting", 30.0),  # 0.8 dB below
])
def test_defaults_keep_the_denoising_on_photon_counting_and_emccd(family, camera, photons):
    acq = _case(family, camera, photons)
    kwargs = {"device": "cpu", "output_dtype": np.float32}
    network = acq.psnr(restore(acq.noisy, strength=1.0, **kwargs))
    defaults = restore(acq.noisy, **kwargs)
    assert acq.psnr(acq.noisy) < network - 5  # the network's gain is large here
    assert acq.psnr(defaults) > network - 0.2
    # the dask path shares the engine: the same result
    da = pytest.importorskip("dask.array")
    lazy = restore(da.from_array(acq.noisy, chunks=(48, 96)), **kwargs).compute()
    np.testing.assert_allclose(lazy, defaults, atol=1e-4 * float(np.ptp(defaults)))
    # and so does a given noise level (the camera's true law): never below the input
    given = restore(acq.noisy, noise=acq.noise_law(), **kwargs)
    assert acq.psnr(given) > network - 0.5 and acq.psnr(given) > acq.psnr(acq.noisy)


def test_estimated_noise_margin_is_kept_on_poisson_gaussian_lines_only():
    acq = _dark_sparse(photons=300.0, seed=8)
    crop = acq.noisy.astype(np.float64)[..., None]
    line = np.array(weak_texture(crop[..., 0]).line)
    used = st.estimated_noise(crop)[0]
    np.testing.assert_allclose(used, line * (st.NOISE_MARGIN if line[0] > 0 else 1.0))


def test_a_rising_envelope_gets_the_poisson_gaussian_margin_and_a_flat_one_does_not():
    # the lower envelope touches the quietest bins: as a Poisson-Gaussian line it is raised
    # like the weak-texture one; a flat envelope (a Gaussian level) is used as it is
    from napari_mprnet.engine.noise_profile import ENVELOPE_MARGIN, NoiseModel

    rising = NoiseModel((0.0, 1e-4), 1.0, (0.02, 0.001))
    assert ENVELOPE_MARGIN > 1.0
    assert rising.variance(0.5) == pytest.approx(ENVELOPE_MARGIN * 0.011)
    assert rising.variance(0.0) == pytest.approx(ENVELOPE_MARGIN * 0.001)
    flat = NoiseModel((0.0, 1e-4), 1.0, (0.0, 0.003))
    assert flat.variance(0.5) == pytest.approx(0.003)
    np.testing.assert_allclose(rising.lines(), [[0.0, 1e-4], [0.022, 0.0011]])
    assert not NoiseModel((0.01, 0.0), 1.1).lines()[1].any()

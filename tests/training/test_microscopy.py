"""Generated microscopy: determinism, families, camera laws, stored format, seed separation."""

import itertools

import numpy as np
import pytest

from napari_mprnet.training import microscopy as m


def _levels_field(side=128):
    """Four flat quadrants at relative 0.05, 0.2, 0.5 and 1: many pixels per level."""
    field = np.empty((side, side), np.float32)
    h = side // 2
    field[:h, :h], field[:h, h:], field[h:, :h], field[h:, h:] = 0.05, 0.2, 0.5, 1.0
    return field


def test_bench_cases_are_deterministic_and_distinct():
    cases = m.bench_cases(quick=True)
    first, again = cases[0].generate(), cases[0].generate()
    np.testing.assert_array_equal(first.noisy, again.noisy)
    np.testing.assert_array_equal(first.clean, again.clean)
    other = cases[1].generate()
    assert not np.array_equal(first.clean[:32, :32], other.clean[:32, :32])
    a = m.clean_field("nuclei", 64, np.random.default_rng(5))
    b = m.clean_field("nuclei", 64, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("family", m.FAMILIES)
def test_clean_fields_are_float32_with_peak_one(family):
    field = m.clean_field(family, (72, 96), np.random.default_rng(1))
    assert field.shape == (72, 96) and field.dtype == np.float32
    assert field.min() >= 0 and field.max() == pytest.approx(1.0)
    assert np.std(field) > 0.02  # not blank


def test_dark_family_is_mostly_dark_and_others_are_not():
    dark = [(m.clean_field("dark_sparse", 128, np.random.default_rng(s)) < m.DARK_LEVEL).mean()
            for s in range(30)]
    assert 0.80 <= min(dark) and max(dark) <= 0.95
    dense = [(m.clean_field("cytoplasm", 128, np.random.default_rng(s)) < m.DARK_LEVEL).mean()
             for s in range(5)]
    assert max(dense) < 0.2


@pytest.mark.parametrize("camera", m.CAMERAS)
def test_noisy_follows_the_camera_law(camera):
    acq = m.acquire(_levels_field(), camera, 200.0, 16, np.random.default_rng(3))
    keep = ~acq.hot
    residual = acq.noisy.astype(np.float64) - acq.clean
    # a wrong law (EMCCD without excess, sCMOS without its maps) is off by far more
    z = residual[keep] / np.sqrt(acq.variance()[keep])
    assert abs(z.mean()) < 0.03
    assert 0.95 < z.var() < 1.05
    if camera != "scmos":
        a, b = acq.noise_law()
        np.testing.assert_allclose(a * acq.clean + b, acq.variance(), rtol=1e-9)
    assert camera != "scmos" or acq.hot.sum() >= 2


def test_read_noise_variance_matches_formula_per_level():
    acq = m.acquire(_levels_field(), "read_noise", 300.0, 16, np.random.default_rng(4))
    assert 1.0 <= acq.read_sd / acq.gain <= 6.0
    residual = acq.noisy.astype(np.float64) - acq.clean
    for level in np.unique(acq.clean):
        sel = acq.clean == level
        expected = acq.gain * (level - acq.offset) + acq.read_sd**2 + 1 / 12
        assert residual[sel].mean() == pytest.approx(0.0, abs=0.05 * np.sqrt(expected))
        assert residual[sel].var() == pytest.approx(expected, rel=0.08)


def test_emccd_excess_factor_is_two():
    acq = m.acquire(_levels_field(), "emccd", 100.0, 16, np.random.default_rng(6))
    bright = acq.clean == acq.clean.max()
    residual = acq.noisy.astype(np.float64)[bright] - acq.clean[bright]
    shot = acq.gain * (acq.clean[bright][0] - acq.offset)
    factor = (residual.var() - acq.read_sd**2) / shot
    assert 1.85 < factor < 2.15 and acq.excess == 2.0


def test_photon_counting_has_subelectron_read_noise():
    for seed in range(10):
        acq = m.acquire(_levels_field(32), "photon_counting", 10.0, 12, np.random.default_rng(seed))
        assert acq.read_sd / acq.gain <= 0.5


@pytest.mark.parametrize("bits,dtype", [(8, np.uint8), (12, np.uint16), (16, np.uint16)])
def test_stored_format_offset_and_saturation(bits, dtype):
    field = m.clean_field("bright_spots", 96, np.random.default_rng(2))
    acq = m.acquire(field, "read_noise", 3000.0, bits, np.random.default_rng(2))
    assert acq.noisy.dtype == dtype and acq.bits == bits
    assert acq.noisy.max() < 2**bits - 1  # the default gain fits the peak
    assert acq.offset > 0 and np.median(acq.noisy) >= acq.offset - 1
    full = m.acquire(field, "read_noise", 3000.0, bits, np.random.default_rng(2),
                     full_scale=0.8)
    assert (full.noisy == 2**bits - 1).any()  # brighter than full scale: saturated
    assert full.clean.max() == 2**bits - 1  # the reference is clipped as the camera is


def test_bright_spot_cases_saturate():
    case = next(c for c in m.bench_cases() if c.family == "bright_spots")
    acq = case.generate()
    assert (acq.noisy == acq.white_level).sum() >= 1


def test_invalid_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="family"):
        m.clean_field("cells", 64, np.random.default_rng(0))
    field = np.ones((8, 8), np.float32)
    with pytest.raises(ValueError, match="camera"):
        m.acquire(field, "ccd", 10, 16, np.random.default_rng(0))
    with pytest.raises(ValueError, match="bits"):
        m.acquire(field, "emccd", 10, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="photons"):
        m.acquire(field, "emccd", 0, 16, np.random.default_rng(0))


def test_covering_design_meets_every_pair():
    cases = m.bench_cases()
    assert len({c.name for c in cases}) == len(cases)
    axes = {"family": m.FAMILIES, "camera": m.CAMERAS, "photons": m.PHOTON_LEVELS,
            "bits": m.BIT_DEPTHS}
    for first, second in itertools.combinations(axes, 2):
        seen = {(getattr(c, first), getattr(c, second)) for c in cases}
        assert len(seen) == len(axes[first]) * len(axes[second]), (first, second)


def test_quick_cases_hold_the_failure_modes():
    quick = m.bench_cases(quick=True)
    assert any(c.camera == "photon_counting" for c in quick)
    assert any(c.family == "nuclei" and c.photons >= 1000 and c.bits == 8 for c in quick)
    assert {c.camera for c in quick} == set(m.CAMERAS)


def test_training_streams_never_meet_the_bench():
    bench = {tuple(c.rng().random(4)) for c in m.bench_cases() + m.bench_cases(quick=True)}
    for seed in (0, 1, m.BENCH_SEED):
        for index in range(120):
            assert tuple(m.training_rng(index, seed).random(4)) not in bench


def test_random_acquisition_is_seeded():
    one = m.random_acquisition(m.training_rng(3), 64)
    two = m.random_acquisition(m.training_rng(3), 64)
    np.testing.assert_array_equal(one.noisy, two.noisy)
    assert one.noisy.shape == (64, 64) and one.camera in m.CAMERAS


def test_psf_override_keeps_pixel_scale_texture():
    def fine(psf):
        field = m.clean_field("nuclei", 96, np.random.default_rng(0), psf_sigma=psf)
        return np.abs(np.diff(field, axis=1)).mean() / field.mean()

    assert fine(0.35) > 1.5 * fine(1.2)  # a binned field keeps its granular chromatin
    case = m.bench_cases(quick=True)[-1]
    assert case.psf_sigma == 0.35 and "psf0.35" in case.name

"""Tests for intensity normalisation."""

import json

import numpy as np
import pytest

from napari_mprnet.engine.normalize import (
    NORMALIZE_MODES,
    Normalization,
    choose_normalization,
)


def _rng():
    return np.random.default_rng(1)


def test_modes():
    assert NORMALIZE_MODES == ("auto", "percentile", "range", "none")


def test_uint8_divides_by_255():
    data = _rng().integers(0, 256, size=(20, 30)).astype(np.uint8)
    norm = choose_normalization(data)
    assert (norm.mode, norm.low, norm.high) == ("uint8", 0.0, 255.0)
    out = norm.apply(data)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, data / 255.0, rtol=1e-6)
    np.testing.assert_allclose(norm.invert(out), data, atol=1e-4)


def test_float_in_unit_range_is_identity():
    data = _rng().random((20, 30)).astype(np.float32)
    norm = choose_normalization(data)
    assert norm == Normalization()
    assert norm.mode == "identity"
    np.testing.assert_array_equal(norm.apply(data), data)
    np.testing.assert_array_equal(norm.invert(data), data)
    assert norm.apply(data.astype(np.float64)).dtype == np.float32


@pytest.mark.parametrize(
    "data",
    [
        (np.random.default_rng(2).random((40, 50)) * 4000 + 100).astype(np.uint16),
        (np.random.default_rng(3).normal(5.0, 3.0, (40, 50))).astype(np.float32),
        (np.random.default_rng(4).random((40, 50)) * 1.5 - 0.2).astype(np.float64),
    ],
    ids=["uint16", "float-wide", "float-negative"],
)
def test_auto_uses_percentiles_and_round_trips(data):
    norm = choose_normalization(data)
    assert norm.mode == "percentile"
    expected_low, expected_high = np.percentile(data.astype(np.float64), [0.5, 99.8])
    assert norm.low == pytest.approx(expected_low)
    assert norm.high == pytest.approx(expected_high)
    out = norm.apply(data)
    assert out.dtype == np.float32
    # the bulk of the data lands in [0, 1]; nothing is clipped
    inside = np.mean((out >= 0) & (out <= 1))
    assert 0.95 < inside < 1.0
    span = float(np.ptp(data.astype(np.float64)))
    np.testing.assert_allclose(norm.invert(out), data, rtol=1e-5, atol=span * 1e-6)


def test_explicit_percentiles():
    data = np.arange(1001, dtype=np.uint16)
    norm = choose_normalization(data, "percentile", percentiles=(10, 90))
    assert (norm.low, norm.high) == pytest.approx((100.0, 900.0))
    # "percentile" also applies to data "auto" would leave alone
    assert choose_normalization(data.astype(np.uint8), "percentile").mode == "percentile"


def test_range_mode():
    u16 = np.array([[0, 1000], [30000, 65535]], np.uint16)
    norm = choose_normalization(u16, "range")
    assert (norm.mode, norm.low, norm.high) == ("range", 0.0, 65535.0)
    np.testing.assert_allclose(norm.apply(u16), u16 / 65535.0, rtol=1e-6)
    assert choose_normalization(u16.astype(np.uint8), "range").high == 255.0
    i16 = choose_normalization(np.zeros(4, np.int16), "range")
    assert (i16.low, i16.high) == (-32768.0, 32767.0)
    floats = np.array([0.0, 7.5], np.float32)
    assert choose_normalization(floats, "range") == Normalization()


def test_none_mode():
    data = np.array([[0, 5000]], np.uint16)
    norm = choose_normalization(data, "none")
    assert norm.mode == "identity"
    np.testing.assert_array_equal(norm.apply(data), data.astype(np.float32))


def test_normalization_instance_passes_through():
    given = Normalization("percentile", 10.0, 20.0)
    assert choose_normalization(np.zeros((4, 4)), given) is given


@pytest.mark.parametrize("mode", ["Auto", "minmax", "", None, 3])
def test_invalid_mode(mode):
    with pytest.raises(ValueError, match="normalize must be one of"):
        choose_normalization(np.zeros((4, 4), np.uint16), mode)


@pytest.mark.parametrize("percentiles", [(50, 50), (90, 10), (-1, 99), (1, 101)])
def test_bad_percentiles(percentiles):
    data = np.arange(100, dtype=np.uint16)
    with pytest.raises(ValueError, match="percentiles"):
        choose_normalization(data, "percentile", percentiles=percentiles)
    with pytest.raises(ValueError, match="percentiles"):
        choose_normalization(data, "auto", percentiles=percentiles)


@pytest.mark.parametrize(
    "data",
    [
        np.full((8, 8), 1234, np.uint16),
        np.full((8, 8), 7.0, np.float32),
        np.zeros((8, 8), np.int32),
    ],
)
def test_constant_image_does_not_divide_by_zero(data):
    norm = choose_normalization(data)
    assert norm.high > norm.low
    with np.errstate(all="raise"):
        out = norm.apply(data)
        back = norm.invert(out)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(back, data, rtol=1e-6)


def test_nearly_constant_falls_back_to_full_range():
    data = np.zeros(10_000, np.uint16)
    data[0] = 50  # outlier outside the percentile window
    norm = choose_normalization(data)
    assert (norm.low, norm.high) == (0.0, 50.0)


def test_large_arrays_are_sampled():
    data = np.arange(5_000_001, dtype=np.float32) * 3.0  # above the sampling threshold
    norm = choose_normalization(data, percentiles=(0, 100))
    assert norm.low == 0.0
    assert norm.high == pytest.approx(data[-1], rel=1e-5)


def test_dict_round_trip():
    norm = Normalization("percentile", 12.5, 3456.0)
    values = norm.to_dict()
    assert values == {"mode": "percentile", "low": 12.5, "high": 3456.0}
    assert Normalization.from_dict(json.loads(json.dumps(values))) == norm
    assert Normalization.from_dict(Normalization().to_dict()) == Normalization()


def test_nan_pixels_are_ignored():
    data = (_rng().random((40, 50)) * 1000).astype(np.float32)
    data[0, :5] = np.nan
    norm = choose_normalization(data)
    assert norm.mode == "percentile"
    assert np.isfinite(norm.low) and np.isfinite(norm.high) and norm.high > norm.low
    out = norm.apply(data)
    assert np.isnan(out[0, :5]).all() and np.isfinite(out[1:]).all()
    unit = data / 1000
    assert choose_normalization(unit) == Normalization()


def test_all_nan_image_gets_a_finite_map():
    data = np.full((4, 4), np.nan, np.float32)
    with pytest.warns(RuntimeWarning):
        norm = choose_normalization(data)
    assert np.isfinite(norm.low) and norm.high > norm.low


def test_wide_inputs_and_large_intensities_are_mapped_in_float64():
    from napari_mprnet.engine.normalize import NETWORK_INPUT_LIMIT

    norm = Normalization("percentile", 100.0, 4000.0)
    assert norm.work_dtype(np.uint16) == np.float32 and norm.work_dtype(np.int64) == np.float64
    huge = Normalization("percentile", 1e17, 1e17 + 256)
    assert huge.work_dtype(np.float32) == np.float64
    data = np.array([1e17, 1e17 + 128, 1e17 + 256])
    np.testing.assert_allclose(huge.apply(data), [0, 0.5, 1])  # float32 would give 0, 0, 0
    back = huge.invert(np.array([0.0, 0.5, 1.0], np.float32), data.dtype)
    assert back.dtype == np.float64 and np.array_equal(back, data)
    outlier = Normalization("percentile", 0.0, 1.0).apply(np.array([0.5, 3e38], np.float32))
    assert outlier.tolist() == [0.5, NETWORK_INPUT_LIMIT]  # clipped, never inf


def test_unusable_normalizations_and_percentiles_are_refused():
    from napari_mprnet.engine.normalize import check_percentiles

    for low, high in ((1.0, 1.0), (float("nan"), 1.0), (0.0, float("inf"))):
        with pytest.raises(ValueError, match="Normalization"):
            Normalization("percentile", low, high)
    with pytest.raises(ValueError, match="not a stored normalisation"):
        Normalization.from_dict({"mode": "percentile", "low": "a", "high": 2})
    with pytest.raises(TypeError, match="two numbers"):
        check_percentiles("1, 99")
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        check_percentiles((99, 1))
    assert check_percentiles([1, 99.5]) == (1.0, 99.5)

"""Tests for axis inference, validation and the planes round trip."""

import numpy as np
import pytest

from napari_mprnet.engine.axes import (
    AXIS_LETTERS,
    PlaneLayout,
    from_planes,
    infer_axes,
    parse_axes,
    to_planes,
)


@pytest.mark.parametrize(
    "shape, rgb, expected",
    [
        ((32, 48), None, "YX"),
        ((5, 32, 48), None, "ZYX"),
        ((2, 5, 32, 48), None, "TZYX"),
        ((2, 5, 3, 32, 48), None, "TZCYX"),
        ((32, 48, 3), None, "YXS"),
        ((32, 48, 4), None, "YXS"),
        ((5, 32, 48, 3), None, "ZYXS"),
        ((2, 5, 32, 48, 4), None, "TZYXS"),
        ((32, 48, 3), True, "YXS"),
        ((32, 48, 3), False, "ZYX"),
        ((5, 32, 48, 4), False, "TZYX"),
        ((3, 32, 48), None, "ZYX"),  # only the last axis decides RGB
        ((32, 3), None, "YX"),  # 2-D data is never RGB
        ((32, 48, 5), None, "ZYX"),
    ],
)
def test_infer_axes(shape, rgb, expected):
    assert infer_axes(shape, rgb=rgb) == expected


@pytest.mark.parametrize(
    "shape, rgb, match",
    [
        ((32,), None, "at least 2 dimensions"),
        ((), None, "at least 2 dimensions"),
        ((2, 2, 5, 3, 32, 48), None, "axes="),
        ((32, 48, 5), True, "rgb=True"),
        ((32, 3), True, "rgb=True"),
    ],
)
def test_infer_axes_errors(shape, rgb, match):
    with pytest.raises(ValueError, match=match):
        infer_axes(shape, rgb=rgb)


def test_infer_axes_six_dims_rgb():
    assert infer_axes((2, 2, 5, 3, 32, 3)) == "TZCYXS"


@pytest.mark.parametrize(
    "axes, shape, expected",
    [
        ("yx", (8, 9), "YX"),
        ("XY", (8, 9), "XY"),
        ("cyx", (2, 8, 9), "CYX"),
        ("TZCYXS", (1, 2, 3, 8, 9, 4), "TZCYXS"),
        ("SYX", (3, 8, 9), "SYX"),
    ],
)
def test_parse_axes(axes, shape, expected):
    assert parse_axes(axes, shape) == expected


@pytest.mark.parametrize(
    "axes, shape, match",
    [
        ("ZYX", (8, 9), "2 dimensions"),
        ("YX", (2, 8, 9), "3 dimensions"),
        ("TQYX", (1, 2, 8, 9), "unknown letter 'Q'.*TZCYXS"),
        ("ZZX", (2, 8, 9), "repeats Z"),
        ("ZYY", (2, 8, 9), "repeats Y"),
        ("ZCX", (2, 3, 9), "missing Y"),
        ("ZYC", (2, 8, 9), "missing X"),
        ("YXS", (8, 9, 5), "size 3 or 4"),
        ("SYX", (2, 8, 9), "size 3 or 4"),
    ],
)
def test_parse_axes_errors(axes, shape, match):
    with pytest.raises(ValueError, match=match):
        parse_axes(axes, shape)


@pytest.mark.parametrize("axes", [None, 3, ["Y", "X"], b"YX"])
def test_parse_axes_type_error(axes):
    with pytest.raises(TypeError):
        parse_axes(axes, (8, 9))


def test_axis_letters():
    assert AXIS_LETTERS == "TZCYXS"


def _data(shape, dtype=np.float32):
    rng = np.random.default_rng(0)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, 200, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)


ROUND_TRIPS = [
    # axes, shape, n_planes, channels
    ("YX", (6, 7), 1, 1),
    ("XY", (7, 6), 1, 1),
    ("ZYX", (3, 6, 7), 3, 1),
    ("CYX", (2, 6, 7), 2, 1),
    ("YXC", (6, 7, 2), 2, 1),
    ("YCX", (6, 2, 7), 2, 1),
    ("TCYX", (2, 3, 6, 7), 6, 1),
    ("TZYX", (2, 3, 6, 7), 6, 1),
    ("TZCYX", (2, 3, 2, 6, 7), 12, 1),
    ("ZXCY", (3, 7, 2, 6), 6, 1),
    ("YXS", (6, 7, 3), 1, 3),
    ("ZYXS", (3, 6, 7, 3), 3, 3),
    ("SYX", (3, 6, 7), 1, 3),
    ("TZYXS", (2, 2, 6, 7, 3), 4, 3),
    ("CXYS", (2, 7, 6, 3), 2, 3),
]


@pytest.mark.parametrize("axes, shape, n_planes, channels", ROUND_TRIPS)
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_round_trip(axes, shape, n_planes, channels, dtype):
    data = _data(shape, dtype)
    planes, layout = to_planes(data, axes)
    assert isinstance(layout, PlaneLayout)
    assert layout.axes == axes.upper()
    assert layout.shape == shape
    assert planes.shape == (n_planes, 6, 7, channels)
    assert (layout.n_planes, layout.height, layout.width) == (n_planes, 6, 7)
    assert layout.channels == channels
    assert planes.dtype == data.dtype
    restored = from_planes(planes, layout)
    assert restored.shape == shape
    assert restored.dtype == data.dtype
    np.testing.assert_array_equal(restored, data)


@pytest.mark.parametrize("axes, shape, n_planes, channels", ROUND_TRIPS)
def test_planes_are_the_yx_planes(axes, shape, n_planes, channels):
    """Each plane is a genuine Y-by-X slice of the data (not a scrambled reshape)."""
    data = _data(shape)
    planes, _ = to_planes(data, axes)
    canonical = np.moveaxis(data, [axes.index("Y"), axes.index("X")], [-2, -1])
    if "S" in axes:
        # canonical currently has S somewhere before Y, X; take sample 0 of the first plane
        s = [a for a in axes if a not in "YX"].index("S")
        first = np.take(canonical, 0, axis=s).reshape(-1, 6, 7)[0]
        np.testing.assert_array_equal(planes[0, ..., 0], first)
    else:
        np.testing.assert_array_equal(planes[..., 0], canonical.reshape(-1, 6, 7))


def test_to_planes_is_a_view_when_possible():
    data = _data((3, 6, 7))
    planes, _ = to_planes(data, "ZYX")
    assert np.shares_memory(planes, data)
    rgba = _data((6, 7, 4))
    planes, _ = to_planes(rgba, "YXS")
    assert np.shares_memory(planes, rgba)


def test_from_planes_float_outputs():
    data = _data((2, 6, 7), np.uint16)
    planes, layout = to_planes(data, "CYX")
    out = from_planes(planes.astype(np.float64) / 2, layout)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, data / 2)


def test_rgba_alpha_passthrough():
    data = _data((2, 6, 7, 4), np.uint8)
    planes, layout = to_planes(data, "ZYXS")
    assert layout.has_alpha and layout.channels == 3
    assert planes.shape == (2, 6, 7, 3)
    np.testing.assert_array_equal(planes, data[..., :3])
    # exact round trip
    np.testing.assert_array_equal(from_planes(planes, layout, alpha_source=data), data)
    # processed colour, untouched alpha, in the planes' dtype
    processed = planes.astype(np.float32) / 255
    out = from_planes(processed, layout, alpha_source=data)
    assert out.shape == data.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., :3], data[..., :3] / np.float32(255))
    np.testing.assert_array_equal(out[..., 3], data[..., 3].astype(np.float32))


def test_rgba_alpha_first_axis():
    data = _data((4, 6, 7), np.uint8)
    planes, layout = to_planes(data, "SYX")
    assert planes.shape == (1, 6, 7, 3)
    np.testing.assert_array_equal(from_planes(planes, layout, alpha_source=data), data)


def test_rgba_needs_alpha_source():
    data = _data((6, 7, 4))
    planes, layout = to_planes(data, "YXS")
    with pytest.raises(ValueError, match="alpha_source"):
        from_planes(planes, layout)
    with pytest.raises(ValueError, match="alpha_source"):
        from_planes(planes, layout, alpha_source=data[:3])


def test_rgb_has_no_alpha():
    data = _data((6, 7, 3))
    planes, layout = to_planes(data, "YXS")
    assert not layout.has_alpha
    np.testing.assert_array_equal(from_planes(planes, layout), data)


def test_from_planes_rejects_wrong_shape():
    planes, layout = to_planes(_data((3, 6, 7)), "ZYX")
    with pytest.raises(ValueError, match="expects"):
        from_planes(planes[:2], layout)
    with pytest.raises(ValueError, match="expects"):
        from_planes(planes[..., 0], layout)


def test_to_planes_validates_axes():
    with pytest.raises(ValueError, match="unknown letter"):
        to_planes(_data((3, 6, 7)), "QYX")

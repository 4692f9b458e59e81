"""Bad input gets a clear error, never a silent NaN or a traceback; valid input a finite result.

The fuzz test draws dtypes, shapes, extreme and non-finite values and containers (numpy,
masked, torch, dask) and classifies every outcome as *correct* (a finite result of the input's
shape) or *clear error* (a one-line ValueError/TypeError); anything else fails.
"""

from __future__ import annotations

import warnings

import dask.array as da
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_mprnet import restore
from napari_mprnet.engine.normalize import Normalization
from napari_mprnet.engine.pipeline import Restorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"tile_size": 16, "tile_overlap": 4, "device": "cpu"}
DTYPES = ["uint8", "int8", "uint16", "int16", "int32", "uint32", "int64", "uint64", "float16",
          "float32", "float64", "bool", "complex64", "timedelta64[s]", "datetime64[s]"]
CONTAINERS = ["numpy", "numpy", "masked", "torch", "dask"]


@st.composite
def fuzz_inputs(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    shape = draw(st.sampled_from([(h, w), (2, h, w), (h, w, 3), (h, w, 4), (w,), (0, w)]))
    finite = draw(st.booleans())
    if dtype.kind == "f" and finite:
        elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
    else:
        elements = hnp.from_dtype(dtype)
    data = draw(hnp.arrays(dtype, shape, elements=elements))
    container = draw(st.sampled_from(CONTAINERS))
    if container == "masked":
        mask = draw(hnp.arrays(bool, shape))
        return np.ma.masked_array(data, mask=mask), container, data
    if container == "torch":
        try:
            return torch.from_numpy(data), container, data
        except TypeError:  # a dtype torch does not have
            return data, "numpy", data
    if container == "dask":
        return da.from_array(data, chunks=8), container, data
    return data, container, data


def _is_valid(data: np.ndarray, container: str) -> bool:
    numeric = data.dtype != bool and data.dtype.kind in "iuf"
    return (container != "masked" and numeric and data.ndim >= 2 and data.size > 0
            and (data.dtype.kind != "f" or bool(np.isfinite(data).all())))


def _clear(error: BaseException) -> bool:
    message = str(error)
    return isinstance(error, (ValueError, TypeError)) and bool(message.strip()) \
        and "\n" not in message and "Traceback" not in message


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(case=fuzz_inputs())
def test_fuzz_every_outcome_is_a_result_or_a_clear_error(tiny_model, case):
    image, container, data = case
    before = data.tobytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = restore(image, model=tiny_model, **FAST)
            if container == "dask":
                out = out.compute(scheduler="sync")
    except Exception as error:  # noqa: BLE001 - classified below
        assert _clear(error), f"unclear {type(error).__name__}: {error}"
        if _is_valid(data, container):
            # valid input may only fail when its values cannot be stored as float32
            assert "float64" in str(error), f"valid input refused: {error}"
    else:
        assert _is_valid(data, container), "invalid input was accepted"
        assert out.shape == data.shape and out.dtype == np.float32
        assert np.isfinite(out).all()
    assert data.tobytes() == before  # the input is never modified


def test_finite_floats_beyond_float32_are_normalised_in_float64(tiny_model):
    image = np.linspace(-3e38, 3e38, 64, dtype=np.float32).reshape(8, 8)
    out = restore(image, model=tiny_model, output_dtype=np.float64, **FAST)
    assert np.isfinite(out).all() and out.dtype == np.float64
    assert np.abs(out).max() > 1e37  # on the input's scale, not squashed or overflowed
    wide = np.linspace(-1e300, 1e300, 256).reshape(16, 16)
    assert np.isfinite(restore(wide, model=tiny_model, output_dtype=np.float64,
                               **FAST)).all()
    with pytest.raises(ValueError, match="output_dtype=np.float64"):
        restore(wide, model=tiny_model, **FAST)  # the float32 default cannot hold 1e300


@pytest.mark.parametrize("value", [0.0, 5.0, -3.0, 1e17, -1e17, 1e30, 3e38])
def test_constant_images_of_any_magnitude_come_back_as_their_value(tiny_model, value):
    image = np.full((12, 12), value)
    out = restore(image, model=tiny_model, output_dtype=np.float64, **FAST)
    span = max(1.0, 16 * float(np.spacing(abs(value))))
    np.testing.assert_allclose(out, value, rtol=1e-6, atol=2 * span)
    out32 = restore(image.astype(np.float32), model=tiny_model, **FAST)
    assert np.isfinite(out32).all()
    np.testing.assert_allclose(out32, np.float32(value), rtol=1e-6, atol=2 * span)


def test_model_with_non_finite_output_is_an_error(tiny_model):
    tiny_model.tail.register_forward_hook(lambda module, args, out: out + float("nan"))
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="produced NaN or infinite values"):
        restore(image, model=tiny_model, **FAST)
    with pytest.raises(ValueError, match="produced NaN or infinite values"):
        restore(da.from_array(image, chunks=8), model=tiny_model, **FAST).compute()


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_non_finite_input_is_refused(tiny_model, kind):
    image = np.ones((16, 16), np.float32)
    image[3, 4] = np.inf
    given_image = torch.from_numpy(image) if kind == "torch" else image
    with pytest.raises(ValueError, match="NaN or infinite values .1 pixel"):
        restore(given_image, model=tiny_model, **FAST)


def test_non_finite_dask_block_is_named_at_compute_time(tiny_model):
    image = np.ones((64, 64), np.float32)
    image[60, 5] = np.nan
    # the intensity map is given, so nothing is read before compute()
    lazy = restore(da.from_array(image, chunks=32), model=tiny_model, chunk_size=24,
                   normalize=Normalization(), **FAST)
    with pytest.raises(ValueError, match=r"(block \(2, 0\)|strength probe window) of the dask "
                       r"array \(Y \d+:64, X 0:"):
        lazy.compute(scheduler="sync")
    # with a fitted map the sample already shows it, before any work
    with pytest.raises(ValueError, match="the dask array contains NaN"):
        restore(da.from_array(image, chunks=16), model=tiny_model, **FAST)


def test_masked_arrays_are_refused_everywhere(tiny_model):
    data = np.ma.masked_array(np.arange(256.0).reshape(16, 16), mask=np.eye(16, dtype=bool))
    with pytest.raises(TypeError, match="masked array.*filled"):
        restore(data, model=tiny_model, **FAST)
    with pytest.raises(TypeError, match="masked array"):
        restore(da.ma.masked_array(da.from_array(data.data, chunks=8), mask=data.mask),
                model=tiny_model, **FAST)


def test_napari_layer_with_nan_is_refused(tiny_model):
    pytest.importorskip("napari")
    from napari.layers import Image

    image = np.ones((16, 16), np.float32)
    image[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        restore(Image(image, name="cells"), model=tiny_model, **FAST)


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"progress": 5}, TypeError, "progress must be a function"),
    ({"percentiles": "1,99"}, TypeError, "percentiles must be two numbers"),
    ({"percentiles": ("1", "99")}, TypeError, "percentiles must be two numbers"),
    ({"percentiles": (99, 1)}, ValueError, "0 <= low < high <= 100"),
    ({"stages": "no"}, TypeError, "stages must be True or False"),
    ({"backend_options": "x"}, TypeError, "backend_options must be a dict"),
    ({"output_dtype": "pixels"}, TypeError, "output_dtype must be"),
    ({"rgb": "yes"}, TypeError, "rgb must be True, False or None"),
])
@pytest.mark.parametrize("lazy", [False, True])
def test_bad_arguments_are_one_line_errors(tiny_model, kwargs, error, words, lazy):
    image = np.ones((16, 16), np.uint16)
    given_image = da.from_array(image) if lazy else image
    with pytest.raises(error) as caught:
        restore(given_image, model=tiny_model, **FAST, **kwargs)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_timedelta_with_nat_is_refused(tiny_model):
    image = np.array([[1, 2], [3, "NaT"]], dtype="timedelta64[s]")
    with pytest.raises(TypeError, match="dates or time spans"):
        restore(image, model=tiny_model, **FAST)


def test_compile_on_the_cpu_warns_and_auto_does_not_choose_it(tiny_model):
    with pytest.warns(UserWarning, match="compiles the network for minutes"):
        Restorer(tiny_model, backend="compile", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restorer = Restorer(tiny_model, backend="auto", device="cpu")
    from napari_mprnet.engine.backends import openvino_available

    # "auto" on a CPU: OpenVINO where it is installed, else eager; never torch.compile
    assert restorer.runner.backend.name == ("openvino" if openvino_available() else "eager")


def test_concurrent_restores_from_threads_match_sequential(tiny_model, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from napari_mprnet import save_model
    from napari_mprnet.engine.models import clear_model_cache

    path = str(save_model(tiny_model, tmp_path / "tiny.safetensors"))
    rng = np.random.default_rng(0)
    images = [(rng.random((24, 24)) * 1000 * (i + 1)).astype(np.uint16) for i in range(6)]
    expected = [restore(image, model=path, **FAST) for image in images]
    clear_model_cache()  # the threads also race for the first load of the file
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda image: restore(image, model=path, **FAST), images))
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(want, have)


# ------------------------------------------------------------------------------------------
# Families of the second fault-injection run, with an identity network as the oracle: its
# final output is its input exactly, so a restore gives the input back up to the float32
# rounding of the normalised planes, whatever the strength.


@pytest.fixture
def identity_net(tiny_model):
    """The tiny network with its stage-3 residual zeroed: final output == input."""
    with torch.no_grad():
        tiny_model.tail.weight.zero_()
    return tiny_model


def _plain_error(error: BaseException) -> bool:
    """A ValueError/TypeError itself (not numpy's LinAlgError or another subclass), on one
    line, that does not blame the (identity) network or quote an internal check."""
    message = str(error)
    return type(error) in (ValueError, TypeError) and _clear(error) \
        and "produced NaN" not in message and "Normalization high" not in message


FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
STRENGTHS = st.sampled_from([0.0, 1.0, "auto"])


@st.composite
def wide_integer_images(draw):
    """32/64-bit integer images built from their extremes, and an output dtype."""
    dtype = np.dtype(draw(st.sampled_from(["int64", "uint64", "int32", "uint32"])))
    info = np.iinfo(dtype)
    specials = [int(info.min), int(info.max), int(info.max) - 1, int(info.min) + 1, 0, 1,
                int(info.max) // 2]
    element = st.one_of(st.sampled_from(specials), st.integers(int(info.min), int(info.max)))
    shape = draw(st.sampled_from([(16, 16), (2, 12, 12)]))
    if draw(st.booleans()):
        data = np.full(shape, draw(element), dtype)
    else:
        data = draw(hnp.arrays(dtype, shape, elements=element))
    output = draw(st.sampled_from([dtype.name, dtype.name, "int64", "uint64", "int8",
                                   "uint16", "float64"]))
    return data, np.dtype(output)


@FUZZ
@given(case=wide_integer_images(), strength=STRENGTHS)
def test_fuzz_64bit_extremes_come_back_saturated_never_wrapped(identity_net, case, strength):
    from napari_mprnet.engine.normalize import choose_normalization

    data, output = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the saturation notice
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "invalid value in cast"
        out = restore(data, model=identity_net, output_dtype=output, strength=strength,
                      precision="fp32", **FAST)
    assert out.dtype == output and out.shape == data.shape
    low_out, high_out = (np.iinfo(output).min, np.iinfo(output).max) \
        if output.kind in "iu" else (-np.inf, np.inf)
    want = np.clip(data.astype(object), low_out, high_out)
    got = out.astype(object)
    if (data == data.flat[0]).all():  # a constant comes back as its value (float64 rounding)
        slack = 2 * float(np.spacing(abs(float(data.flat[0]))))
        assert all(abs(g - w) <= max(slack, 1) for g, w in zip(got.flat, want.flat)), \
            (data.flat[0], out.flat[0])
        return
    # every pixel within the float32 rounding of the normalised planes (pixels clipped as
    # extreme outliers, a million spans away, excepted)
    norm = choose_normalization(data)
    span = float(norm.high) - float(norm.low)
    normalised = (data.astype(np.float64) - float(norm.low)) / span
    inliers = np.abs(normalised) < 1e5
    tolerance = (np.abs(normalised) + 1) * span * 2.0**-21 + 2 * np.spacing(
        np.abs(data.astype(np.float64))) + 1
    error = np.abs((got - want).astype(np.float64))
    assert (error[inliers] <= tolerance[inliers]).all(), float(error[inliers].max())
    order = np.argsort(data, axis=None, kind="stable")  # and the order is kept: no wrap
    assert (np.diff(out.reshape(-1)[order].astype(object)) >= 0).all()


def test_64bit_top_values_saturate_exactly(identity_net):
    for dtype in (np.int64, np.uint64):
        top = np.iinfo(dtype).max
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            out = restore(np.full((16, 16), top, dtype), model=identity_net, strength=0,
                          output_dtype=dtype, **FAST)
        assert out.dtype == dtype and (out == top).all(), out.flat[0]


def test_narrower_output_dtype_saturates_with_a_word(identity_net):
    image = np.linspace(0, 60000, 256).astype(np.uint16).reshape(16, 16)
    with pytest.warns(UserWarning, match=r"outside the range of uint8 and were saturated"):
        out = restore(image, model=identity_net, output_dtype=np.uint8, **FAST)
    assert out.dtype == np.uint8 and out.max() == 255 and out.min() == 0


def test_cli_output_dtype_same_keeps_64bit_top_values(tmp_path, identity_net):
    import tifffile

    from napari_mprnet import save_model
    from napari_mprnet.cli import main

    weights = save_model(identity_net, tmp_path / "identity.safetensors")
    top = np.iinfo(np.int64).max
    tifffile.imwrite(tmp_path / "top.tif", np.full((16, 16), top, np.int64))
    assert main(["restore", str(tmp_path / "top.tif"), "-o", str(tmp_path / "out"),
                 "--weights", str(weights), "--device", "cpu", "--tile-size", "16",
                 "--tile-overlap", "4", "--strength", "0", "--output-dtype", "same"]) == 0
    out = tifffile.imread(tmp_path / "out" / "top_denoised.tif")
    assert out.dtype == np.int64 and (out == top).all()


@pytest.mark.parametrize("output_dtype", [np.longdouble, "complex64", "bool"])
def test_output_dtypes_nothing_can_display_are_refused(identity_net, output_dtype):
    with pytest.raises(TypeError, match="output_dtype") as caught:
        restore(np.ones((16, 16), np.float32), model=identity_net,
                output_dtype=output_dtype, **FAST)
    assert "\n" not in str(caught.value)


FMAX = float(np.finfo(np.float64).max)


@st.composite
def wide_float_images(draw):
    """float64 images up to the type's limits, some of whose ranges overflow float64."""
    specials = [FMAX, -FMAX, FMAX / 2, -FMAX / 2, 1e300, -1e300, 1e300 + 1e285, 0.0, 1.0,
                5e-324]
    element = st.one_of(st.sampled_from(specials),
                        st.floats(-FMAX, FMAX, allow_nan=False, allow_infinity=False))
    if draw(st.booleans()):
        data = np.full((16, 16), draw(element))
    else:
        data = draw(hnp.arrays(np.float64, (16, 16), elements=element))
    noise = draw(st.sampled_from([None, None, 0.05, (0.5, 0.01)]))
    return data, noise


@FUZZ
@given(case=wide_float_images(), strength=STRENGTHS,
       output=st.sampled_from([np.float64, np.float64, None]))
def test_fuzz_float64_extremes_give_the_image_back_or_say_why(identity_net, case, strength,
                                                             output):
    data, noise = case
    before = data.tobytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", RuntimeWarning)  # overflow noticed by numpy only
            out = restore(data, model=identity_net, strength=strength, noise=noise,
                          output_dtype=output, precision="fp32", **FAST)
    except Exception as error:  # noqa: BLE001 - classified below
        assert _plain_error(error), f"unclear {type(error).__name__}: {error}"
        span = np.float64(data.max()) - np.float64(data.min()) if np.isfinite(
            np.float64(data.max()) - np.float64(data.min())) else np.inf
        given_noise = noise is not None  # refused with a fixed strength, or vanishing
        if output is not None and np.isfinite(span) and not given_noise:
            raise AssertionError(f"a float64 image with a finite range was refused: {error}")
    else:
        assert out.shape == data.shape and np.isfinite(out).all()
        if output is np.float64:  # the image back (pixels clipped as extreme outliers,
            # a million percentile spans away, excepted)
            from napari_mprnet.engine.normalize import choose_normalization

            norm = choose_normalization(data)
            span = float(norm.high) - float(norm.low)
            inliers = np.abs(data / span - float(norm.low) / span) < 1e5
            scale = max(span, float(np.spacing(np.abs(data).max())) * 16, 1.0)
            assert (np.abs(out - data)[inliers] <= scale * 2.0**-20).all()
    assert data.tobytes() == before


def test_constant_image_at_the_float64_maximum_comes_back_as_its_value(identity_net):
    for value in (FMAX, -FMAX):
        image = np.full((16, 16), value)
        out = restore(image, model=identity_net, output_dtype=np.float64, **FAST)
        assert (out == value).all()
        with pytest.raises(ValueError, match="output_dtype=np.float64"):
            restore(image, model=identity_net, **FAST)  # float32 cannot hold it


def test_a_range_that_overflows_float64_is_named(identity_net):
    image = np.zeros((16, 16))
    image[0], image[1] = -1e308, 1e308
    for strength in (1.0, "auto"):
        with pytest.raises(ValueError, match="range") as caught:
            restore(image, model=identity_net, strength=strength, output_dtype=np.float64,
                    **FAST)
        assert type(caught.value) is ValueError and "model" not in str(caught.value)


def test_given_noise_on_huge_values_is_a_value_error(identity_net):
    image = 1e300 + np.random.default_rng(0).random((16, 16)) * 1e285
    with pytest.raises(ValueError, match="noise") as caught:
        restore(image, model=identity_net, noise=0.05, output_dtype=np.float64, **FAST)
    assert type(caught.value) is ValueError and "\n" not in str(caught.value)


def _sparse_or_meta(kind: str, shape: tuple[int, ...]):
    dense = torch.rand(shape)
    if kind == "meta":
        return torch.empty(shape, device="meta")
    if kind == "coo":
        return dense.to_sparse()
    if kind == "csr":
        return dense.to_sparse_csr()
    if kind == "csc":
        return dense.to_sparse_csc()
    import scipy.sparse

    return scipy.sparse.random(shape[0], shape[1], density=0.3, format=kind[6:])


@FUZZ
@given(kind=st.sampled_from(["meta", "coo", "csr", "csc", "scipy-csr", "scipy-coo"]),
       height=st.integers(1, 20), width=st.integers(1, 20))
def test_fuzz_sparse_and_meta_tensors_are_refused_in_one_line(identity_net, kind, height,
                                                              width):
    image = _sparse_or_meta(kind, (height, width))
    with pytest.raises(TypeError) as caught:
        restore(image, model=identity_net, **FAST)
    message = str(caught.value)
    assert _plain_error(caught.value), message
    assert ("meta" if kind == "meta" else "sparse") in message
    assert ("real data" if kind == "meta" else "dense") in message  # what to do


@FUZZ
@given(layer_rgb=st.booleans(), channels=st.sampled_from([3, 4, 5]),
       rgb=st.sampled_from([None, True, False, np.bool_(False), "yes", 1, 0, "False"]))
def test_fuzz_rgb_on_layers_is_honoured_or_refused(identity_net, layer_rgb, channels, rgb):
    napari_layers = pytest.importorskip("napari.layers")

    if layer_rgb and channels not in (3, 4):
        return  # napari itself refuses such a layer
    data = np.random.default_rng(channels).integers(0, 256, (12, 12, channels), np.uint8)
    layer = napari_layers.Image(data, rgb=layer_rgb, name="photo")
    if rgb is not None and not isinstance(rgb, (bool, np.bool_)):
        with pytest.raises(TypeError, match="rgb must be True, False or None"):
            restore(layer, model=identity_net, rgb=rgb, **FAST)
        return
    wanted = layer_rgb if rgb is None else bool(rgb)
    if wanted and channels not in (3, 4):
        with pytest.raises(ValueError, match="rgb=True") as caught:
            restore(layer, model=identity_net, rgb=rgb, **FAST)
        assert "\n" not in str(caught.value)
        return
    out = restore(layer, model=identity_net, rgb=rgb, **FAST)
    assert out.rgb == wanted and out.data.shape == data.shape
    np.testing.assert_allclose(out.data, data, atol=1e-3)
    if wanted != layer_rgb:  # a real network tells grey planes from colour pixels
        from napari_mprnet.model import MPRNet

        torch.manual_seed(3)
        net = MPRNet(identity_net.config).eval()
        out = restore(layer, model=net, rgb=rgb, **FAST)
        np.testing.assert_array_equal(out.data, restore(data, model=net, rgb=wanted, **FAST))
        assert not np.array_equal(out.data, restore(data, model=net, rgb=layer_rgb, **FAST))

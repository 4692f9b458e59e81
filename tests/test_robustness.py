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
    assert restorer.runner.backend.active == "eager"


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

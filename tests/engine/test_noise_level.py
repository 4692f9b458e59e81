"""restore(noise=...): a user-given noise level for strength="auto", in image units."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.optimize import lsq_linear

from napari_mprnet import restore
from napari_mprnet.engine import strength as st
from napari_mprnet.engine.noise import estimate_noise
from napari_mprnet.engine.noise_level import NoiseLevel, check_noise, network_noise
from napari_mprnet.engine.normalize import Normalization
from napari_mprnet.engine.pipeline import Restorer
from napari_mprnet.engine.runner import TiledRunner

FAST = {"device": "cpu", "tile_overlap": 8, "tile_size": 48, "precision": "fp32"}


def _smoother(sigma):
    def forward(batch):
        return ndimage.gaussian_filter(batch, (0, sigma, sigma, 0)).astype(np.float32)
    return forward


@pytest.fixture
def smoothing_probe(monkeypatch):
    """The probe windows run through a Gaussian smoother (its SURE weights are well inside
    [0, 1], where the untrained tiny network's are 0 whatever the noise); the tiles still run
    through the network. Records the weights every run measured."""
    seen = []
    forward = _smoother(1.2)
    original = st.iter_probe_weights

    def recording(*args, **kwargs):
        measured = yield from original(*args, **kwargs)
        seen.append(measured[:, :2])  # the band weights (the impulse models follow)
        return measured

    monkeypatch.setattr(TiledRunner, "forward_window", lambda self, batch: forward(batch))
    monkeypatch.setattr("napari_mprnet.engine.pipeline.iter_probe_weights", recording)
    return seen


def _noisy(size=96, sd=0.04, seed=0, planes=1):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    clean = 0.5 + 0.25 * np.sin(5 * xx + 2 * yy) * np.cos(3 * yy)
    clean = clean + ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5) * 0.05
    stack = clean + rng.normal(0, sd, (planes, size, size))
    return (stack[0] if planes == 1 else stack).astype(np.float64)


@pytest.mark.parametrize("noise", [0.015, (0.0002, 0.00006)])
def test_scaled_image_with_scaled_noise_gives_the_scaled_result(tiny_model, smoothing_probe,
                                                                noise):
    image = _noisy() + 0.3  # low > 0 after normalisation: the gain's offset term matters
    kwargs = {"model": tiny_model, "normalize": "percentile", **FAST}
    base = restore(image, noise=noise, **kwargs)
    w_base = smoothing_probe[-1]
    assert np.all((w_base > 0.1) & (w_base < 0.9))  # inside the box: the noise decides it
    for k in (7.0, 300.0):
        scaled = (noise * k if np.isscalar(noise)
                  else (noise[0] * k, noise[1] * k * k))
        out = restore(image * k, noise=scaled, **kwargs)
        np.testing.assert_allclose(smoothing_probe[-1], w_base, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(out, k * base, rtol=1e-5, atol=1e-5 * k)
    # and the noise level matters: a wrong conversion (e.g. by s instead of s**2) would move it
    restore(image, noise=(noise * 2 if np.isscalar(noise) else (noise[0] * 4, noise[1] * 4)),
            **kwargs)
    assert np.abs(smoothing_probe[-1] - w_base).max() > 0.05


def test_gaussian_pair_equals_its_standard_deviation(tiny_model, smoothing_probe):
    image = _noisy(seed=1) * 200
    kwargs = {"model": tiny_model, "normalize": "percentile", **FAST}
    np.testing.assert_array_equal(restore(image, noise=(0, 8.0**2), **kwargs),
                                  restore(image, noise=8.0, **kwargs))
    assert check_noise((0, 64.0)) == check_noise(8.0) == NoiseLevel(0.0, 64.0)


@pytest.mark.parametrize("normalize", ["percentile", "none"])
def test_the_estimators_own_noise_reproduces_the_estimated_run(tiny_model, smoothing_probe,
                                                               normalize):
    clean = _noisy(seed=2, sd=0.0) * 1000 + 150
    rng = np.random.default_rng(5)  # Poisson-Gaussian: the estimator fits a gain too
    image = clean + rng.standard_normal(clean.shape) * np.sqrt(3.0 * clean + 400.0)
    kwargs = {"model": tiny_model, "normalize": normalize, **FAST}
    estimated = restore(image, **kwargs)
    w_estimated = smoothing_probe[-1]
    # the estimator's parameters (network domain, with its margin) in image units
    restorer = Restorer(tiny_model, normalize=normalize, device="cpu")
    norm = restorer.normalization(image)
    layout = restorer.layout(image.shape)
    ys, xs = st.probe_window(*image.shape)
    crop = restorer.planes_in(image, layout, norm)[0, ys, xs, 0]
    a_n, b_n = st.estimated_noise(crop[..., None])[0]
    assert a_n > 0 and (b_n > 0 or normalize == "none")  # both terms of the conversion
    low, span = (norm.low, norm.high - norm.low) if norm.mode != "identity" else (0.0, 1.0)
    gain = a_n * span
    given = restore(image, noise=(gain, b_n * span**2 - gain * low), **kwargs)
    np.testing.assert_allclose(smoothing_probe[-1], w_estimated, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(given, estimated, rtol=1e-6, atol=1e-6 * np.abs(image).max())
    assert smoothing_probe[-1][0, 0] > 0.05  # (not a clipped weight that hides everything)


def test_network_noise_maps_image_units_through_the_normalisation():
    norm = Normalization("percentile", 100.0, 4100.0)
    a_n, b_n = network_noise(NoiseLevel(2.0, 25.0), norm)
    assert a_n == pytest.approx(2.0 / 4000) and b_n == pytest.approx((200 + 25) / 4000**2)
    # a_n x_n + b_n is the image-units variance over s**2, at every intensity
    intensity = np.array([100.0, 600.0, 4100.0])
    x_n = (intensity - 100) / 4000
    np.testing.assert_allclose(a_n * x_n + b_n, (2 * intensity + 25) / 4000**2)
    assert network_noise(NoiseLevel(0.0, 0.01), Normalization()) == (0.0, 0.01)
    assert network_noise(NoiseLevel.gaussian(5.0), Normalization("uint8", 0, 255)) == \
        pytest.approx((0.0, 25 / 255**2))
    # a camera offset: negative offset variance, positive at the bright end
    assert network_noise(NoiseLevel(2.0, 9 - 2 * 100.0), norm)[0] > 0
    with pytest.raises(ValueError, match="not positive even at the bright end"):
        network_noise(NoiseLevel(1.0, -5000.0), norm)


def _textured(size=128, seed=0):
    """Fine texture, nearly at the pixel scale: the blind estimate reads much of it as noise."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.7)
    return 0.5 + texture / texture.std() * 0.15


def test_the_true_noise_beats_the_estimate_on_fine_texture_at_low_noise():
    sd = 2 / 255
    clean = _textured()[None, ..., None]
    x = (clean + np.random.default_rng(1).normal(0, sd, clean.shape)).astype(np.float32)
    a_est, b_est = estimate_noise(x[0, ..., 0])
    assert a_est * 0.5 + b_est > 4 * sd**2  # the estimate is far too high here
    forward = _smoother(1.0)
    fx = forward(x).astype(np.float64)
    h = fx - x
    low = ndimage.gaussian_filter(h, (0, 2, 2, 0), mode="reflect")
    parts = np.stack([(h - low).ravel(), low.ravel()], 1)
    oracle = lsq_linear(parts, (clean - x).ravel(), bounds=(0, 1)).x

    def error(w):
        return float(np.mean((x.ravel() + parts @ w - clean.ravel()) ** 2))

    estimated = st.probe_weights(forward, x)[0]
    given = st.probe_weights(forward, x, noise=(0.0, sd**2))[0]
    assert np.abs(given - oracle).max() < 0.02 < np.abs(estimated - oracle).max()
    assert error(given) < 0.2 * error(estimated)
    assert error(given) < 1.01 * error(oracle)


def test_given_noise_is_the_same_for_every_plane_and_colour_plane(tiny_model, smoothing_probe):
    stack = _noisy(planes=2, seed=3) * 1000  # two planes, two noise draws
    stack[1] += np.random.default_rng(6).normal(0, 40, stack[1].shape)
    restore(stack, model=tiny_model, normalize="percentile", noise=30.0, **FAST)
    weights = smoothing_probe[-1]
    assert weights.shape == (2, 2) and not np.allclose(weights[0], weights[1])
    norm = Restorer(tiny_model, normalize="percentile", device="cpu").normalization(stack)
    crops = (stack[:, None] - norm.low) / (norm.high - norm.low)
    ys, xs = st.probe_window(96, 96)
    crops = np.moveaxis(crops, 1, -1)[:, ys, xs].astype(np.float32)
    expected = st.probe_weights(_smoother(1.2), crops,
                                noise=(0.0, 30.0**2 / (norm.high - norm.low) ** 2))
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    # RGB through a one-channel network: the colour planes share the given level
    rgb = np.stack([stack[0], stack[0] * 0.9 + 20, stack[0] * 1.1 - 20], -1)
    restore(rgb, model=_one_channel(), normalize="percentile", noise=30.0, **FAST)
    assert smoothing_probe[-1].shape == (1, 2)


def _one_channel():
    import torch

    from napari_mprnet.model import MPRNet, MPRNetConfig

    torch.manual_seed(0)
    return MPRNet(MPRNetConfig(in_c=1, out_c=1, n_feat=8, scale_unetfeats=4,
                               scale_orsnetfeats=4, num_cab=1, reduction=4)).eval()


@pytest.mark.parametrize("bad, error, match", [
    (True, TypeError, "not a number"),
    (False, TypeError, "not a number"),
    (float("nan"), ValueError, "finite"),
    (float("inf"), ValueError, "finite"),
    (-1.0, ValueError, "must be > 0"),
    (0, ValueError, "must be > 0"),
    ("strong", ValueError, "'auto'"),
    ("", ValueError, "'auto'"),
    ((1.0,), ValueError, "exactly two"),
    ((1.0, 2.0, 3.0), ValueError, "exactly two"),
    ((-1.0, 4.0), ValueError, "gain must be >= 0"),
    ((0.0, 0.0), ValueError, "offset variance .* must be > 0"),
    ((0.0, -4.0), ValueError, "must be > 0"),
    ((1.0, float("nan")), ValueError, "finite"),
    (("1", 2.0), TypeError, "gain is not a number"),
    ({"sd": 5}, TypeError, "not a number"),
    (np.array([1.0, 2.0, 3.0]), ValueError, "exactly two"),
])
def test_bad_noise_values_are_refused_before_any_work(tiny_model, bad, error, match,
                                                      monkeypatch):
    monkeypatch.setattr("napari_mprnet.engine.pipeline.prepare_model",
                        lambda *a: pytest.fail("a model was prepared"))
    with pytest.raises(error, match=match) as info:
        Restorer(tiny_model, noise=bad, device="cpu")
    message = str(info.value)
    assert "\n" not in message and "gain, offset_variance" in message


def test_good_noise_values_are_accepted():
    assert check_noise(None) is None and check_noise(" Auto ") is None
    assert check_noise(np.float32(2.0)) == NoiseLevel(0.0, 4.0)
    assert check_noise(np.array(3)) == NoiseLevel(0.0, 9.0)
    assert check_noise([2, -50]) == NoiseLevel(2.0, -50.0)  # a camera offset below
    assert check_noise(np.array([0.5, 1.0])) == NoiseLevel(0.5, 1.0)
    assert check_noise(NoiseLevel(1.0, 2.0)) == NoiseLevel(1.0, 2.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"task": "deblur"}, "task 'deblur' does not use it"),
    ({"strength": 0.5}, "fixed strength"),
    ({"strength": 1}, "fixed strength"),
])
def test_noise_where_nothing_uses_it_is_refused(tiny_model, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        restore(np.zeros((32, 32), np.float32), model=tiny_model, noise=5.0, **FAST, **kwargs)
    assert str(info.value).startswith("noise is used by strength='auto' when denoising")
    restore(np.zeros((32, 32), np.float32), model=tiny_model, noise="auto", **FAST, **kwargs)


def test_a_noise_line_below_zero_over_the_image_is_refused_before_the_run(tiny_model,
                                                                        monkeypatch):
    monkeypatch.setattr(TiledRunner, "iter_run", lambda *a, **k: pytest.fail("it ran"))
    image = np.linspace(100, 200, 64 * 64).reshape(64, 64)
    with pytest.raises(ValueError, match="not positive even at the bright end"):
        restore(image, model=tiny_model, noise=(1.0, -500.0), **FAST)


def test_a_camera_offset_leaves_dark_pixels_without_variance(smoothing_probe, tiny_model):
    image = _noisy(seed=4) * 1000 + 100  # 100 ADU of camera offset under the signal
    kwargs = {"model": tiny_model, "normalize": "percentile", **FAST}
    restore(image, noise=(2.0, 16.0 - 2.0 * 100), **kwargs)  # gain 2, read sd 4
    with_offset = smoothing_probe[-1]
    restore(image - 100, noise=(2.0, 16.0), **kwargs)  # the same camera, offset removed
    np.testing.assert_allclose(smoothing_probe[-1], with_offset, rtol=1e-5, atol=1e-7)


def test_result_layers_record_the_noise_level_used(tiny_model):
    from napari.layers import Image

    from napari_mprnet.engine.noise_level import noise_record

    layer = Image(_noisy(seed=7).astype(np.float32), name="cells")
    kwargs = {"model": tiny_model, **FAST}
    meta = [restore(layer, noise=noise, **kwargs).metadata["napari_mprnet"]
            for noise in (None, 0.02, (0.01, 0.0004))]
    assert [m.get("noise") for m in meta] == [
        "estimated", {"sd": 0.02}, {"gain": 0.01, "offset_variance": 0.0004}]
    assert meta[0]["task"] == "denoise" and meta[0]["stage"] == "final"
    assert "noise" not in restore(layer, strength=1.0, **kwargs).metadata["napari_mprnet"]
    assert "noise" not in restore(layer, task="deblur", **kwargs).metadata["napari_mprnet"]
    assert noise_record("auto", " AUTO ") == {"noise": "estimated"}

"""restore(strength=...): SURE weights against the oracle, fixed blends, tiling independence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_mprnet import restore
from napari_mprnet.engine import strength as st
from napari_mprnet.engine.pipeline import Restorer

FAST = {"device": "cpu", "tile_overlap": 8}


def _scene(size=128, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    blocks = (ndimage.zoom(rng.random((8, 8)), size / 8, order=0) - 0.5) * 0.3
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.0) * 0.08
    return np.clip(0.5 + 0.2 * np.sin(4 * xx + 3 * yy) + blocks + texture, 0.05, 0.95)


def _smoother(sigma):
    def forward(batch):
        return ndimage.gaussian_filter(batch, (0, sigma, sigma, 0)).astype(np.float32)
    return forward


def _oracle(clean, x, fx):
    d = fx - x
    return float(np.sum((clean - x) * d) / np.sum(d * d))


@pytest.mark.parametrize(("noise", "blur"), [(3 / 255, 2.0), (25 / 255, 1.0), (25 / 255, 3.0)])
def test_sure_weight_equals_the_oracle_weight(noise, blur):
    clean = _scene(256, seed=1)[None, ..., None]
    x = (clean + np.random.default_rng(2).normal(0, noise, clean.shape)).astype(np.float32)
    forward = _smoother(blur)
    fx = forward(x)
    oracle = _oracle(clean, x, fx)
    # with the true variance
    direction = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    eps = 0.5 * noise
    num, den = st.sure_weight(x, fx, forward(x + eps * direction), direction, eps,
                              np.full(x.shape, noise**2))
    assert num / den == pytest.approx(oracle, abs=0.03)
    # end to end: the noise estimated from the image itself (raised by the safety margin)
    measured = st.probe_weights(lambda b: forward(b), x)[0]
    assert measured == pytest.approx(np.clip(oracle * st.NOISE_MARGIN, 0, st.MAX_WEIGHT),
                                     abs=0.08)


def test_oversmoothing_of_a_nearly_clean_image_gets_a_small_weight():
    clean = _scene(128, seed=4)[None, ..., None]
    x = (clean + np.random.default_rng(5).normal(0, 2 / 255, clean.shape)).astype(np.float32)
    assert st.probe_weights(_smoother(3.0), x)[0] < 0.2
    noisy = (clean + np.random.default_rng(6).normal(0, 0.1, clean.shape)).astype(np.float32)
    assert st.probe_weights(_smoother(1.0), noisy)[0] > 0.7


def test_groups_share_one_weight_and_small_or_clean_windows_are_safe():
    clean = _scene(64, seed=7)
    rng = np.random.default_rng(8)
    planes = np.stack([clean + rng.normal(0, s, clean.shape) for s in (0.01, 0.05, 0.1)])
    planes = planes[..., None].astype(np.float32)
    separate = st.probe_weights(_smoother(1.5), planes)
    together = st.probe_weights(_smoother(1.5), planes, group=3)
    assert separate.shape == (3,) and together.shape == (1,)
    assert separate.min() <= together[0] <= separate.max()
    assert st.probe_weights(_smoother(1.0), planes[:, :20, :20])[0] == 1.0  # too small
    flat = np.full((1, 64, 64, 1), 0.3, np.float32)
    assert st.probe_weights(_smoother(1.0), flat)[0] == 0.0  # no noise: keep the input
    with pytest.raises(ValueError, match="multiple of 3"):
        st.probe_weights(_smoother(1.0), planes[:2], group=3)


def test_probe_window_is_central_and_clipped():
    assert st.probe_window(1000, 300) == (slice(372, 628), slice(22, 278))
    assert st.probe_window(100, 50) == (slice(0, 100), slice(0, 50))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "strong", ""])
def test_bad_strengths_are_refused_with_one_line(bad, tiny_model):
    with pytest.raises(ValueError, match="strength") as info:
        restore(np.zeros((32, 32), np.float32), model=tiny_model, strength=bad, **FAST)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [None, True, [1.0]])
def test_strengths_of_the_wrong_type_are_refused(bad, tiny_model):
    with pytest.raises(TypeError, match="strength"):
        Restorer(tiny_model, strength=bad)


def test_fixed_strengths_blend_input_and_network_output(tiny_model):
    image = _scene(48, seed=9).astype(np.float32)
    kwargs = {"model": tiny_model, "tile_size": 32, "normalize": "none", **FAST}
    network = restore(image, strength=1.0, **kwargs)
    np.testing.assert_allclose(restore(image, strength=0, **kwargs), image, atol=1e-6)
    np.testing.assert_allclose(restore(image, strength=0.25, **kwargs),
                               image + 0.25 * (network - image), atol=1e-5)
    assert st.check_strength(" AUTO ") == "auto" and st.check_strength(1) == 1.0
    assert st.fixed_weight("auto", "deblur") == 1.0 and st.fixed_weight("auto", "denoise") is None
    # deblur: "auto" is the network output; stages are never blended
    np.testing.assert_array_equal(
        restore(image, task="deblur", **kwargs), restore(image, task="deblur", strength=1.0,
                                                         **kwargs))
    final, stage2, _ = restore(image, stages=True, strength=0, **kwargs)
    np.testing.assert_allclose(final, image, atol=1e-6)
    assert not np.allclose(stage2, image, atol=1e-4)


def test_auto_weights_do_not_depend_on_tiling(tiny_model, monkeypatch):
    rng = np.random.default_rng(10)
    image = np.stack([_scene(100, seed=s) for s in (11, 12)])
    image = (image + rng.normal(0, 0.03, image.shape)).astype(np.float32)
    seen = []
    original = st.probe_weights

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr("napari_mprnet.engine.pipeline.probe_weights", recording)
    kwargs = {"model": tiny_model, "normalize": "none", "precision": "fp32", **FAST}
    for tile in (32, 64, 104):
        auto = restore(image, tile_size=tile, **kwargs)
        network = restore(image, tile_size=tile, strength=1.0, **kwargs)
        w = seen[-1].reshape(-1, 1, 1)
        np.testing.assert_allclose(auto, image + w * (network - image), atol=1e-5)
    assert len(seen) == 3 and seen[0].shape == (2,)
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[0], seen[2])


def test_probe_windows_bypass_a_backend_compiled_for_the_tile_shape(tiny_model):
    restorer = Restorer(tiny_model, **FAST)
    runner = restorer.runner
    windows = np.random.default_rng(0).random((2, 40, 48, 3)).astype(np.float32)
    eager = runner.forward_window(windows)

    class TileShapedBackend:  # stands for a compiled backend: only the tile shape may run
        fixed_shape = True
        split_patches = runner.backend.split_patches

        def __call__(self, batch, stages):
            raise AssertionError("a compiled-for-tiles backend ran the probe window")

    compiled = TileShapedBackend()
    runner.backend = compiled
    np.testing.assert_array_equal(runner.forward_window(windows), eager)
    assert runner.backend is compiled  # put back afterwards

"""restore(strength=...): SURE weights against the oracle, fixed blends, tiling independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.optimize import lsq_linear

from napari_mprnet import restore
from napari_mprnet.engine import bands
from napari_mprnet.engine import strength as st
from napari_mprnet.engine.noise import estimate_noise
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


def _today(x, fx, f_probe, direction, eps, variance):
    """The one-weight SURE formula: (sum v - sum d v (f_probe - fx) / eps) / ||fx - x||^2."""
    x, fx = x.astype(np.float64), fx.astype(np.float64)
    divergence = np.sum(direction * variance * (f_probe - fx)) / eps
    return (np.sum(variance) - divergence) / np.sum((fx - x) ** 2)


@pytest.mark.parametrize(("noise", "blur"), [(3 / 255, 2.0), (25 / 255, 1.0), (25 / 255, 3.0)])
def test_one_band_sure_weight_equals_the_oracle_weight(noise, blur):
    clean = _scene(256, seed=1)[None, ..., None]
    x = (clean + np.random.default_rng(2).normal(0, noise, clean.shape)).astype(np.float32)
    forward = _smoother(blur)
    fx = forward(x)
    oracle = _oracle(clean, x, fx)
    # with the true variance
    direction = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    eps = 0.5 * noise
    f_probe, variance = forward(x + eps * direction), np.full(x.shape, noise**2)
    a, c = st.sure_terms(x[0], fx[0], f_probe[0], direction[0], eps, variance[0], bands=False)
    assert -c[0] / a[0, 0] == pytest.approx(oracle, abs=0.03)
    # G = 0 reduces exactly to the one-weight formula (second band empty: equal weights)
    assert a[1, 1] == 0 and c[1] == 0
    assert -c[0] / a[0, 0] == pytest.approx(_today(x, fx, f_probe, direction, eps, variance),
                                            rel=1e-9)
    w = st.box_weights(a, c)
    assert w[0] == w[1] == np.clip(-c[0] / a[0, 0], 0, 1)
    # end to end: the noise estimated from the image itself (raised by the safety margin)
    measured = st.probe_weights(lambda b: forward(b), x, bands=False)[0]
    assert measured[0] == measured[1]
    margin = st.estimated_noise(x[0])[0, 1] / estimate_noise(x[0, ..., 0])[1]
    assert margin in (1.0, pytest.approx(st.NOISE_MARGIN))
    assert measured[0] == pytest.approx(np.clip(oracle * margin, 0, st.MAX_WEIGHT), abs=0.08)


def test_margin_raises_estimated_poisson_gaussian_lines_only():
    clean = _scene(256, seed=21)
    rng = np.random.default_rng(22)
    gaussian = clean + rng.normal(0, 10 / 255, clean.shape)
    photons = 50.0
    poisson = rng.poisson(clean * photons) / photons
    for image, raised in ((gaussian, False), (poisson, True)):
        plain = np.array(estimate_noise(image))
        used = st.estimated_noise(image[..., None])[0]
        assert (plain[0] > 0) == raised  # the estimator tells the two noises apart here
        np.testing.assert_allclose(used, plain * (st.NOISE_MARGIN if raised else 1.0))


def _biased_denoiser(alpha=0.9, blur=1.5, bias=None):
    """A linear stand-in with a known Jacobian: x + alpha (B x - x) + a smooth bias, where B
    is a Gaussian blur; the bias is a low-frequency error a good denoiser would not make."""
    def forward(batch):
        smooth = ndimage.gaussian_filter(batch, (0, blur, blur, 0))
        return (batch + alpha * (smooth - batch) + bias).astype(np.float32)
    return forward


def test_two_band_weights_match_the_oracle_where_one_weight_cannot():
    size, noise = 128, 0.03
    clean = _scene(size, seed=13)[None, ..., None]
    rng = np.random.default_rng(14)
    x = (clean + rng.normal(0, noise, clean.shape)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size] / size
    bias = (0.04 * np.cos(3 * xx) * np.sin(2 * yy + 1))[None, ..., None]
    forward = _biased_denoiser(bias=bias)
    fx = forward(x).astype(np.float64)
    h = fx - x
    low = ndimage.gaussian_filter(h, (0, 2, 2, 0), mode="reflect")
    parts = np.stack([(h - low).ravel(), low.ravel()], 1)
    # the best two weights in the box, knowing the clean image
    oracle = lsq_linear(parts, (clean - x).ravel(), bounds=(0, 1)).x
    assert 0.4 < oracle[0] < 0.8 and oracle[1] < 0.01  # the bias is all harm

    def error(weights):
        return float(np.mean((x.ravel() + parts @ weights - clean.ravel()) ** 2))

    best_single = np.clip(_oracle(clean, x, fx), 0, 1)  # the best one weight, same knowledge
    # SURE with the true variance finds the oracle's two weights
    direction = rng.standard_normal(x.shape).astype(np.float32)
    eps = 0.05 * noise
    a, c = st.sure_terms(x[0], fx[0], forward(x + eps * direction)[0], direction[0], eps,
                         np.full(x.shape[1:], noise**2))
    w = st.box_weights(a, c)
    np.testing.assert_allclose(w, oracle, atol=0.03)
    assert error(w) < 0.8 * error(np.full(2, best_single))
    # end to end, with the noise estimated from the image (raised by the safety margin)
    measured = st.probe_weights(forward, x)[0]
    margin = st.estimated_noise(x[0])[0, 1] / estimate_noise(x[0, ..., 0])[1]
    np.testing.assert_allclose(measured, np.clip(oracle * margin, 0, 1), atol=0.08)
    assert error(measured) < 0.85 * error(np.full(2, best_single))


def test_box_weights_is_the_exact_minimum_on_the_box():
    rng = np.random.default_rng(15)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, 401)] * 2, indexing="ij"), -1)
    grid = grid.reshape(-1, 2)
    cases = []
    for _ in range(30):
        m = rng.normal(size=(2, 2)) * rng.uniform(0.1, 3)
        cases.append((m @ m.T, rng.normal(size=2) * 2))
    v = rng.normal(size=2)
    cases += [(np.outer(v, v), rng.normal(size=2)) for _ in range(5)]  # singular
    cases += [(np.eye(2), np.array([-2.0, 0.5])), (np.eye(2), np.array([0.3, -0.4]))]
    for a, c in cases:
        w = st.box_weights(a, c)
        assert np.all((w >= 0) & (w <= 1))
        q = np.einsum("ni,ij,nj->n", grid, a, grid) + 2 * grid @ c
        assert w @ a @ w + 2 * c @ w <= q.min() + 1e-9
    # interior minimum: the unconstrained solution itself
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(st.box_weights(a, -a @ [0.3, 0.6]), [0.3, 0.6], atol=1e-12)
    # no residual at all: the network output; one empty band takes the other's weight
    np.testing.assert_array_equal(st.box_weights(np.zeros((2, 2)), [0.5, -0.5]), [1, 1])
    np.testing.assert_array_equal(st.box_weights(np.diag([4.0, 0.0]), [-1.0, 3.0]),
                                  [0.25, 0.25])
    np.testing.assert_array_equal(st.box_weights(np.diag([0.0, 2.0]), [3.0, -5.0]), [1, 1])


def test_low_band_diagonal_is_exact_at_the_borders():
    h, w = 13, 10
    operator = np.stack([ndimage.gaussian_filter(np.eye(h * w)[k].reshape(h, w), 2.0,
                                                 mode="reflect").ravel()
                         for k in range(h * w)], 1)  # column k: G applied to impulse k
    diagonal = bands.low_band_diagonal(h, w)
    np.testing.assert_allclose(diagonal.ravel(), np.diag(operator), atol=1e-12)
    assert diagonal[0, 0] > 1.5 * diagonal[h // 2, w // 2]  # not constant near the border
    rng = np.random.default_rng(16)
    x, fx, f_probe, d, v = rng.random((5, h, w, 1))
    np.testing.assert_allclose(bands.low_band(fx)[..., 0],
                               (operator @ fx.ravel()).reshape(h, w), atol=1e-12)
    # SURE's terms with the exact (dense) band operators
    residual, response = (fx - x).ravel(), (f_probe - fx).ravel() / 0.1
    projectors = (np.eye(h * w) - operator, operator)
    a, c = st.sure_terms(x, fx, f_probe, d, 0.1, v)
    np.testing.assert_allclose(a, [[(p @ residual) @ (q @ residual) for q in projectors]
                                   for p in projectors], rtol=1e-10)
    np.testing.assert_allclose(c, [np.sum(d.ravel() * v.ravel() * (p @ response))
                                   - np.sum(v.ravel() * np.diag(p)) for p in projectors],
                               rtol=1e-10)


def test_tile_low_band_is_the_same_bits_for_every_batch_and_layout():
    rng = np.random.default_rng(17)
    out, inp = rng.random((2, 3, 40, 24, 1), dtype=np.float32)
    low = bands.residual_low_band(out, inp)
    expected = ndimage.gaussian_filter((out - inp).astype(np.float64), (0, 2, 2, 0),
                                       mode="reflect")
    np.testing.assert_allclose(low, expected, atol=1e-6)
    np.testing.assert_array_equal(bands.residual_low_band(out[1:2], inp[1:2]), low[1:2])
    as_tensors = bands.residual_low_band(torch.from_numpy(out).permute(0, 3, 1, 2),
                                         torch.from_numpy(inp).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(as_tensors.permute(0, 2, 3, 1).numpy(), low)
    tiny = rng.random((1, 16, 5, 1), dtype=np.float32)  # shorter than the filter's reach
    np.testing.assert_allclose(bands.residual_low_band(tiny, 0 * tiny)[0, ..., 0],
                               ndimage.gaussian_filter(tiny[0, ..., 0].astype(np.float64), 2.0,
                                                       mode="reflect"), atol=1e-6)


def test_oversmoothing_of_a_nearly_clean_image_gets_a_small_weight():
    clean = _scene(128, seed=4)[None, ..., None]
    x = (clean + np.random.default_rng(5).normal(0, 2 / 255, clean.shape)).astype(np.float32)
    assert st.probe_weights(_smoother(3.0), x)[0, 0] < 0.2
    noisy = (clean + np.random.default_rng(6).normal(0, 0.1, clean.shape)).astype(np.float32)
    assert st.probe_weights(_smoother(1.0), noisy)[0, 0] > 0.7


def test_groups_share_their_weights_and_small_or_clean_windows_are_safe():
    clean = _scene(64, seed=7)
    rng = np.random.default_rng(8)
    planes = np.stack([clean + rng.normal(0, s, clean.shape) for s in (0.01, 0.05, 0.1)])
    planes = planes[..., None].astype(np.float32)
    separate = st.probe_weights(_smoother(1.5), planes, bands=False)[:, 0]
    together = st.probe_weights(_smoother(1.5), planes, group=3, bands=False)[:, 0]
    assert separate.shape == (3,) and together.shape == (1,)
    assert separate.min() <= together[0] <= separate.max()
    assert st.probe_weights(_smoother(1.5), planes, group=3).shape == (1, 2)
    small = st.probe_weights(_smoother(1.0), planes[:, :20, :20])
    np.testing.assert_array_equal(small, np.ones((3, 2)))  # too small to measure
    flat = np.full((1, 64, 64, 1), 0.3, np.float32)
    np.testing.assert_array_equal(st.probe_weights(_smoother(1.0), flat), [[0, 0]])  # no noise
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
    original = st.iter_probe_weights
    chosen = np.array([[0.7, 0.2], [0.4, 0.9]])  # (the untrained network gets 0 and 0)

    def recording(*args, **kwargs):
        seen.append((yield from original(*args, **kwargs)))
        return chosen

    monkeypatch.setattr("napari_mprnet.engine.pipeline.iter_probe_weights", recording)
    kwargs = {"model": tiny_model, "normalize": "none", "precision": "fp32", **FAST}
    hi, lo = (chosen[:, k].reshape(-1, 1, 1) for k in (0, 1))
    for tile in (32, 64, 104):
        auto = restore(image, tile_size=tile, **kwargs)
        network = restore(image, tile_size=tile, strength=1.0, **kwargs)
        # the low band is filtered tile by tile: the whole plane's only for one tile
        low = ndimage.gaussian_filter(network - image, (0, 2, 2), mode="reflect")
        expected = image + hi * (network - image) + (lo - hi) * low
        # (32 px tiles with 8 px overlaps: at most 0.003, 2% of the mean residual, on average)
        np.testing.assert_allclose(auto, expected, atol=1e-5 if tile > 100 else 0.01)
        assert np.abs(auto - expected).mean() < (1e-7 if tile > 100 else 5e-4)
    assert len(seen) == 3 and seen[0].shape == (2, st.PLANE_COLUMNS)  # weights, impulses
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

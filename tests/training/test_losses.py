"""The paper's losses against a direct numpy evaluation of the formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mprnet.training.losses import charbonnier_loss, edge_loss, laplacian, mprnet_loss

EPS = 1e-3
TAPS = np.array([0.05, 0.25, 0.4, 0.25, 0.05])


def _ref_charbonnier(a: np.ndarray, b: np.ndarray, eps: float = EPS) -> float:
    return float(np.mean(np.sqrt((a - b) ** 2 + eps**2)))


def _ref_gauss(plane: np.ndarray) -> np.ndarray:
    """Explicit 5x5 correlation of one 2-D plane with explicit replicate padding."""
    h, w = plane.shape
    padded = np.empty((h + 4, w + 4))
    for i in range(h + 4):
        for j in range(w + 4):
            padded[i, j] = plane[min(max(i - 2, 0), h - 1), min(max(j - 2, 0), w - 1)]
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for u in range(5):
                for v in range(5):
                    out[i, j] += TAPS[u] * TAPS[v] * padded[i + u, j + v]
    return out


def _ref_laplacian(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = x[n, c]
            blurred = _ref_gauss(plane)
            up = np.zeros_like(plane)
            for i in range(0, plane.shape[0], 2):
                for j in range(0, plane.shape[1], 2):
                    up[i, j] = 4 * blurred[i, j]
            out[n, c] = plane - _ref_gauss(up)
    return out


def _pair(channels: int, h: int = 7, w: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.random((2, channels, h, w))
    b = rng.random((2, channels, h, w))
    return a, b


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_charbonnier_matches_formula(channels):
    a, b = _pair(channels)
    got = charbonnier_loss(torch.from_numpy(a), torch.from_numpy(b))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(_ref_charbonnier(a, b), rel=1e-12)


def test_charbonnier_of_identical_is_eps():
    x = torch.rand(1, 3, 8, 8)
    assert charbonnier_loss(x, x).item() == pytest.approx(EPS, rel=1e-5)
    assert charbonnier_loss(x, x, eps=0.1).item() == pytest.approx(0.1, rel=1e-6)


@pytest.mark.parametrize("channels,h,w", [(1, 7, 10), (3, 8, 9), (4, 5, 6)])
def test_laplacian_matches_explicit_reference(channels, h, w):
    a, _ = _pair(channels, h, w)
    got = laplacian(torch.from_numpy(a))
    assert got.shape == a.shape and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _ref_laplacian(a), rtol=1e-10, atol=1e-12)


def test_laplacian_float32_keeps_dtype():
    a, _ = _pair(3, 6, 6)
    got = laplacian(torch.from_numpy(a).float())
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), _ref_laplacian(a), atol=1e-5)


def test_laplacian_of_constant_is_reference_not_necessarily_zero():
    x = np.full((1, 1, 6, 7), 0.5)
    got = laplacian(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _ref_laplacian(x), atol=1e-12)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_edge_loss_matches_formula(channels):
    a, b = _pair(channels, 7, 8, seed=channels)
    got = edge_loss(torch.from_numpy(a), torch.from_numpy(b))
    want = _ref_charbonnier(_ref_laplacian(a), _ref_laplacian(b))
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_edge_loss_of_constant_offset_matches_reference():
    a, _ = _pair(3, 6, 7)
    b = a + 0.3
    got = edge_loss(torch.from_numpy(a), torch.from_numpy(b)).item()
    assert got == pytest.approx(_ref_charbonnier(_ref_laplacian(a), _ref_laplacian(b)), rel=1e-10)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_mprnet_loss_is_sum_over_stages(channels):
    rng = np.random.default_rng(1)
    target = rng.random((2, channels, 6, 8))
    stages = [rng.random(target.shape) for _ in range(3)]
    want = sum(
        _ref_charbonnier(s, target)
        + 0.05 * _ref_charbonnier(_ref_laplacian(s), _ref_laplacian(target))
        for s in stages
    )
    got = mprnet_loss([torch.from_numpy(s) for s in stages], torch.from_numpy(target))
    assert got.item() == pytest.approx(want, rel=1e-10)
    got2 = mprnet_loss(
        [torch.from_numpy(s) for s in stages], torch.from_numpy(target), edge_weight=0.0
    )
    assert got2.item() == pytest.approx(sum(_ref_charbonnier(s, target) for s in stages))


def test_gradients_flow_to_every_stage():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 9, 11)
    stages = [torch.rand(2, 3, 9, 11, requires_grad=True) for _ in range(3)]
    loss = mprnet_loss(stages, target)
    loss.backward()
    for stage in stages:
        assert stage.grad is not None
        assert torch.isfinite(stage.grad).all()
        assert stage.grad.abs().sum() > 0


def test_gradient_finite_for_identical_inputs():
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    edge_loss(x, x.detach()).backward()
    assert torch.isfinite(x.grad).all()


def test_shape_errors():
    a = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        charbonnier_loss(a, torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="same shape"):
        edge_loss(a, torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="4-D"):
        laplacian(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="4-D"):
        charbonnier_loss(torch.rand(8, 8), torch.rand(8, 8))
    with pytest.raises(ValueError, match="empty"):
        mprnet_loss([], a)
    with pytest.raises(ValueError, match="stage 1"):
        mprnet_loss([a, torch.rand(1, 3, 4, 4)], a)

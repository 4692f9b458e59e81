"""PSNR and SSIM against scikit-image on random images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_mprnet.training.metrics import psnr, ssim

metrics = pytest.importorskip("skimage.metrics")
SK_SSIM = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def _pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    clean = rng.random(shape)
    noisy = np.clip(clean + noise * rng.standard_normal(shape), 0, 1)
    return noisy, clean


@pytest.mark.parametrize("shape", [(32, 40), (17, 23)])
def test_psnr_matches_skimage(shape):
    a, b = _pair(shape)
    assert psnr(a, b) == pytest.approx(metrics.peak_signal_noise_ratio(b, a, data_range=1.0))
    assert psnr(a * 255, b * 255, data_range=255) == pytest.approx(psnr(a, b))


@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_ssim_matches_skimage_grey(noise):
    a, b = _pair((48, 56), seed=1, noise=noise)
    expected = metrics.structural_similarity(a, b, data_range=1.0, **SK_SSIM)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)


def test_ssim_matches_skimage_rgb_numpy_and_torch():
    a, b = _pair((40, 44, 3), seed=2)
    expected = metrics.structural_similarity(a, b, data_range=1.0, channel_axis=-1, **SK_SSIM)
    assert ssim(a, b, channel_axis=-1) == pytest.approx(expected, abs=1e-6)
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float()
    assert ssim(ta, tb) == pytest.approx(expected, abs=1e-3)
    assert psnr(ta, tb) == pytest.approx(metrics.peak_signal_noise_ratio(b, a, data_range=1),
                                         abs=1e-4)


def test_ssim_data_range_and_batches():
    a, b = _pair((2, 1, 32, 32), seed=3)
    expected = np.mean([
        metrics.structural_similarity(a[i, 0] * 4, b[i, 0] * 4, data_range=4.0, **SK_SSIM)
        for i in range(2)
    ])
    assert ssim(torch.from_numpy(a * 4), torch.from_numpy(b * 4), data_range=4.0) == \
        pytest.approx(expected, abs=1e-6)


def test_identical_images():
    a, _ = _pair((24, 24))
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a.astype(np.uint8), a.astype(np.uint8), data_range=255) == pytest.approx(1.0)


def test_errors():
    a, b = _pair((24, 24))
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, b[:20])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:8, :8], b[:8, :8])
    with pytest.raises(ValueError, match="data_range"):
        psnr(a, b, data_range=0)
    with pytest.raises(ValueError, match="2 dimensions"):
        ssim(a[0], b[0])

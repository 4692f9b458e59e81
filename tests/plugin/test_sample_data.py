"""Sample images: deterministic noisy/clean pairs, and napari LayerData tuples."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_mprnet import _sample_data as samples


def test_noisy_cells_pair():
    noisy, clean = samples.noisy_cells()
    assert noisy.shape == clean.shape == samples.CELLS_SHAPE
    assert noisy.dtype == clean.dtype == np.uint16
    residual = noisy.astype(float) - clean
    assert abs(residual.mean()) < 2.0  # zero-mean camera noise
    assert 4.0 < residual.std() < clean.std()  # visibly noisy, structure still there
    again = samples.noisy_cells()
    assert np.array_equal(again[0], noisy) and np.array_equal(again[1], clean)


def test_noisy_natural_pair():
    noisy, clean = samples.noisy_natural()
    assert noisy.shape == clean.shape == (512, 512)
    assert noisy.dtype == clean.dtype == np.uint8
    residual = noisy.astype(float) - clean
    assert 20.0 < residual.std() < 26.0  # sigma 25, a little less after clipping
    assert np.array_equal(samples.noisy_natural()[0], noisy)


def test_natural_without_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import fails
    noisy, clean = samples.noisy_natural()
    assert noisy.shape == clean.shape == (512, 512)
    assert noisy.dtype == np.uint8 and clean.std() > 20


def _gradient_energy(image: np.ndarray) -> float:
    grey = image.astype(float) if image.ndim == 2 else image.astype(float).mean(-1)
    return float(np.mean(np.diff(grey, axis=0) ** 2) + np.mean(np.diff(grey, axis=1) ** 2))


@pytest.mark.parametrize(("make", "shape", "dtype", "value_range"), [
    (samples.blurred_cells, samples.CELLS_SHAPE, np.uint16, 4000.0),
    (samples.blurred_natural, (512, 512), np.uint8, 255.0),
])
def test_blurred_pairs(make, shape, dtype, value_range):
    blurred, sharp = make()
    assert blurred.shape == sharp.shape == shape
    assert blurred.dtype == sharp.dtype == dtype
    # blurring removes most of the fine detail, keeps the mean
    assert _gradient_energy(blurred) < 0.7 * _gradient_energy(sharp)
    assert abs(blurred.astype(float).mean() - sharp.astype(float).mean()) < 0.01 * value_range
    again = make()
    assert np.array_equal(again[0], blurred) and np.array_equal(again[1], sharp)


def test_blurred_cells_is_the_documented_blur_of_the_sharp_image():
    from napari_mprnet.training.degradations import blur, blur_kernel

    blurred, sharp = samples.blurred_cells()
    unit = (sharp.astype(np.float32) - 100.0) / 4000.0
    expected = blur(unit, blur_kernel("gaussian", sigma=2.0)) * 4000.0 + 100.0
    residual = blurred.astype(float) - expected
    assert abs(residual.mean()) < 1.0
    assert 0.7 * 4000 / 255 < residual.std() < 1.3 * 4000 / 255  # noise sigma 1/255 of range


def test_rainy_pair_only_brightens():
    rainy, clean = samples.rainy_natural()
    assert rainy.shape == clean.shape == (512, 512, 3) and rainy.dtype == np.uint8
    diff = rainy.astype(int) - clean.astype(int)
    assert diff.min() >= -1  # screen blending only brightens (up to rounding)
    streaked = (diff > 10).any(-1).mean()
    assert 0.03 < streaked < 0.6
    assert np.array_equal(samples.rainy_natural()[0], rainy)


def test_degraded_pair_checks_task_and_sample():
    noisy, _ = samples.degraded_pair("denoise", "cells")
    assert np.array_equal(noisy, samples.noisy_cells()[0])
    assert samples.degraded_pair("derain", "natural")[0].ndim == 3
    with pytest.raises(ValueError, match="no 'cells' sample for derain"):
        samples.degraded_pair("derain", "cells")
    with pytest.raises(ValueError, match="task must be one of"):
        samples.degraded_pair("sharpen", "cells")


def test_sample_layer_data():
    for make, degraded, stem, dtype in (
        (samples.cells_sample, "noisy", "cells", np.uint16),
        (samples.natural_sample, "noisy", "camera", np.uint8),
        (samples.blurred_cells_sample, "blurred", "cells", np.uint16),
        (samples.blurred_natural_sample, "blurred", "camera", np.uint8),
        (samples.rainy_sample, "rainy", "photo", np.uint8),
    ):
        layers = make()
        assert [meta["name"] for _, meta, _ in layers] == [
            f"clean {stem}", f"{degraded} {stem}"
        ]
        assert layers[0][1]["visible"] is False
        assert all(kind == "image" and data.dtype == dtype for data, _, kind in layers)
    rgb = samples.rainy_sample()
    assert "colormap" not in rgb[1][1]  # RGB layers take no colormap


def test_open_sample_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mprnet", "cells")
    assert [layer.name for layer in viewer.layers] == ["clean cells", "noisy cells"]
    viewer.open_sample("napari-mprnet", "rainy")
    assert viewer.layers["rainy photo"].rgb and viewer.layers["rainy photo"].data.shape == (
        512, 512, 3)

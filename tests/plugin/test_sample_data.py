"""Sample images: deterministic noisy/clean pairs, and napari LayerData tuples."""

from __future__ import annotations

import sys

import numpy as np

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


def test_sample_layer_data():
    for make, stem, dtype in (
        (samples.cells_sample, "cells", np.uint16),
        (samples.natural_sample, "camera", np.uint8),
    ):
        layers = make()
        assert [meta["name"] for _, meta, _ in layers] == [
            f"clean {stem}", f"noisy {stem}"
        ]
        assert all(kind == "image" and data.dtype == dtype for data, _, kind in layers)


def test_open_sample_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mprnet", "cells")
    assert [layer.name for layer in viewer.layers] == ["clean cells", "noisy cells"]

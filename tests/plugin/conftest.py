"""Fixtures for the napari plugin tests: isolated settings, a tiny model file, and a record of
napari notifications."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mprnet import MPRNet, MPRNetConfig, save_model
from napari_mprnet._widgets import _jobs
from napari_mprnet._widgets.settings import SETTINGS_ENV

TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Settings go to a temporary file, never the user's config folder."""
    path = tmp_path / "settings" / "settings.json"
    monkeypatch.setenv(SETTINGS_ENV, str(path))
    return path


@pytest.fixture
def tiny_model_file(tmp_path):
    torch.manual_seed(0)
    return save_model(MPRNet(TINY).eval(), tmp_path / "tiny.safetensors")


@pytest.fixture
def notes(monkeypatch):
    """Messages shown through napari's notifications, as ``(severity, message)``."""
    from napari.utils import notifications

    shown: list[tuple[str, str]] = []
    for severity in ("error", "warning", "info"):
        monkeypatch.setattr(
            notifications, f"show_{severity}",
            lambda message, _s=severity: shown.append((_s, str(message))),
        )
    return shown


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8)


@pytest.fixture(autouse=True)
def no_leftover_jobs(qtbot):
    yield
    qtbot.waitUntil(lambda: not _jobs._ACTIVE_JOBS, timeout=20000)

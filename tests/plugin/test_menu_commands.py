"""Layers > Filter > Restore > Denoise / Deblur / Derain on the selected layer."""

from __future__ import annotations

import numpy as np

from napari_mprnet._widgets import _jobs
from napari_mprnet._widgets.menu_commands import restore_deblur, restore_denoise
from napari_mprnet._widgets.settings import RestoreSettings, WeightsChoice, save_settings

TIMEOUT = 30000


def save_tiny_settings(model_file, task="denoise", **options):
    settings = RestoreSettings(**options)
    settings.weights[task] = WeightsChoice(source="file", file=str(model_file))
    save_settings(settings)


def test_menu_command_restores_selected_layer(make_napari_viewer, qtbot, tiny_model_file, image):
    save_tiny_settings(tiny_model_file, stages=True)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="other")
    viewer.add_image(image, name="cells", scale=(2.0, 3.0))
    viewer.layers.selection.active = viewer.layers["other"]
    job = restore_denoise(viewer)
    assert job is not None and job.request.model == str(tiny_model_file)
    qtbot.waitUntil(lambda: not job.running, timeout=TIMEOUT)
    assert job.state == "done"
    names = [layer.name for layer in viewer.layers]
    assert names[2:] == ["other (denoised, stage 1)", "other (denoised, stage 2)",
                         "other (denoised)"]
    assert tuple(viewer.layers["other (denoised)"].scale) == (1.0, 1.0)


def test_menu_command_through_napari(make_napari_viewer, qtbot, tiny_model_file, image):
    """Executed by id, as the menu does: napari injects the viewer."""
    from napari._app_model import get_app_model

    save_tiny_settings(tiny_model_file)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    get_app_model().commands.execute_command("napari-mprnet.restore_denoise").result()
    qtbot.waitUntil(lambda: "cells (denoised)" in viewer.layers, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not _jobs._ACTIVE_JOBS, timeout=TIMEOUT)


def test_menu_command_uses_bundled_model_of_its_task(make_napari_viewer, tiny_model_file,
                                                     image, monkeypatch):
    save_tiny_settings(tiny_model_file, task="denoise")  # a denoise file: not for deblur
    monkeypatch.setattr(_jobs.RestoreJob, "start", lambda self: self)  # don't run
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    job = restore_deblur(viewer)
    assert job.request.task == "deblur"
    assert job.request.model is None  # the bundled deblur model


def test_menu_command_needs_an_image_layer(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    assert restore_denoise(viewer) is None
    viewer.add_points(np.array([[1.0, 2.0]]), name="spots")
    assert restore_denoise(viewer) is None
    assert [severity for severity, _ in notes] == ["warning", "warning"]
    assert "no layer is selected" in notes[0][1]
    assert "'spots' is a Points layer" in notes[1][1]
    assert len(viewer.layers) == 1


def test_menu_command_failure_is_a_notification(make_napari_viewer, qtbot, tmp_path, image,
                                                notes):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 64)
    save_tiny_settings(bad)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    job = restore_denoise(viewer)
    qtbot.waitUntil(lambda: not job.running, timeout=TIMEOUT)
    assert job.state == "failed"
    assert [severity for severity, _ in notes] == ["error"]
    assert "bad.pth" in notes[0][1]
    assert len(viewer.layers) == 1

"""The Restore dock widget, driven like a user would, with a tiny model file."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils import progress

from napari_mprnet._widgets.restore_widget import RestoreWidget
from napari_mprnet._widgets.settings import load_settings
from napari_mprnet._widgets.weights_registry import register_weights, unregister_weights

TIMEOUT = 30000


def make_widget(viewer, model_file=None) -> RestoreWidget:
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget)
    if model_file is not None:
        use_file(widget, model_file)
    return widget


def use_file(widget: RestoreWidget, path) -> None:
    index = widget.weights_combo.findData("file")
    assert index >= 0
    widget.weights_combo.setCurrentIndex(index)
    widget.file_edit.setText(str(path))


def run_and_wait(qtbot, widget: RestoreWidget) -> str:
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT) as blocker:
        widget.run_button.click()
    return blocker.args[0]


def test_restore_adds_layer_placed_like_input(make_napari_viewer, qtbot, tiny_model_file, image):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells", scale=(0.5, 2.0), translate=(10.0, -3.0))
    widget = make_widget(viewer, tiny_model_file)
    assert widget.selected_layer().name == "cells"
    assert run_and_wait(qtbot, widget) == "done"
    out = viewer.layers["cells (denoised)"]
    assert out.data.shape == image.shape
    assert tuple(out.scale) == (0.5, 2.0)
    assert tuple(out.translate) == (10.0, -3.0)
    assert len(viewer.layers) == 2
    assert widget.progress_bar.value() == widget.progress_bar.maximum()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_per_stage_outputs(make_napari_viewer, qtbot, tiny_model_file, image):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    widget.task_combo.setCurrentText("deblur")
    use_file(widget, tiny_model_file)  # weights are chosen per task
    widget.stages_check.setChecked(True)
    assert run_and_wait(qtbot, widget) == "done"
    assert [layer.name for layer in viewer.layers] == [
        "cells",
        "cells (deblurred, stage 1)",
        "cells (deblurred, stage 2)",
        "cells (deblurred)",
    ]


def test_cancel_adds_nothing(make_napari_viewer, qtbot, tiny_model_file, notes):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((224, 224), np.float32), name="big")
    widget = make_widget(viewer, tiny_model_file)
    widget.tile_spin.setValue(32)
    widget.overlap_spin.setValue(8)
    seen = []
    activity = []

    def cancel_on_first(done, total):
        seen.append((done, total))
        if len(seen) == 1:
            # napari's activity dock shows the run too
            activity.extend((p.desc, p.n, p.total) for p in progress._all_instances)
            widget.cancel_button.click()

    widget.progressed.connect(cancel_on_first)
    assert run_and_wait(qtbot, widget) == "cancelled"
    assert seen and seen[0][1] > 20  # many batches: the run really was cut short
    assert len(seen) < seen[0][1]
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert not widget.cancel_button.isEnabled() and widget.run_button.isEnabled()
    assert not [n for n in notes if n[0] == "error"]
    (desc, done, total), = activity
    assert (done, total) == (1, seen[0][1])
    assert desc.startswith("MPRNet denoise: big (1/81 tiles") and "left" in desc
    assert not progress._all_instances  # closed


def test_switching_layers_mid_run(make_napari_viewer, qtbot, tiny_model_file):
    viewer = make_napari_viewer()
    first = viewer.add_image(np.full((48, 48), 0.8, np.float32), name="first",
                             translate=(5, 5))
    viewer.add_image(np.zeros((32, 32), np.float32), name="second")
    viewer.layers.selection.active = first
    widget = make_widget(viewer, tiny_model_file)
    assert widget.layer_combo.currentText() == "first"
    widget.tile_spin.setValue(32)
    widget.overlap_spin.setValue(8)

    shown = []

    def switch(done, total):
        if done == 1:
            viewer.layers.selection.active = viewer.layers["second"]
            first.name = "renamed"
            shown.append((widget.layer_combo.currentText(), widget.run_button.isEnabled(),
                          widget.cancel_button.isEnabled()))

    widget.progressed.connect(switch)
    job = widget.run()
    qtbot.waitUntil(lambda: job.state == "done", timeout=TIMEOUT)
    # the widget followed the new selection: a layer with no job, free to run
    assert shown == [("second", True, False)]
    assert widget.layer_combo.currentText() == "second"  # ...and not the added output
    out = viewer.layers["first (denoised)"]
    assert out.data.shape == (48, 48)
    assert tuple(out.translate) == (5.0, 5.0)
    assert "second (denoised)" not in viewer.layers


def test_bad_weights_file_is_a_notification(make_napari_viewer, qtbot, tmp_path, image, notes):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a model")
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, bad)
    assert run_and_wait(qtbot, widget) == "failed"
    errors = [message for severity, message in notes if severity == "error"]
    assert len(errors) == 1 and "broken.safetensors" in errors[0]
    assert len(viewer.layers) == 1
    assert widget.status_label.text().startswith("Failed")


def test_failure_reaches_napari_notifications(make_napari_viewer, qtbot, tmp_path, image):
    """Without any mocking: the failure arrives as a napari error notification."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    bad = tmp_path / "empty.pth"
    bad.write_bytes(b"")
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, bad)
    received = []
    notification_manager.notification_ready.connect(received.append)
    try:
        assert run_and_wait(qtbot, widget) == "failed"
    finally:
        notification_manager.notification_ready.disconnect(received.append)
    assert [n.severity for n in received] == [NotificationSeverity.ERROR]
    assert "empty.pth" in received[0].message and "empty" in received[0].message
    assert len(viewer.layers) == 1


def test_invalid_setting_is_a_notification(make_napari_viewer, qtbot, tiny_model_file, image,
                                           notes):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    widget.tile_spin.setValue(64)
    widget.overlap_spin.setValue(64)  # overlap must be smaller than the tile
    assert run_and_wait(qtbot, widget) == "failed"
    assert [severity for severity, _ in notes] == ["error"]
    assert "overlap" in notes[0][1]
    assert len(viewer.layers) == 1


def test_missing_model_file_and_no_image_layer(make_napari_viewer, tmp_path, notes):
    viewer = make_napari_viewer()
    viewer.add_points([[1, 1]], name="spots")
    widget = make_widget(viewer, tmp_path / "missing.safetensors")
    assert widget.layer_combo.count() == 0  # only Image layers are offered
    assert widget.run() is None
    viewer.add_image(np.zeros((16, 16)), name="img")
    assert widget.run() is None
    assert [severity for severity, _ in notes] == ["warning", "error"]
    assert "does not exist" in notes[1][1]
    assert len(viewer.layers) == 2


def test_settings_persist(make_napari_viewer, qtbot, tiny_model_file, image, isolated_settings):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    widget.tile_spin.setValue(48)
    widget.overlap_spin.setValue(8)
    widget.precision_combo.setCurrentText("fp32")
    assert run_and_wait(qtbot, widget) == "done"
    assert isolated_settings.is_file()
    saved = load_settings()
    assert saved.tile_size == 48 and saved.tile_overlap == 8
    assert saved.weights["denoise"].source == "file"

    again = make_widget(viewer)
    assert again.tile_spin.value() == 48
    assert again.tile_spin.text() == "48 px"
    assert again.overlap_spin.value() == 8
    assert again.precision_combo.currentText() == "fp32"
    assert again.weights_combo.currentData() == "file"
    assert again.file_edit.text() == str(tiny_model_file)
    again.tile_spin.setValue(again.tile_spin.minimum())
    assert again.tile_spin.text() == "auto"
    assert load_settings().tile_size == "auto"


@pytest.mark.parametrize("trained", [False, True])
def test_untrained_warning_and_device_label(make_napari_viewer, tiny_model_file, monkeypatch,
                                            trained):
    from napari_mprnet._widgets import restore_controls

    monkeypatch.setattr(restore_controls, "bundled_info",
                        lambda task: {"trained": trained, "summary": "stub"})
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    assert widget.weights_combo.currentData() == "bundled"
    assert widget.weights_warning.isHidden() is trained
    if not trained:
        assert "UNTRAINED" in widget.weights_warning.text()
    use_file(widget, tiny_model_file)
    assert widget.weights_warning.isHidden()
    assert widget.device_combo.itemText(0) == "auto"
    widget.device_combo.setCurrentText("cpu")
    assert widget.device_label.text().startswith("runs on cpu")


@pytest.mark.parametrize("as_path", [True, False])
def test_registered_weights_are_offered(make_napari_viewer, qtbot, tiny_model_file, image,
                                        as_path):
    from napari_mprnet import load_model

    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer)
    model = tiny_model_file if as_path else load_model(tiny_model_file)
    register_weights("my cells", model)
    try:
        index = widget.weights_combo.findData("registered:my cells")
        assert widget.weights_combo.itemText(index) == "Fine-tuned: my cells"
        widget.weights_combo.setCurrentIndex(index)
        assert run_and_wait(qtbot, widget) == "done"
        assert "cells (denoised)" in viewer.layers
    finally:
        unregister_weights("my cells")
    assert widget.weights_combo.findData("registered:my cells") == -1


def test_plugin_dock_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-mprnet", "Restore")
    assert isinstance(widget, RestoreWidget)


def test_repeated_runs_keep_the_input_and_number_all_their_layers(make_napari_viewer, qtbot,
                                                                   tiny_model_file, image):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    widget.stages_check.setChecked(True)
    assert run_and_wait(qtbot, widget) == "done"
    assert viewer.layers.selection.active.name == "cells (denoised)"  # napari selects it
    assert widget.layer_combo.currentText() == "cells"  # the widget keeps the input
    viewer.layers.selection.active = viewer.layers["cells (denoised, stage 2)"]
    assert widget.layer_combo.currentText() == "cells"  # never follows to a result
    assert run_and_wait(qtbot, widget) == "done"
    assert [layer.name for layer in viewer.layers][4:] == [
        "cells (denoised, stage 1) #2", "cells (denoised, stage 2) #2", "cells (denoised) #2"]
    assert "#2" in widget.status_label.text()
    viewer.layers.selection.active = viewer.layers["cells"]
    widget.layer_combo.setCurrentText("cells (denoised)")  # the user may still pick a result
    assert widget.selected_layer().name == "cells (denoised)"


def test_opens_on_the_degraded_sample_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mprnet", "cells")
    viewer.layers.selection.active = None
    widget = make_widget(viewer)
    assert widget.layer_combo.currentText() == "noisy cells"


def test_progress_shows_tiles_and_time_left(make_napari_viewer, qtbot, tiny_model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((96, 96)).astype(np.float32), name="img")
    widget = make_widget(viewer, tiny_model_file)
    widget.tile_spin.setValue(32)
    widget.overlap_spin.setValue(8)
    shown = []
    widget.progressed.connect(lambda done, total: shown.append(widget.progress_bar.format()))
    assert run_and_wait(qtbot, widget) == "done"
    assert len(shown) >= 2
    assert "tiles" in shown[0] and "left" in shown[0]  # an estimate from the first unit on
    # every step names its tile count out of the plan's total, never going backwards (the
    # last step may arrive after the job ended and is then dropped on purpose)
    total = widget.job.progress.tiles_total
    counts = [int(text.split("/")[0]) for text in shown]
    assert all(text.startswith(f"{count}/{total} tiles") for count, text in zip(counts, shown))
    assert counts == sorted(counts) and 1 <= counts[0] and counts[-1] <= total
    assert widget.progress_bar.format() == "%p%"


def test_strength_control_reaches_the_job_and_persists(make_napari_viewer, qtbot,
                                                       tiny_model_file, image,
                                                       isolated_settings):
    from napari_mprnet._widgets._requests import build_request

    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    assert widget.strength_spin.text() == "auto" and widget.settings().strength == "auto"
    assert "Stein" in widget.strength_spin.toolTip()
    widget.strength_spin.setValue(0.0)
    assert widget.settings().strength == 0.0
    assert run_and_wait(qtbot, widget) == "done"
    assert widget.job.request.strength == 0.0
    np.testing.assert_allclose(viewer.layers["cells (denoised)"].data, image, rtol=1e-5,
                               atol=1e-3 * float(np.ptp(image)))
    assert load_settings().strength == 0.0
    again = make_widget(viewer)
    assert again.strength_spin.value() == 0.0
    # menu commands (build_request without a strength) use the default
    assert build_request(widget.job.request.source, load_settings()).strength == "auto"
    again.strength_spin.setValue(again.strength_spin.minimum())
    assert load_settings().strength == "auto"


def test_noise_control_reaches_the_job_persists_and_follows_task_and_strength(
        make_napari_viewer, qtbot, tiny_model_file, image, isolated_settings, monkeypatch):
    from napari_mprnet import api
    from napari_mprnet._widgets._requests import build_request
    from napari_mprnet._widgets.settings import RestoreSettings

    seen = []
    original = api.iter_restore

    def recording(*args, **kwargs):
        seen.append(kwargs.get("noise"))
        return (yield from original(*args, **kwargs))

    monkeypatch.setattr(api, "iter_restore", recording)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    spin = widget.noise_spin
    assert spin.text() == "auto" and widget.settings().noise == "auto" and spin.isEnabled()
    assert "intensity units" in spin.toolTip() and "0-255" in spin.toolTip()
    spin.setValue(12.5)
    assert widget.settings().noise == 12.5
    assert run_and_wait(qtbot, widget) == "done"
    assert widget.job.request.noise == 12.5 and seen[-1] == 12.5
    layer = viewer.layers["cells (denoised)"]
    assert layer.metadata["napari_mprnet"]["noise"] == {"sd": 12.5}
    assert load_settings().noise == 12.5
    again = make_widget(viewer)
    assert again.noise_spin.value() == 12.5
    # a fixed strength or another task does not use it: disabled, and not passed
    again.strength_spin.setValue(0.5)
    assert not again.noise_spin.isEnabled()
    assert build_request(layer_snapshot(viewer), again.settings(), strength=0.5,
                         noise=12.5).noise == "auto"
    again.strength_spin.setValue(again.strength_spin.minimum())
    assert again.noise_spin.isEnabled()
    again.task_combo.setCurrentText("deblur")
    assert not again.noise_spin.isEnabled()
    assert build_request(layer_snapshot(viewer), again.settings(), strength="auto",
                         noise=12.5).noise == "auto"
    again.task_combo.setCurrentText("denoise")
    assert again.noise_spin.isEnabled()
    # menu commands (no noise given) use "auto"
    assert build_request(layer_snapshot(viewer), load_settings()).noise == "auto"
    again.noise_spin.setValue(again.noise_spin.minimum())
    assert again.noise_spin.text() == "auto" and load_settings().noise == "auto"
    # stored values are validated on load
    for bad in (-1, 0, True, "loud", float("nan"), float("inf"), [1, 2]):
        assert RestoreSettings.from_dict({"noise": bad}).noise == "auto"
    assert RestoreSettings.from_dict({"noise": 3}).noise == 3


def layer_snapshot(viewer):
    from napari_mprnet._layers import snapshot

    return snapshot(viewer.layers["cells"])


def test_open_file_takes_a_bioimageio_package(make_napari_viewer, qtbot, tiny_model_file,
                                              image, tmp_path, monkeypatch):
    """"Open file…" offers .zip packages and rdf.yaml; a package (picked as the rdf.yaml of
    its folder) restores as the model it holds."""
    import zipfile

    from qtpy.QtWidgets import QFileDialog

    from napari_mprnet.bioimageio import export_bioimageio
    from napari_mprnet.weights import load_model

    model = load_model(tiny_model_file)
    package = export_bioimageio(model, tmp_path / "tiny.zip", name="Tiny denoiser",
                                description="widget test", min_size=64)
    with zipfile.ZipFile(package) as archive:
        archive.extractall(tmp_path / "tiny_package")
    offered = []

    def pick(parent, caption, folder, filters):
        offered.append(filters)
        return str(tmp_path / "tiny_package" / "rdf.yaml"), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", pick)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    assert run_and_wait(qtbot, widget) == "done"  # the model file itself, for comparison
    widget.browse_button.click()
    assert "*.zip" in offered[0] and "rdf.yaml" in offered[0]
    assert widget.file_edit.text().endswith("rdf.yaml")
    assert run_and_wait(qtbot, widget) == "done"
    use_file(widget, tmp_path / "tiny_package")  # the folder itself, typed in
    assert run_and_wait(qtbot, widget) == "done"
    results = [layer.data for layer in viewer.layers if layer.name != "cells"]
    assert len(results) == 3
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[2], results[0])


def test_widget_checkbox_adds_the_removed_layer(make_napari_viewer, qtbot, tiny_model_file,
                                                image):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    widget.removed_check.setChecked(True)
    assert run_and_wait(qtbot, widget) == "done"
    names = [layer.name for layer in viewer.layers]
    assert names == ["cells", "cells (removed)", "cells (denoised)"]
    removed, result = viewer.layers["cells (removed)"], viewer.layers["cells (denoised)"]
    np.testing.assert_array_equal(removed.data, image.astype(np.float32) - result.data)
    assert "removed_check" in result.metadata["napari_mprnet"]
    assert load_settings().show_removed is True
    widget.removed_check.setChecked(False)
    assert run_and_wait(qtbot, widget) == "done"
    assert len(viewer.layers) == 4  # only the result this time


def test_first_openvino_conversion_runs_off_the_gui_thread_with_a_status_line(
        make_napari_viewer, qtbot, tiny_model_file, image, monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    import threading

    from napari_mprnet.engine.backends import OpenVINOBackend, clear_openvino_cache

    monkeypatch.delenv("NAPARI_MPRNET_BACKEND", raising=False)  # the real CPU default
    monkeypatch.setenv("NAPARI_MPRNET_CACHE", str(tmp_path / "cache"))
    clear_openvino_cache()
    threads = []
    convert = OpenVINOBackend._convert

    def converting(self):
        threads.append(threading.current_thread() is threading.main_thread())
        return convert(self)

    monkeypatch.setattr(OpenVINOBackend, "_convert", converting)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer, tiny_model_file)
    shown = []
    widget.progressed.connect(lambda done, total: shown.append(widget.status_label.text()))
    assert run_and_wait(qtbot, widget) == "done"
    assert threads == [False]  # converted once, in the worker thread
    assert shown[0].startswith("Converting the network for OpenVINO")
    assert len(shown) >= 2 and shown[1].startswith("Restoring 'cells'")
    assert widget.status_label.text().startswith("Done")
    clear_openvino_cache()

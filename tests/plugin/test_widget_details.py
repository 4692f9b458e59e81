"""What a user trips over in the Restore widget and its results: torch loading off the GUI
thread, spin box steps, the output type, the precision help, and what result layers record."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import napari_mprnet
from napari_mprnet._widgets import engine_loader
from napari_mprnet._widgets.menu_commands import restore_denoise
from napari_mprnet._widgets.restore_widget import RestoreWidget
from napari_mprnet._widgets.settings import RestoreSettings, load_settings, save_settings
from napari_mprnet.provenance import file_sha256

TIMEOUT = 30000


def make_widget(viewer) -> RestoreWidget:
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT) as blocker:
        widget.run_button.click()
    return blocker.args[0]


def use_file(widget, path):
    widget.weights_combo.setCurrentIndex(widget.weights_combo.findData("file"))
    widget.file_edit.setText(str(path))
    widget.file_edit.editingFinished.emit()


def test_plugin_modules_import_no_torch():
    code = ("import sys; import napari_mprnet._widgets.menu_commands, "
            "napari_mprnet._widgets.restore_widget, napari_mprnet._widgets.finetune_widget, "
            "napari_mprnet._sample_data; print(sorted(m for m in ('torch', 'scipy.stats') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_torch_loads_off_the_gui_thread_with_a_loading_state(make_napari_viewer, qtbot,
                                                            monkeypatch):
    release = threading.Event()
    threads = []

    def slow_import():  # stands for importing torch: seconds, in the worker
        threads.append(threading.current_thread())
        release.wait(20)

    monkeypatch.setattr(engine_loader, "_state", {"worker": None, "error": None,
                                                  "loaded": False})
    monkeypatch.setattr(engine_loader, "_import_engine", slow_import)
    monkeypatch.setattr(engine_loader, "ENGINE_MODULE", "not yet imported")
    save_settings(RestoreSettings(device="cpu"))
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    assert widget.device_label.text() == "loading PyTorch…"
    assert [widget.device_combo.itemText(i) for i in range(widget.device_combo.count())] == [
        "auto"]
    qtbot.waitUntil(lambda: bool(threads), timeout=TIMEOUT)
    assert threads[0] is not threading.main_thread()
    qtbot.wait(50)  # the GUI thread keeps running meanwhile
    widget.tile_spin.setValue(256)  # an edit while loading keeps the saved device
    assert load_settings().device == "cpu"
    release.set()
    qtbot.waitUntil(lambda: widget.device_combo.count() > 1, timeout=TIMEOUT)
    assert widget.device_combo.currentText() == "cpu"
    assert widget.device_label.text().startswith("runs on cpu")


def test_tile_spin_steps_from_auto_in_multiples_of_64(make_napari_viewer):
    widget = make_widget(make_napari_viewer())
    spin = widget.tile_spin
    assert spin.text() == "auto"
    seen = []
    for _ in range(3):
        spin.stepBy(1)
        seen.append(spin.value())
    assert seen == [256, 320, 384]
    spin.setValue(100)  # typed
    spin.stepBy(1)
    assert spin.value() == 128
    spin.stepBy(-1)
    assert spin.value() == 64
    spin.stepBy(-1)
    assert spin.text() == "auto" and widget.settings().tile_size == "auto"
    spin.setValue(200)
    assert widget.settings().tile_size == 200


@pytest.mark.parametrize(("data", "step"), [
    (np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8), 2.0),
    (np.linspace(100, 5100, 64 * 64).reshape(64, 64).astype(np.uint16), 50.0),
    (np.linspace(0, 1, 64 * 64).reshape(64, 64).astype(np.float32), 0.01),
])
def test_noise_spin_steps_by_a_hundredth_of_the_layer_range(make_napari_viewer, data, step):
    viewer = make_napari_viewer()
    viewer.add_image(data, name="img")
    widget = make_widget(viewer)
    spin = widget.noise_spin
    assert spin.singleStep() == pytest.approx(step)
    spin.stepBy(1)
    assert spin.value() == pytest.approx(step)


def test_precision_help_says_what_auto_does(make_napari_viewer):
    widget = make_widget(make_napari_viewer())
    tip = widget.precision_combo.toolTip()
    assert "auto" in tip and "bf16" in tip and "CPU" in tip and "fp16 on CUDA, fp32 elsewhere" \
        not in tip
    assert widget.precision_combo.itemText(0) == "auto"


@pytest.mark.parametrize("command", ["restore", "demo"])
def test_cli_precision_accepts_auto_and_says_what_it_does(command, capsys):
    from napari_mprnet.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{auto,fp32,fp16,bf16}" in text
    assert "bf16" in text and "natively" in text
    assert "fp16 on CUDA, fp32 elsewhere" not in text


def rgb_photo():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize(("choice", "dtype"), [("auto", np.uint8), ("same as input", np.uint8),
                                               ("float32", np.float32)])
def test_rgb_uint8_gives_uint8_by_default_and_float_on_request(make_napari_viewer, qtbot,
                                                               tiny_model_file, choice, dtype,
                                                               tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(rgb_photo(), name="photo", rgb=True)
    widget = make_widget(viewer)
    use_file(widget, tiny_model_file)
    assert widget.output_combo.currentText() == "auto"
    widget.output_combo.setCurrentText(choice)
    assert run_and_wait(qtbot, widget) == "done"
    out = viewer.layers["photo (denoised)"]
    assert out.rgb and out.data.dtype == dtype
    assert load_settings().output_type == choice
    if dtype == np.uint8:  # napari saves it as PNG (a float RGB layer fails there)
        from napari_builtins.io import napari_write_image

        assert napari_write_image(str(tmp_path / "out.png"), out.data, {}) is not None


def test_output_type_auto_keeps_16_bit_as_float(make_napari_viewer, qtbot, tiny_model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).integers(100, 4000, (40, 40), dtype=np.uint16),
                     name="cam")
    widget = make_widget(viewer)
    use_file(widget, tiny_model_file)
    assert run_and_wait(qtbot, widget) == "done"
    assert viewer.layers["cam (denoised)"].data.dtype == np.float32
    widget.output_combo.setCurrentText("same as input")
    assert run_and_wait(qtbot, widget) == "done"
    assert viewer.layers["cam (denoised) #2"].data.dtype == np.uint16


def test_result_layers_record_weights_task_strength_noise_and_version(
        make_napari_viewer, qtbot, tiny_model_file, image):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = make_widget(viewer)
    use_file(widget, tiny_model_file)
    widget.noise_spin.setValue(7.0)
    assert run_and_wait(qtbot, widget) == "done"
    record = viewer.layers["cells (denoised)"].metadata["napari_mprnet"]
    assert record["weights"] == {"name": "tiny.safetensors", "path": str(tiny_model_file),
                                 "sha256": file_sha256(tiny_model_file)}
    assert record["task"] == "denoise" and record["strength"] == "auto"
    assert record["noise"] == {"sd": 7.0}
    assert record["version"] == napari_mprnet.__version__
    assert record["source"] == "cells" and record["stage"] == "final"


def test_menu_result_with_bundled_weights_records_their_file(make_napari_viewer, qtbot, image):
    from napari_mprnet.pretrained import bundled_info, bundled_path

    save_settings(RestoreSettings())  # bundled weights
    viewer = make_napari_viewer()
    viewer.add_image(image[:32, :32], name="cells")
    job = restore_denoise(viewer)
    qtbot.waitUntil(lambda: not job.running, timeout=60000)
    record = viewer.layers["cells (denoised)"].metadata["napari_mprnet"]
    assert record["weights"]["path"] == str(bundled_path("denoise"))
    assert record["weights"]["sha256"] == bundled_info("denoise")["sha256"]
    assert record["weights"]["sha256"] == file_sha256(bundled_path("denoise"))
    assert record["noise"] == "estimated"  # (menu runs measure the strength)


def test_both_docks_fit_a_1000_px_screen_with_full_height_controls(make_napari_viewer, qtbot):
    from napari_mprnet._widgets.finetune_widget import FinetuneWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-mprnet", "cells")
    restore, tune = RestoreWidget(viewer), FinetuneWidget(viewer)
    viewer.window.add_dock_widget(restore, name="Restore")
    viewer.window.add_dock_widget(tune, name="Fine-tune")
    window = viewer.window._qt_window
    window.resize(1600, 1000)
    qtbot.waitUntil(lambda: tune.height() > 200, timeout=5000)  # docks share the height
    qtbot.wait(100)
    assert window.minimumSizeHint().height() <= 1000 and window.height() <= 1000
    assert restore.height() > 200  # neither dock is squeezed to nothing
    for combo in (tune.input_combo, tune.target_combo, tune.source_combo,
                  restore.layer_combo, restore.task_combo):
        assert combo.height() >= combo.sizeHint().height()  # text never cut
    # what does not fit scrolls (vertically only)
    for widget in (restore, tune):
        assert not widget.scroll_area.horizontalScrollBar().isVisible()

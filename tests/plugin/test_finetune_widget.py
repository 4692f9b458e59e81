"""The Fine-tune dock widget, driven like a user would, with a tiny base model."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import tifffile
import torch
from finetune_support import make_finetune_widget
from qtpy.QtWidgets import QFileDialog

from napari_mprnet._widgets import finetune_widget as fw
from napari_mprnet._widgets.finetune_widget import FOLDERS, FinetuneWidget
from napari_mprnet._widgets.restore_widget import RestoreWidget
from napari_mprnet._widgets.training_plot import (
    LOSS_COLOR,
    TrainingPlot,
    data_range,
    format_tick,
)
from napari_mprnet._widgets.weights_registry import registered_weights, unregister_weights
from napari_mprnet.weights import load_model

TIMEOUT = 60000

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _clean_registry():
    before = set(registered_weights())
    yield
    for name in set(registered_weights()) - before:
        unregister_weights(name)


def _pairs(planes: int = 3, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * ((i + 1) * yy + xx)) for i in range(planes)])
    noisy = np.clip(clean + 0.08 * rng.standard_normal(clean.shape), 0, 1)
    return noisy.astype(np.float32), clean.astype(np.float32)


def make_widget(viewer, base_file, steps: int = 4) -> FinetuneWidget:
    widget = make_finetune_widget(viewer, base_file, steps)
    widget.val_spin.setValue(0.34)
    widget.device_combo.setCurrentText("cpu")
    return widget


def with_layers(viewer, planes: int = 3) -> None:
    noisy, clean = _pairs(planes)
    viewer.add_image(noisy, name="noisy")
    viewer.add_image(clean, name="clean")


def pick(widget: FinetuneWidget, inp: str, tgt: str) -> None:
    widget.input_combo.setCurrentText(inp)
    widget.target_combo.setCurrentText(tgt)


def train(qtbot, widget: FinetuneWidget) -> str:
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
    return blocker.args[0]


def test_trains_plots_and_registers_for_restore(make_napari_viewer, qtbot, tiny_model_file):
    viewer = make_napari_viewer()
    with_layers(viewer)
    restore = RestoreWidget(viewer)  # open before training: must hear about the new model
    widget = make_widget(viewer, tiny_model_file)
    pick(widget, "noisy", "clean")
    widget.name_edit.setText("my cells")
    assert train(qtbot, widget) == "done"

    # the plot got one loss point per step and validation PSNR points
    assert [s for s, _ in widget.plot.loss_points] == [1, 2, 3, 4]
    assert widget.plot.psnr_points and all(np.isfinite(v) for _, v in widget.plot.psnr_points)
    assert widget.progress_bar.value() == widget.progress_bar.maximum() == 4
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    assert widget.save_button.isEnabled() and widget.export_button.isEnabled()

    # registered (saved, so later sessions have it too): it appears in the restore widget's
    # weights list (and can be restored with)
    saved = load_model(registered_weights()["my cells"])
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(),
                                                 widget.result.model.state_dict().values()))
    assert restore.weights_combo.findData("registered:my cells") >= 0
    assert widget.weights_combo.findData("registered:my cells") >= 0  # fine-tune it further
    restore.weights_combo.setCurrentIndex(restore.weights_combo.findData("registered:my cells"))
    viewer.layers.selection.active = viewer.layers["noisy"]
    restore.layer_combo.setCurrentText("noisy")
    with qtbot.waitSignal(restore.job_finished, timeout=TIMEOUT) as blocker:
        restore.run_button.click()
    assert blocker.args[0] == "done"
    assert "noisy (denoised)" in [layer.name for layer in viewer.layers]


def test_default_name_and_no_validation_with_one_plane(make_napari_viewer, qtbot,
                                                       tiny_model_file):
    viewer = make_napari_viewer()
    noisy, clean = _pairs(1)
    viewer.add_image(noisy[0], name="one")
    viewer.add_image(clean[0], name="one clean")
    widget = make_widget(viewer, tiny_model_file, steps=2)
    pick(widget, "one", "one clean")
    assert train(qtbot, widget) == "done"
    assert widget.registered_name == "denoise on one (2 steps)"
    assert widget.registered_name in registered_weights()
    assert len(widget.plot.loss_points) == 2 and widget.plot.psnr_points == []


def test_stop_mid_run_keeps_a_model(make_napari_viewer, qtbot, tiny_model_file):
    viewer = make_napari_viewer()
    with_layers(viewer)
    widget = make_widget(viewer, tiny_model_file, steps=500)
    pick(widget, "noisy", "clean")
    widget.step_done.connect(lambda event: widget.stop_button.click())
    assert train(qtbot, widget) == "stopped"
    result = widget.result
    assert result.stopped and 1 <= result.steps_done < 500
    assert len(widget.plot.loss_points) == result.steps_done
    assert widget.registered_name in registered_weights()
    assert widget.save_button.isEnabled()
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    assert "Stopped" in widget.status_label.text()


def test_mismatched_shapes_notify(make_napari_viewer, qtbot, tiny_model_file, notes):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((48, 48), np.float32), name="a")
    viewer.add_image(np.zeros((40, 48), np.float32), name="b")
    viewer.add_image(np.zeros((48, 48), np.float32), name="c")
    widget = make_widget(viewer, tiny_model_file)
    pick(widget, "a", "b")
    assert widget.start() is None
    assert widget.job is None
    assert notes and notes[-1][0] == "error"
    assert "(48, 48)" in notes[-1][1] and "(40, 48)" in notes[-1][1]
    # picking the target's layer as input moves the target to another layer of that shape
    pick(widget, "a", "a")
    assert (widget.input_combo.currentText(), widget.target_combo.currentText()) == ("c", "a")
    # the same layer twice (set without signals), or a missing model file, are refused
    for combo in (widget.input_combo, widget.target_combo):
        combo.blockSignals(True)
        combo.setCurrentText("a")
        combo.blockSignals(False)
    assert widget.start() is None and "different layers" in notes[-1][1]
    pick(widget, "a", "c")
    widget.file_edit.setText(str(tiny_model_file) + ".missing")
    assert widget.start() is None and "does not exist" in notes[-1][1]


def test_failure_in_worker_is_a_notification(make_napari_viewer, qtbot, tiny_model_file,
                                             notes):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 3), np.float32), name="tiny")  # smaller than a patch
    viewer.add_image(np.zeros((2, 3), np.float32), name="tiny clean")
    widget = make_widget(viewer, tiny_model_file)
    pick(widget, "tiny", "tiny clean")
    assert train(qtbot, widget) == "failed"
    assert notes[-1][0] == "error" and "failed" in notes[-1][1]
    assert widget.result is None and not widget.save_button.isEnabled()
    assert widget.start_button.isEnabled()


def test_save_and_export(make_napari_viewer, qtbot, tiny_model_file, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    with_layers(viewer)
    widget = make_widget(viewer, tiny_model_file, steps=3)
    pick(widget, "noisy", "clean")
    assert train(qtbot, widget) == "done"

    target = tmp_path / "out" / "tuned"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    widget.save_button.click()
    saved = target.with_suffix(".safetensors")
    model = load_model(saved)
    assert model.metadata["provenance"]["finetuned"] is True
    assert model.metadata["provenance"]["steps"] == 3
    assert model.metadata["task"] == "denoise"
    with torch.no_grad():
        x = torch.rand(1, 3, 32, 32)
        expected = widget.result.model.cpu()(x)[0]
        assert torch.allclose(model(x)[0], expected, atol=1e-6)

    package = tmp_path / "package"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(package), ""))
    with qtbot.waitSignal(widget.export_finished, timeout=TIMEOUT) as blocker:
        widget.export_button.click()
    assert blocker.args[0] == str(package) + ".zip"
    with zipfile.ZipFile(blocker.args[0]) as archive:
        assert "rdf.yaml" in archive.namelist()
        example = np.load(io.BytesIO(archive.read("test_input.npy")), allow_pickle=False)
    # the test input is a plane of the training data, in its type (mirrored up to the
    # package's smallest side); the package opens again as the same model
    noisy = viewer.layers["noisy"].data
    assert example.dtype == noisy.dtype and example.shape == (1, 1, 192, 192)
    np.testing.assert_array_equal(example[0, 0, :48, :48], noisy[1])
    reopened = load_model(blocker.args[0])
    for key, value in widget.result.model.cpu().state_dict().items():
        assert torch.equal(reopened.state_dict()[key], value), key


def test_folders(make_napari_viewer, qtbot, tiny_model_file, tmp_path, notes):
    noisy, clean = _pairs(2)
    for folder, stack in (("noisy", noisy), ("clean", clean)):
        (tmp_path / folder).mkdir()
        for i, plane in enumerate(stack):
            tifffile.imwrite(tmp_path / folder / f"img{i}.tif", plane)
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tiny_model_file, steps=2)
    widget.source_combo.setCurrentText(FOLDERS)
    assert widget.folders_box.isVisibleTo(widget) and not widget.layers_box.isVisibleTo(widget)
    assert widget.start() is None and "input folder" in notes[-1][1]
    widget.input_dir_edit.setText(str(tmp_path / "noisy"))
    widget.target_dir_edit.setText(str(tmp_path / "nowhere"))
    assert widget.start() is None and "does not exist" in notes[-1][1]
    widget.target_dir_edit.setText(str(tmp_path / "clean"))
    assert train(qtbot, widget) == "done"
    assert widget.registered_name == "denoise on noisy (2 steps)"


def test_opens_from_the_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-mprnet", "Fine-tune")
    assert isinstance(widget, fw.FinetuneWidget)
    assert widget.device_label.text().startswith("trains on ")


# --------------------------------------------------------------------------- the plot


def test_plot_helpers():
    assert data_range([]) == (0.0, 1.0)
    low, high = data_range([1.0, 2.0])
    assert low < 1.0 and high > 2.0
    low, high = data_range([3.0, 3.0, float("nan")])
    assert low < 3.0 < high
    assert format_tick(0.0123) == "0.0123" and format_tick(1.5e-5) == "1.5e-05"


def test_plot_draws_points(qtbot):
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    plot.resize(320, 190)
    empty = plot.grab().toImage()
    plot.clear(total_steps=10)
    for step, loss in enumerate([0.5, 0.3, 0.25, 0.2, 0.18], start=1):
        plot.add_loss(step, loss)
    plot.add_val_psnr(5, 24.5)
    image = plot.grab().toImage()
    assert not image.isNull()

    def orange(img) -> int:
        return sum(
            1
            for y in range(0, img.height(), 2)
            for x in range(0, img.width(), 2)
            if abs(img.pixelColor(x, y).red() - LOSS_COLOR.red()) < 30
            and abs(img.pixelColor(x, y).green() - LOSS_COLOR.green()) < 30
            and abs(img.pixelColor(x, y).blue() - LOSS_COLOR.blue()) < 30
        )

    assert orange(image) > orange(empty) + 20  # the loss line was drawn
    plot.clear()
    assert plot.loss_points == [] and plot.psnr_points == []


def test_plugin_sample_gives_noisy_input_and_clean_target(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mprnet", "cells")
    widget = FinetuneWidget(viewer)
    assert (widget.input_combo.currentText(), widget.target_combo.currentText()) == (
        "noisy cells", "clean cells")
    widget.input_combo.setCurrentText("clean cells")  # the user swaps: never one layer twice
    assert widget.target_combo.currentText() == "noisy cells"
    viewer.add_image(np.zeros((8, 8)), name="unrelated")
    assert widget.input_combo.currentText() == "clean cells"  # choices survive new layers
    form = widget.form
    labels = [form.itemAt(i, form.ItemRole.LabelRole) for i in range(form.rowCount())]
    texts = [item.widget().text() for item in labels if item is not None and item.widget()]
    assert "Validation fraction" in texts


def test_trainer_messages_reach_the_status_line(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = FinetuneWidget(viewer)
    widget._on_event({"message": "training on 3 planes for 10 steps on cpu"})
    assert widget.status_label.text() == "training on 3 planes for 10 steps on cpu"


def test_self_supervised_with_no_target(make_napari_viewer, qtbot, tiny_model_file):
    from napari_mprnet._widgets.finetune_data import NO_TARGET

    viewer = make_napari_viewer()
    noisy, _ = _pairs(3)
    viewer.add_image(noisy, name="noisy")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # one layer: nothing to pair it with, so the Target is none and the method shows
    assert widget.target_combo.currentText() == NO_TARGET
    assert widget.method_combo.isVisibleTo(widget)
    assert widget.lr_spin.value() == pytest.approx(5e-5)  # the self-supervised default
    widget.weights_combo.setCurrentIndex(widget.weights_combo.findData("file"))
    widget.file_edit.setText(str(tiny_model_file))
    for spin, value in ((widget.steps_spin, 2), (widget.patch_spin, 32),
                        (widget.batch_spin, 1), (widget.val_spin, 0.34)):
        spin.setValue(value)
    widget.device_combo.setCurrentText("cpu")
    assert train(qtbot, widget) == "done"
    prov = widget.result.model.metadata["provenance"]
    assert prov["objective"]["name"] == "noise2void" and prov["best_val_loss"] is not None
    assert "self-supervised validation loss" in widget.status_label.text()
    # Noise2Noise from the stack's neighbouring frames
    widget.method_combo.setCurrentIndex(1)
    assert train(qtbot, widget) == "done"
    assert widget.result.model.metadata["provenance"]["objective"]["name"] == "noise2noise"
    # a clean layer appears: proposed as the target, supervised again, method hidden
    viewer.add_image(_pairs(3)[1], name="clean")
    assert widget.target_combo.currentText() == "clean"
    assert not widget.method_combo.isVisibleTo(widget)
    assert widget.lr_spin.value() == pytest.approx(2e-4)
    assert widget.build_request().method == "supervised"
    # choosing none again sticks when layers change
    widget.target_combo.setCurrentText(NO_TARGET)
    viewer.add_image(_pairs(3)[1], name="other clean")
    assert widget.target_combo.currentText() == NO_TARGET
    assert widget.build_request().targets is None


def test_a_restored_result_is_not_proposed_as_the_target(make_napari_viewer):
    from napari_mprnet._widgets.finetune_data import NO_TARGET

    viewer = make_napari_viewer()
    noisy, _ = _pairs(3)
    viewer.add_image(noisy, name="noisy")
    widget = FinetuneWidget(viewer)
    assert widget.target_combo.currentText() == NO_TARGET
    # the Restore widget (or the menu) adds its output: it is no clean reference
    viewer.add_image(noisy[0], name="noisy (denoised)", metadata={"napari_mprnet": {}})
    assert widget.target_combo.currentText() == NO_TARGET
    assert widget.lr_spin.value() == pytest.approx(5e-5)
    assert widget.build_request().targets is None


def test_folders_without_targets_are_self_supervised(make_napari_viewer, tiny_model_file,
                                                     tmp_path):
    noisy, _ = _pairs(2)
    (tmp_path / "noisy").mkdir()
    for i, plane in enumerate(noisy):
        tifffile.imwrite(tmp_path / "noisy" / f"img{i}.tif", plane)
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tiny_model_file, steps=2)
    widget.source_combo.setCurrentText(FOLDERS)
    widget.input_dir_edit.setText(str(tmp_path / "noisy"))
    assert widget.method_combo.isVisibleTo(widget)
    request = widget.build_request()
    assert request.targets is None and request.method == "noise2void"
    assert request.blind_spot_mask == "pixel"
    # the structured blind spots are Noise2Void with a mask
    widget.method_combo.setCurrentText(
        "Noise2Void, blind 5 x 5 block (noise correlated in blotches)")
    request = widget.build_request()
    assert (request.method, request.pairs_from_series, request.blind_spot_mask,
            request.blind_spot_distance) == ("noise2void", False, "square", "mse")
    widget.method_combo.setCurrentText(
        "Noise2Void, outlier-robust loss (symmetric heavy-tailed noise)")
    assert widget.build_request().blind_spot_distance == "charbonnier"

"""Fine-tuning always reports quality (one image holds out a band of itself; the plot and the
end status show validation PSNR against the starting model, or the self-supervised score),
the multi-plane sample pair is offered, and a fine-tuned model survives a restart."""

from __future__ import annotations

import pytest
from finetune_support import make_finetune_widget

from napari_mprnet._widgets import weights_registry
from napari_mprnet._widgets.menu_commands import restore_denoise
from napari_mprnet._widgets.restore_widget import RestoreWidget
from napari_mprnet._widgets.settings import load_settings
from napari_mprnet.provenance import file_sha256

TIMEOUT = 120000

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _clean_registry():
    before = set(weights_registry.registered_weights())
    yield
    for name in set(weights_registry.registered_weights()) - before:
        weights_registry.unregister_weights(name)


make_widget = make_finetune_widget


def train(qtbot, widget):
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
    return blocker.args[0]


def test_one_image_with_a_target_reports_validation_psnr(make_napari_viewer, qtbot,
                                                         tiny_model_file):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mprnet", "cells")  # one 384 x 384 plane
    widget = make_widget(viewer, tiny_model_file)
    assert (widget.input_combo.currentText(), widget.target_combo.currentText()) == (
        "noisy cells", "clean cells")
    assert train(qtbot, widget) == "done"
    plans = [e for e in widget.job.events if e.get("event") == "plan"]
    assert plans and plans[0]["n_train"] == 1 and plans[0]["n_val"] == 1
    plot = widget.plot
    assert plot.val_kind == "psnr" and plot.start_value is not None
    assert plot.psnr_points and plot.psnr_points[-1][0] == 4
    result = widget.result
    assert result.best_val_psnr is not None and result.base_val_psnr is not None
    status = widget.status_label.text()
    assert f"validation PSNR {result.best_val_psnr:.2f} dB" in status
    assert f"starting model {result.base_val_psnr:.2f} dB" in status


def test_one_image_without_a_target_reports_the_self_supervised_score(
        make_napari_viewer, qtbot, tiny_model_file):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mprnet", "cells")
    widget = make_widget(viewer, tiny_model_file)
    widget.target_combo.setCurrentIndex(0)  # none (self-supervised)
    assert train(qtbot, widget) == "done"
    assert widget.plot.val_kind == "loss" and widget.plot.start_value is not None
    assert widget.plot.psnr_points
    assert widget.result.best_val_loss is not None
    assert "self-supervised validation loss" in widget.status_label.text()
    assert "starting model" in widget.status_label.text()


def test_stack_sample_pair_for_fine_tuning(make_napari_viewer, qtbot, tiny_model_file):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mprnet", "cells_stack")
    assert [layer.name for layer in viewer.layers] == ["clean cells stack", "noisy cells stack"]
    noisy = viewer.layers["noisy cells stack"]
    assert noisy.data.shape == (4, 256, 256) and not viewer.layers["clean cells stack"].visible
    widget = make_widget(viewer, tiny_model_file, steps=2)
    assert (widget.input_combo.currentText(), widget.target_combo.currentText()) == (
        "noisy cells stack", "clean cells stack")
    widget.val_spin.setValue(0.25)
    assert train(qtbot, widget) == "done"
    assert widget.result.n_train == 3 and widget.result.n_val == 1  # a whole plane held out
    assert "validation PSNR" in widget.status_label.text()


def test_fine_tuned_model_chosen_in_the_widget_works_from_the_menu_after_a_restart(
        make_napari_viewer, qtbot, tiny_model_file, monkeypatch):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mprnet", "cells")
    tuner = make_widget(viewer, tiny_model_file, steps=2)
    tuner.name_edit.setText("my cells")
    assert train(qtbot, tuner) == "done"
    saved = weights_registry.registered_weights()["my cells"]
    assert saved.endswith(".safetensors")
    restore = RestoreWidget(viewer)
    restore.weights_combo.setCurrentIndex(restore.weights_combo.findData("registered:my cells"))
    assert load_settings().weights["denoise"].name == "my cells"
    # a restart: nothing registered in memory, a new viewer
    monkeypatch.setattr(weights_registry, "_REGISTRY", {})
    viewer2 = make_napari_viewer()
    viewer2.open_sample("napari-mprnet", "cells")
    again = RestoreWidget(viewer2)
    assert again.weights_combo.currentData() == "registered:my cells"
    job = restore_denoise(viewer2)
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=TIMEOUT)
    assert job.state == "done"
    record = viewer2.layers["noisy cells (denoised)"].metadata["napari_mprnet"]
    assert record["weights"]["path"] == saved  # the fine-tuned file, not the bundled model
    assert record["weights"]["sha256"] == file_sha256(saved)
    assert record["weights"]["name"] == "fine-tuned: my cells"

"""One job per layer, always stoppable: menu runs have a cancellable bar in the activity dock,
the Restore widget follows and cancels the run on its layer whoever started it, and a second
request for a layer being restored is refused with a message."""

from __future__ import annotations

import time

import numpy as np
from napari.utils import cancelable_progress

from napari_mprnet._widgets._jobs import JOBS
from napari_mprnet._widgets.menu_commands import restore_deblur, restore_denoise
from napari_mprnet._widgets.restore_widget import RestoreWidget
from napari_mprnet._widgets.settings import RestoreSettings, WeightsChoice, save_settings

TIMEOUT = 30000


def slow_settings(model_file, task="denoise"):
    """Many small tiles: a run that lasts long enough to be watched and cancelled."""
    settings = RestoreSettings(tile_size=32, tile_overlap=8, strength=1.0)
    for name in ("denoise", "deblur"):
        settings.weights[name] = WeightsChoice(source="file", file=str(model_file))
    settings.task = task
    save_settings(settings)


def big_image(viewer, name="big"):
    return viewer.add_image(np.random.default_rng(0).random((256, 256)).astype(np.float32),
                            name=name)


def activity_bars(viewer):
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

    return viewer.window._qt_window.findChildren(QtLabeledProgressBar)


def test_menu_run_is_cancelled_from_the_activity_dock(make_napari_viewer, qtbot,
                                                      tiny_model_file, notes):
    slow_settings(tiny_model_file)
    viewer = make_napari_viewer()
    big_image(viewer)
    job = restore_denoise(viewer)
    assert isinstance(job.pbar, cancelable_progress)
    qtbot.waitUntil(lambda: job.progress is not None, timeout=TIMEOUT)
    assert job.progress.done < job.progress.total
    bars = [bar for bar in activity_bars(viewer) if bar.progress is job.pbar]
    assert len(bars) == 1 and not bars[0].cancel_button.isHidden()
    cancelled_at = time.perf_counter()
    bars[0].cancel_button.click()  # what the user clicks in the activity dock
    qtbot.waitUntil(lambda: not job.running, timeout=TIMEOUT)
    assert time.perf_counter() - cancelled_at < 10
    assert job.state == "cancelled"
    assert job.progress.done < job.progress.total  # it stopped early
    assert [layer.name for layer in viewer.layers] == ["big"]  # nothing added
    assert any("cancelled, no layer added" in message for _, message in notes)
    assert JOBS.running() == []


def test_widget_shows_and_cancels_a_menu_run_on_its_layer(make_napari_viewer, qtbot,
                                                          tiny_model_file):
    slow_settings(tiny_model_file)
    viewer = make_napari_viewer()
    big_image(viewer)
    viewer.add_image(np.zeros((32, 32), np.float32), name="other")
    viewer.layers.selection.active = viewer.layers["big"]
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer_combo.currentText() == "big"
    job = restore_denoise(viewer)
    assert widget.job is job
    assert widget.cancel_button.isEnabled() and not widget.run_button.isEnabled()
    assert "started from the menu" in widget.status_label.text()
    with qtbot.waitSignal(widget.progressed, timeout=TIMEOUT):
        pass
    assert "tiles" in widget.progress_bar.format()
    # another layer: free to run; back on the first: its job again
    widget.layer_combo.setCurrentText("other")
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    widget.layer_combo.setCurrentText("big")
    assert widget.job is job and widget.cancel_button.isEnabled()
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT) as finished:
        widget.cancel_button.click()
    assert finished.args == ["cancelled"] and job.state == "cancelled"
    assert "Cancelled" in widget.status_label.text()
    assert widget.run_button.isEnabled()
    assert [layer.name for layer in viewer.layers] == ["big", "other"]


def test_a_second_request_for_a_busy_layer_is_refused(make_napari_viewer, qtbot,
                                                      tiny_model_file, notes):
    slow_settings(tiny_model_file)
    viewer = make_napari_viewer()
    big_image(viewer)
    widget = RestoreWidget(viewer)
    first = widget.run()
    assert first is not None and first.request.origin == "the Restore widget"
    assert restore_deblur(viewer) is None  # the menu, while the widget's run goes on
    assert restore_denoise(viewer) is None
    assert widget.run() is None  # (the button is disabled; the call is refused too)
    refusals = [message for severity, message in notes if severity == "warning"]
    assert len(refusals) == 3
    assert all("'big' is already being restored" in text for text in refusals)
    assert "started from the Restore widget" in refusals[0]
    assert "cancel it in the activity dock or the Restore widget" in refusals[0]
    assert JOBS.running() == [first]
    qtbot.waitUntil(lambda: not first.running, timeout=60000)
    assert first.state == "done"
    again = restore_deblur(viewer)  # free again
    assert again is not None
    again.cancel()
    qtbot.waitUntil(lambda: not again.running, timeout=TIMEOUT)
    assert [layer.name for layer in viewer.layers] == ["big", "big (denoised)"]


def test_labels_or_shapes_from_the_menu_name_their_layer_type(make_napari_viewer, qtbot,
                                                               notes):
    """Executed by id, as the menu does: napari hands the command a proxied viewer."""
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((16, 16), np.uint8), name="my labels")
    get_app_model().commands.execute_command("napari-mprnet.restore_denoise").result()
    viewer.add_shapes([np.array([[1, 1], [5, 5], [1, 5]])], shape_type="polygon",
                      name="my shapes")
    get_app_model().commands.execute_command("napari-mprnet.restore_deblur").result()
    messages = [message for _, message in notes]
    assert messages == [
        "MPRNet denoise: select an Image layer first ('my labels' is a Labels layer)",
        "MPRNet deblur: select an Image layer first ('my shapes' is a Shapes layer)",
    ]
    assert not any("Proxy" in message for message in messages)

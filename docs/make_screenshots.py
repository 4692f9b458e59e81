"""Screenshots for the documentation: the Restore widget after a run, and the
Layers > Filter > Restore submenu.

Run headless with::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py

Writes ``docs/images/restore_widget.png`` (denoise on the noisy cells),
``docs/images/restore_widget_derain.png`` (derain on the rainy photograph) and
``docs/images/restore_menu.png``. Uses a temporary settings file, so the user's saved settings are neither read nor changed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "images"


def _wait(app, predicate, timeout_s: float = 900.0) -> None:
    import time

    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("gave up waiting")
        app.processEvents()
        time.sleep(0.02)


def _settle(app, seconds: float = 0.5) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def _open_submenu(app, parent_menu, title: str):
    """Highlight ``title`` in ``parent_menu`` and make sure its submenu is shown."""
    action = _menu_action(parent_menu, title)
    parent_menu.setActiveAction(action)
    _settle(app)
    menu = action.menu()
    if not menu.isVisible():
        menu.popup(parent_menu.mapToGlobal(parent_menu.actionGeometry(action).topRight()))
        _settle(app)
    return menu


def _menu_action(menu, text: str):
    for action in menu.actions():
        if action.text().replace("&", "").startswith(text):
            return action
    names = [a.text() for a in menu.actions()]
    raise LookupError(f"no menu item {text!r} in {names}")


def _restore_and_grab(app, viewer, widget, sample: str, layer_name: str, task: str,
                      filename: str) -> None:
    """Open a sample, restore its degraded layer with the bundled model of ``task`` and
    save the window with input, clean reference and result side by side."""
    viewer.layers.clear()
    viewer.canvas.grid.enabled = False
    viewer.open_sample("napari-mprnet", sample)
    widget.task_combo.setCurrentText(task)
    widget.weights_combo.setCurrentIndex(widget.weights_combo.findData("bundled"))
    widget.stages_check.setChecked(False)
    viewer.layers.selection.active = viewer.layers[layer_name]
    job = widget.run()
    if job is None:
        raise RuntimeError("the restore job did not start")
    _wait(app, lambda: not job.running)
    if job.state != "done":
        raise RuntimeError(f"the restore job ended {job.state}: {job.error}")
    for layer in viewer.layers:
        layer.visible = True
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.shape = (1, len(viewer.layers))
    viewer.reset_view()
    _settle(app, 1.0)
    viewer.window._qt_window.grab().save(str(OUT / filename))


def open_viewer(height: int = 900):
    """A napari viewer at a fixed window size, with settings in a fresh temporary folder.

    Returns ``(viewer, window, app)``.
    """
    settings_dir = tempfile.mkdtemp(prefix="napari-mprnet-shots-")
    os.environ["NAPARI_MPRNET_SETTINGS"] = str(Path(settings_dir) / "settings.json")

    import napari
    from qtpy.QtWidgets import QApplication

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1500, height)
    window.move(0, 0)
    return viewer, window, QApplication.instance()


def main() -> int:
    from qtpy.QtCore import QPoint

    viewer, window, app = open_viewer()

    _dock, widget = viewer.window.add_plugin_dock_widget("napari-mprnet", "Restore")
    _restore_and_grab(app, viewer, widget, "rainy", "rainy photo", "derain",
                      "restore_widget_derain.png")
    # noisy | clean reference | restored, side by side (left open for the menu shot)
    _restore_and_grab(app, viewer, widget, "cells", "noisy cells", "denoise",
                      "restore_widget.png")

    # Layers > Filter > Restore, opened the way a user would
    viewer.canvas.grid.enabled = False
    viewer.layers.selection.active = viewer.layers["noisy cells"]
    _settle(app)
    menubar = window.menuBar()
    layers_action = _menu_action(menubar, "Layers")
    menubar.setActiveAction(layers_action)
    _settle(app)
    layers_menu = layers_action.menu()
    filter_menu = _open_submenu(app, layers_menu, "Filter")
    restore_menu = _open_submenu(app, filter_menu, "Restore")
    _settle(app, 1.0)

    # popups are separate windows: grab the screen around the window's top-left part
    screen = app.primaryScreen()
    top_left = window.mapToGlobal(QPoint(0, 0))
    right = restore_menu.geometry().right() + 20
    bottom = max(restore_menu.geometry().bottom(), layers_menu.geometry().bottom()) + 20
    shot = screen.grabWindow(0, top_left.x(), top_left.y(), right - top_left.x(),
                             bottom - top_left.y())
    shot.save(str(OUT / "restore_menu.png"))
    for menu in (restore_menu, filter_menu, layers_menu):
        menu.hide()
    viewer.close()
    print(f"wrote restore_widget.png, restore_widget_derain.png and restore_menu.png "
          f"to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

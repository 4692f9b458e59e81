"""Regenerate the napari screenshots of docs/images (run under Xvfb, about 3 minutes on a CPU).

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/napari_screenshots.py [OUT_DIR]

Writes, for a 1600 x 1000 window:
- ``both_docks.png``: the Restore and Fine-tune docks open together on the cells sample;
- ``restore_widget.png``: a finished Restore run on the noisy cells sample;
- ``restore_cancelled.png``: a Layers > Filter > Restore > Denoise run being cancelled from
  napari's activity dock, the Restore widget following it;
- ``finetune_widget.png``: fine-tuning the bundled denoiser on the 4-plane stack sample,
  with its validation curve against the starting model (dashed).
Settings and fine-tuned models go to a temporary folder, never the user's.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

SIZE = (1600, 1000)


def _wait(app, condition, timeout: float = 600.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"the viewer did not reach the expected state in {timeout} s")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()


def _viewer(app, napari, sample: str):
    from napari_mprnet._widgets.engine_loader import engine_loaded, when_loaded

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*SIZE)
    viewer.open_sample("napari-mprnet", sample)
    when_loaded(lambda: None)  # (torch loads off the GUI thread)
    _wait(app, engine_loaded)
    return viewer


def main(out: Path) -> None:
    os.environ.setdefault("NAPARI_MPRNET_SETTINGS",
                          str(Path(tempfile.mkdtemp()) / "settings.json"))
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_mprnet._widgets.finetune_widget import FinetuneWidget
    from napari_mprnet._widgets.menu_commands import restore_denoise
    from napari_mprnet._widgets.restore_widget import RestoreWidget

    app = QApplication.instance() or napari.qt.get_qapp()
    out.mkdir(parents=True, exist_ok=True)

    viewer = _viewer(app, napari, "cells")
    restore, tune = RestoreWidget(viewer), FinetuneWidget(viewer)
    viewer.window.add_dock_widget(restore, name="Restore")
    viewer.window.add_dock_widget(tune, name="Fine-tune")
    _wait(app, lambda: tune.height() > 200)
    viewer.window.screenshot(str(out / "both_docks.png"), canvas_only=False)
    viewer.close()

    viewer = _viewer(app, napari, "cells")
    restore = RestoreWidget(viewer)
    viewer.window.add_dock_widget(restore, name="Restore")
    states = []
    restore.job_finished.connect(states.append)
    restore.run()
    _wait(app, lambda: bool(states))
    viewer.window.screenshot(str(out / "restore_widget.png"), canvas_only=False)

    # a menu run on a 3-plane stack, cancelled from the activity dock
    viewer.layers.clear()
    viewer.open_sample("napari-mprnet", "cells_stack")
    viewer.layers.selection.active = viewer.layers["noisy cells stack"]
    viewer.window._status_bar._toggle_activity_dock(True)
    job = restore_denoise(viewer)
    _wait(app, lambda: job.progress is not None and job.progress.done >= 2)
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

    bars = [bar for bar in viewer.window._qt_window.findChildren(QtLabeledProgressBar)
            if bar.progress is job.pbar]
    cancelled_at = time.perf_counter()
    bars[0].cancel_button.click()
    for _ in range(10):
        app.processEvents()
    viewer.window.screenshot(str(out / "restore_cancelled.png"), canvas_only=False)
    _wait(app, lambda: not job.running)
    print(f"cancel took {time.perf_counter() - cancelled_at:.1f} s ({job.state}, "
          f"{job.progress.describe()})")
    viewer.close()

    viewer = _viewer(app, napari, "cells_stack")
    tune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(tune, name="Fine-tune")
    tune.steps_spin.setValue(30)
    tune.patch_spin.setValue(64)
    tune.batch_spin.setValue(2)
    tune.lr_spin.setValue(1e-4)
    tune.val_spin.setValue(0.25)
    tune.name_edit.setText("cells (fine-tuned)")
    states = []
    tune.job_finished.connect(states.append)
    tune.start()
    _wait(app, lambda: bool(states), timeout=1200)
    viewer.window.screenshot(str(out / "finetune_widget.png"), canvas_only=False)
    print(tune.status_label.text())
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/images"))

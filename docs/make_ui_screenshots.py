"""Screenshots of both widgets as they open on the plugin's own samples, and of a cancelled
run on a 3000x3000 layer; prints how long the cancel took.

Run headless with::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_ui_screenshots.py

Writes ``docs/images/restore_widget_defaults.png``, ``docs/images/finetune_widget_defaults.png``
and ``docs/images/restore_cancelled.png``. Uses a temporary settings file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from make_screenshots import _settle, _wait, open_viewer

OUT = Path(__file__).resolve().parent / "images"
BIG = 3000


def main() -> int:
    import numpy as np

    viewer, window, app = open_viewer()

    # 1. the fine-tune widget as it opens on the noisy-cells sample
    viewer.open_sample("napari-mprnet", "cells")
    dock, finetune = viewer.window.add_plugin_dock_widget("napari-mprnet", "Fine-tune")
    _settle(app, 1.0)
    window.grab().save(str(OUT / "finetune_widget_defaults.png"))
    print("fine-tune proposes input", finetune.input_combo.currentText(), "target",
          finetune.target_combo.currentText())
    viewer.window.remove_dock_widget(dock)

    # 2. the restore widget as it opens on the same sample
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-mprnet", "Restore")
    _settle(app, 1.0)
    window.grab().save(str(OUT / "restore_widget_defaults.png"))
    print("restore proposes", widget.layer_combo.currentText())

    # 3. a 3000x3000 layer, restored with the bundled denoiser and cancelled after the first
    #    progress event
    noisy = viewer.layers["noisy cells"].data
    reps = -(-BIG // noisy.shape[0])
    big = np.tile(noisy, (reps, reps))[:BIG, :BIG]
    viewer.add_image(big, name="big cells", colormap="gray")
    viewer.layers.selection.active = viewer.layers["big cells"]
    viewer.reset_view()
    widget.layer_combo.setCurrentText("big cells")
    events: list[float] = []
    start = time.perf_counter()
    widget.progressed.connect(lambda done, total: events.append(time.perf_counter() - start))
    job = widget.run()
    _wait(app, lambda: bool(events) or not job.running)
    first = events[0] if events else float("nan")
    total = job.progress.total if job.progress is not None else 0
    clicked = time.perf_counter()
    widget.cancel_button.click()
    _wait(app, lambda: not job.running)
    latency = time.perf_counter() - clicked
    _settle(app, 1.0)
    window.grab().save(str(OUT / "restore_cancelled.png"))
    print(f"3000x3000: first progress event after {first:.1f} s ({total} units in all); "
          f"cancel took {latency:.1f} s; state {job.state}; layers "
          f"{[layer.name for layer in viewer.layers]}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Screenshot for the documentation: the Fine-tune widget after a short training run.

Run headless with::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_finetune_screenshot.py

Writes ``docs/images/finetune_widget.png``. The noisy/clean cells sample is cut into four
quadrants (a stack of four planes), so that one plane is held out for validation and the plot
shows validation PSNR next to the training loss. Uses a temporary settings file.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_screenshots import _settle, _wait, open_viewer

OUT = Path(__file__).resolve().parent / "images"
STEPS = 40


def _quadrants(image):
    import numpy as np

    h, w = image.shape[0] // 2, image.shape[1] // 2
    return np.stack([image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:]])


def main() -> int:
    import torch

    torch.manual_seed(0)
    viewer, window, app = open_viewer(height=1000)

    viewer.open_sample("napari-mprnet", "cells")
    noisy, clean = viewer.layers["noisy cells"].data, viewer.layers["clean cells"].data
    viewer.layers.clear()
    viewer.add_image(_quadrants(clean), name="clean cells (quadrants)", visible=False)
    viewer.add_image(_quadrants(noisy), name="noisy cells (quadrants)")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-mprnet", "Fine-tune")
    widget.input_combo.setCurrentText("noisy cells (quadrants)")
    widget.target_combo.setCurrentText("clean cells (quadrants)")
    widget.task_combo.setCurrentText("denoise")
    widget.weights_combo.setCurrentIndex(widget.weights_combo.findData("bundled"))
    widget.steps_spin.setValue(STEPS)
    widget.patch_spin.setValue(64)
    widget.batch_spin.setValue(2)
    widget.lr_spin.setValue(1e-4)  # a gentle rate: the bundled model is already good here
    widget.val_spin.setValue(0.25)
    widget.name_edit.setText("cells (fine-tuned)")
    job = widget.start()
    if job is None:
        raise RuntimeError("the fine-tuning job did not start")
    _wait(app, lambda: not job.running)
    if job.result is None:
        raise RuntimeError(f"fine-tuning ended {job.state}: {job.error}")
    viewer.reset_view()
    from qtpy.QtWidgets import QWidget

    for child in window.findChildren(QWidget):  # the "model registered" pop-up covers the view
        if type(child).__name__ == "NapariQtNotification":
            child.close()
    _settle(app, 1.0)
    window.grab().save(str(OUT / "finetune_widget.png"))
    print(f"wrote {OUT / 'finetune_widget.png'}: {len(widget.plot.loss_points)} loss points, "
          f"{len(widget.plot.psnr_points)} PSNR points, {job.seconds:.1f} s")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

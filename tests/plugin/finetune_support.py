"""A Fine-tune widget set up for fast tests, shared by the Fine-tune widget test files."""

from __future__ import annotations

from napari_mprnet._widgets.finetune_widget import FinetuneWidget


def make_finetune_widget(viewer, base_file, steps: int = 4) -> FinetuneWidget:
    """A docked Fine-tune widget starting from ``base_file`` with tiny, fast settings."""
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.weights_combo.setCurrentIndex(widget.weights_combo.findData("file"))
    widget.file_edit.setText(str(base_file))
    widget.steps_spin.setValue(steps)
    widget.patch_spin.setValue(32)
    widget.batch_spin.setValue(1)
    widget.lr_spin.setValue(1e-3)
    return widget

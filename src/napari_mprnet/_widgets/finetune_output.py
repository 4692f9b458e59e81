"""What the Fine-tune widget does with a tuned model: save it, or export it to bioimage.io
(in a thread worker, so the viewer stays responsive)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import notifications
from qtpy.QtWidgets import QFileDialog, QLabel, QWidget

from ._controls import alive

__all__ = ["TunedModelOutput"]


class TunedModelOutput:
    """Save / export actions for ``owner.result.model``, reporting into ``status``.

    ``on_exported(path)`` is called when an export ends (``""`` if it failed).
    """

    def __init__(self, owner: QWidget, status: QLabel, title: str, on_exported: Any) -> None:
        self.owner = owner
        self.status = status
        self.title = title
        self.on_exported = on_exported
        self.worker: Any = None

    def _model(self) -> Any:
        result = getattr(self.owner, "result", None)
        if result is None:
            notifications.show_warning(f"{self.title}: train a model first")
            return None
        return result.model

    def save_to(self, path: str | Path) -> Path | None:
        """Write the model with its metadata (``.safetensors`` recommended)."""
        from ..weights import save_model

        model = self._model()
        if model is None:
            return None
        try:
            saved = save_model(model, path)
        except (OSError, TypeError, ValueError) as err:
            notifications.show_error(f"{self.title}: could not save the model: {err}")
            return None
        self.status.setText(f"Saved the model to {saved}")
        return saved

    def save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.owner, "Save fine-tuned model", "finetuned.safetensors",
            "safetensors (*.safetensors);;PyTorch (*.pth)",
        )
        if path:
            self.save_to(path if Path(path).suffix else path + ".safetensors")

    def export_to(self, path: str | Path, name: str | None = None,
                  training_inputs: Any = None) -> Any:
        """Export as a bioimage.io package in a thread worker (returns the worker), with a
        plane of ``training_inputs`` (the run's inputs) as its test input."""
        from ..bioimageio import MIN_BLOCK, export_bioimageio
        from ..bioimageio.checks import package_name
        from ..bioimageio.content import training_example

        model = self._model()
        if model is None:
            return None
        name = package_name(name or "", "MPRNet fine-tuned with napari-mprnet")
        description = (model.metadata or {}).get("summary") or "MPRNet fine-tuned in napari"

        def done(written: Any) -> None:
            if alive(self.owner):
                self.status.setText(f"Exported the bioimage.io package {written}")
            notifications.show_info(f"{self.title}: wrote bioimage.io package {written}")
            self.on_exported(str(written))

        def failed(error: Exception) -> None:
            notifications.show_error(f"{self.title}: bioimage.io export failed: {error}")
            self.on_exported("")

        worker = create_worker(export_bioimageio, model, path, name=name,
                               description=description,
                               test_input=training_example(training_inputs, MIN_BLOCK),
                               _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        self.worker = worker
        self.status.setText(f"Exporting to {path}…")
        worker.start()
        return worker

    def export_clicked(self, name: str | None = None, training_inputs: Any = None) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.owner, "Export to bioimage.io", "model.zip", "bioimage.io package (*.zip)"
        )
        if path:
            self.export_to(path if path.lower().endswith(".zip") else path + ".zip", name,
                           training_inputs)

"""The *Restore* dock widget: a thin Qt front end over :mod:`napari_mprnet.api`.

It only collects choices, starts a :class:`~napari_mprnet._widgets._jobs.RestoreJob` (a
napari thread worker over :func:`napari_mprnet.api.iter_restore`) and shows its progress.
The input layer is captured when *Run* is pressed, so changing the selection during a run
cannot misplace the results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from napari.layers import Image
from napari.utils import notifications
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._layers import snapshot
from ..model.presets import TASKS
from ..pretrained import bundled_info
from ._controls import (
    NoiseSpin,
    alive,
    fill_weights_combo,
    set_strength,
    show_device,
    strength_spin,
    strength_value,
    weights_choice,
)
from ._jobs import RestoreJob, build_request
from .layer_roles import is_result_layer, propose_input
from .settings import PRECISIONS, RestoreSettings, WeightsChoice, load_settings, save_settings
from .weights_registry import registry_events

if TYPE_CHECKING:
    import napari

__all__ = ["RestoreWidget", "available_devices"]

#: Value of the tile-size spin box that stands for "auto".
_AUTO_TILE = 15
_MODEL_FILTER = ("Model files and bioimage.io packages (*.safetensors *.pth *.pt *.ckpt *.tar "
                 "*.zip rdf.yaml *.bioimageio.yaml);;All files (*)")
_WARNING_STYLE = "color: #f0a030; font-weight: bold;"


def available_devices() -> list[str]:
    """Device choices on this machine: auto, cpu, and any CUDA / Apple MPS devices."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda"] if count == 1 else [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


class RestoreWidget(QWidget):
    """Restore an Image layer with MPRNet (denoise, deblur or derain).

    Signals
    -------
    progressed(done, total)
        After every tile batch of the running job.
    job_finished(state)
        When a job ends: "done", "cancelled" or "failed".
    """

    progressed = Signal(int, int)
    job_finished = Signal(str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.job: RestoreJob | None = None
        self._loading = True
        self._settings = load_settings()
        self._image_layers: list[Image] = []

        # ---- inputs
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer to restore (captured when Run is pressed)")
        self.task_combo = QComboBox()
        self.task_combo.addItems(list(TASKS))
        self.weights_combo = QComboBox()
        self.weights_combo.setToolTip(
            "Bundled default model for the task, a model file (official MPRNet checkpoint, "
            "safetensors...) or a model fine-tuned in this session"
        )
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("model file or bioimage.io package (.zip, folder)")
        self.browse_button = QPushButton("Browse…")
        file_row = QHBoxLayout()
        file_row.setContentsMargins(0, 0, 0, 0)
        file_row.addWidget(self.file_edit)
        file_row.addWidget(self.browse_button)
        self.file_box = QWidget()
        self.file_box.setLayout(file_row)
        self.weights_warning = QLabel()
        self.weights_warning.setWordWrap(True)
        self.weights_warning.setStyleSheet(_WARNING_STYLE)

        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(_AUTO_TILE, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip(
            "Tile edge in pixels (>= 16); 'auto' picks the largest tile that fits in memory"
        )
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(0, 1024)
        self.overlap_spin.setSingleStep(8)
        self.overlap_spin.setSuffix(" px")
        self.overlap_spin.setToolTip("Overlap of neighbouring tiles, blended without seams")

        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(list(PRECISIONS))
        self.precision_combo.setToolTip("auto: fp16 on CUDA, fp32 elsewhere")
        self.strength_spin = strength_spin()
        self.noise_spin = NoiseSpin(self.task_combo, self.strength_spin)
        self.stages_check = QCheckBox("add per-stage outputs")
        self.stages_check.setToolTip("Also add the stage-2 and stage-1 images as layers")

        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Ready")
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Layer", self.layer_combo)
        form.addRow("Task", self.task_combo)
        form.addRow("Weights", self.weights_combo)
        form.addRow("", self.file_box)
        form.addRow("", self.weights_warning)
        form.addRow("Tile size", self.tile_spin)
        form.addRow("Tile overlap", self.overlap_spin)
        form.addRow("Device", self.device_combo)
        form.addRow("", self.device_label)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Strength", self.strength_spin)
        form.addRow("Noise", self.noise_spin)
        form.addRow("", self.stages_check)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self._apply_settings(self._settings)
        self._refresh_layers()
        self._loading = False
        self._update_device_label()
        self._update_weights_state()

        # ---- connections
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        layers.selection.events.active.connect(self._on_active_changed)
        registry_events.changed.connect(self._on_registry_changed)
        self.task_combo.currentTextChanged.connect(self._on_task_changed)
        self.weights_combo.currentIndexChanged.connect(self._on_weights_changed)
        self.file_edit.editingFinished.connect(self._on_weights_changed)
        self.browse_button.clicked.connect(self._browse)
        self.tile_spin.valueChanged.connect(self._store_settings)
        self.overlap_spin.valueChanged.connect(self._store_settings)
        self.device_combo.currentTextChanged.connect(self._on_device_changed)
        self.precision_combo.currentTextChanged.connect(self._store_settings)
        self.stages_check.toggled.connect(self._store_settings)
        self.strength_spin.valueChanged.connect(self._store_settings)
        self.noise_spin.valueChanged.connect(self._store_settings)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    # ------------------------------------------------------------------ settings

    def settings(self) -> RestoreSettings:
        """The settings currently shown (also what gets saved)."""
        settings = self._settings
        settings.task = self.task_combo.currentText()
        settings.weights[settings.task] = self._weights_choice()
        tile = self.tile_spin.value()
        settings.tile_size = "auto" if tile == _AUTO_TILE else int(tile)
        settings.tile_overlap = int(self.overlap_spin.value())
        settings.device = self.device_combo.currentText()
        settings.precision = self.precision_combo.currentText()
        settings.stages = self.stages_check.isChecked()
        settings.strength = strength_value(self.strength_spin)
        settings.noise = self.noise_spin.noise()
        return settings

    def _apply_settings(self, settings: RestoreSettings) -> None:
        self.task_combo.setCurrentText(settings.task)
        self._fill_weights(settings.weights_for(settings.task))
        tile = settings.tile_size
        self.tile_spin.setValue(_AUTO_TILE if tile == "auto" else int(tile))
        self.overlap_spin.setValue(int(settings.tile_overlap))
        device = settings.device if settings.device in available_devices() else "auto"
        self.device_combo.setCurrentText(device)
        self.precision_combo.setCurrentText(settings.precision)
        self.stages_check.setChecked(bool(settings.stages))
        set_strength(self.strength_spin, settings.strength)
        self.noise_spin.set_noise(settings.noise)

    def _store_settings(self, *_: Any) -> None:
        if not self._loading:
            save_settings(self.settings())

    # ------------------------------------------------------------------ weights

    def _weights_choice(self) -> WeightsChoice:
        return weights_choice(self.weights_combo, self.file_edit)

    def _fill_weights(self, choice: WeightsChoice) -> None:
        """Rebuild the weights choices, selecting ``choice``."""
        loading, self._loading = self._loading, True
        fill_weights_combo(self.weights_combo, choice)
        self.file_edit.setText(choice.file)
        self._loading = loading

    def _update_weights_state(self) -> None:
        choice = self._weights_choice()
        task = self.task_combo.currentText()
        self.file_box.setVisible(choice.source == "file")
        warning = ""
        if choice.source == "bundled":
            info = bundled_info(task)
            tooltip = info.get("summary", "")
            self.weights_combo.setItemData(0, tooltip, Qt.ItemDataRole.ToolTipRole)
            if not info.get("trained", False):
                warning = (
                    f"⚠ The bundled {task} model is an UNTRAINED placeholder: it will not "
                    "restore images. Choose a model file or a fine-tuned model."
                )
        self.weights_warning.setText(warning)
        self.weights_warning.setVisible(bool(warning))

    def _on_task_changed(self, task: str) -> None:
        if self._loading:
            return
        self._fill_weights(self._settings.weights_for(task))
        self._update_weights_state()
        self._store_settings()

    def _on_weights_changed(self, *_: Any) -> None:
        if self._loading:
            return
        self._update_weights_state()
        self._store_settings()

    def _on_registry_changed(self) -> None:
        try:
            self._fill_weights(self._weights_choice())
            self._update_weights_state()
        except RuntimeError:  # the Qt object is already deleted
            registry_events.changed.disconnect(self._on_registry_changed)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MPRNet model file", "", _MODEL_FILTER)
        if path:
            self.file_edit.setText(path)
            self._on_weights_changed()

    # ------------------------------------------------------------------ device

    def _on_device_changed(self, *_: Any) -> None:
        self._update_device_label()
        self._store_settings()

    def _update_device_label(self) -> None:
        show_device(self.device_label, self.device_combo.currentText(), "runs")

    # ------------------------------------------------------------------ layers

    def selected_layer(self) -> Image | None:
        index = self.layer_combo.currentIndex()
        if 0 <= index < len(self._image_layers):
            return self._image_layers[index]
        return None

    def _refresh_layers(self) -> None:
        current = self.selected_layer()
        layers = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        for layer in layers:
            layer.events.name.disconnect(self._on_layers_changed)
            layer.events.name.connect(self._on_layers_changed)
        self._image_layers = layers
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems([layer.name for layer in layers])
        if current is None or current not in layers:
            current = propose_input(layers, self.viewer.layers.selection.active)
        if current is not None:
            self.layer_combo.setCurrentIndex(layers.index(current))
        self.layer_combo.blockSignals(False)

    def _on_layers_changed(self, *_: Any) -> None:
        self._refresh_layers()

    def _on_active_changed(self, event: Any) -> None:
        if self.job is not None and self.job.adding_layers:
            return  # keep the input chosen, rather than follow the new output layer
        active = event.value
        if is_result_layer(active):
            return  # never offer our own result for restoring again (the user may pick it)
        if isinstance(active, Image) and active in self._image_layers:
            self.layer_combo.setCurrentIndex(self._image_layers.index(active))

    # ------------------------------------------------------------------ running

    def run(self) -> RestoreJob | None:
        """Restore the chosen layer with the chosen settings (returns the started job)."""
        if self.job is not None and self.job.running:
            return None
        layer = self.selected_layer()
        if layer is None:
            notifications.show_warning("MPRNet restore: add or select an Image layer first")
            return None
        settings = self.settings()
        save_settings(settings)
        try:
            request = build_request(snapshot(layer), settings, strength=settings.strength,
                                    noise=settings.noise)
        except (TypeError, ValueError) as err:
            notifications.show_error(f"MPRNet restore: {err}")
            return None
        self.job = RestoreJob(
            self.viewer, request, on_progress=self._on_progress, on_finished=self._on_finished
        )
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)  # busy until the first tile batch is done
        self.status_label.setText(
            f"Restoring '{request.source.name}' ({request.task}, {request.model_label})…"
        )
        return self.job.start()

    def cancel(self) -> None:
        """Stop the running job between tile batches; nothing is added."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling after the current tiles…")

    def _on_progress(self, done: int, total: int) -> None:
        if not alive(self) or self.job is None or not self.job.running:
            return  # (a step queued before the job ended must not overwrite its end state)
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        step = self.job.progress if self.job is not None else None
        if step is not None:  # e.g. "12/36 tiles, 1.6 of 4.8 Mpix, 0:35 left"
            self.progress_bar.setFormat(step.describe())
        self.progressed.emit(done, total)

    def _on_finished(self, job: RestoreJob) -> None:
        if not alive(self):  # the widget was closed during the run
            return
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if job.state == "done" else 0)
        self.progress_bar.setFormat("%p%")
        name = job.request.source.name
        if job.state == "done":
            added = ", ".join(f"'{layer.name}'" for layer in job.layers)
            self.status_label.setText(f"Done in {job.seconds:.1f} s: added {added}")
        elif job.state == "cancelled":
            self.status_label.setText(f"Cancelled: nothing added for '{name}'")
        else:
            self.status_label.setText(f"Failed: {job.error}")
        self.job_finished.emit(job.state)

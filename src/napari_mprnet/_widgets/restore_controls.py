"""The settings part of the *Restore* dock widget: task, weights, tiling, device, precision,
strength, noise, outputs. Remembered between sessions (:mod:`.settings`), and used by the
*Layers > Filter > Restore* menu commands too.

Devices are listed once PyTorch is loaded (off the GUI thread, :mod:`.engine_loader`); until
then the device line says "loading PyTorch…".
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from .._layers import OUTPUT_TYPES
from ..model.tasks import TASKS
from ..pretrained import bundled_info
from ._controls import (
    NoiseSpin,
    TileSpin,
    fill_weights_combo,
    set_strength,
    show_device,
    strength_spin,
    strength_value,
    weights_choice,
)
from .engine_loader import available_devices, when_loaded
from .settings import PRECISIONS, RestoreSettings, WeightsChoice, load_settings, save_settings
from .weights_registry import registry_events

__all__ = ["MODEL_FILTER", "PRECISION_TIP", "RestoreControls"]

MODEL_FILTER = ("Model files and bioimage.io packages (*.safetensors *.pth *.pt *.ckpt *.tar "
                "*.zip rdf.yaml *.bioimageio.yaml);;All files (*)")
_WARNING_STYLE = "color: #f0a030; font-weight: bold;"
#: What "auto" precision does (the engine's rule, :func:`~..engine.precision.choose_precision`).
PRECISION_TIP = (
    "auto: fp16 autocast on CUDA; on a CPU bf16 autocast where the CPU computes bf16 "
    "natively (AVX512-BF16 or AMX) and the model keeps its accuracy in it, fp32 elsewhere; "
    "the line above says what a run will use. fp32 is exact but slower; fp16/bf16 are "
    "faster and use less memory"
)
_OUTPUT_TIP = (
    "auto: 8-bit images (grey or RGB) stay 8-bit, as napari shows and saves them; 16-bit "
    "and float images give float32 (keeps sub-count precision). 'same as input' keeps every "
    "integer type; float32 always gives float32"
)


class RestoreControls(QWidget):
    """The restoration settings, shown in a form; ``changed()`` after every edit (they are
    saved then)."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._loading = True
        self._devices_listed = False
        self._settings = load_settings()
        self.task_combo = QComboBox()
        self.task_combo.addItems(list(TASKS))
        self.weights_combo = QComboBox()
        self.weights_combo.setToolTip(
            "Bundled default model for the task, a model file (official MPRNet checkpoint, "
            "safetensors...) or a fine-tuned model (kept between sessions)"
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

        self.tile_spin = TileSpin()
        self.tile_spin.setToolTip(
            "Tile edge in pixels (>= 16); 'auto' picks the largest tile that fits in "
            "memory. The arrows step by 64 px from 256"
        )
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(0, 1024)
        self.overlap_spin.setSingleStep(8)
        self.overlap_spin.setSuffix(" px")
        self.overlap_spin.setToolTip("Overlap of neighbouring tiles, blended without seams")
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto")
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(list(PRECISIONS))
        self.precision_combo.setToolTip(PRECISION_TIP)
        self.strength_spin = strength_spin()
        self.noise_spin = NoiseSpin(self.task_combo, self.strength_spin)
        self.output_combo = QComboBox()
        self.output_combo.addItems(list(OUTPUT_TYPES))
        self.output_combo.setToolTip(_OUTPUT_TIP)
        self.stages_check = QCheckBox("add per-stage outputs")
        self.stages_check.setToolTip("Also add the stage-2 and stage-1 images as layers")
        self.removed_check = QCheckBox("show what was removed")
        self.removed_check.setToolTip("Add input - result as a layer and warn where what the "
                                      "denoiser removed looks like structure, not noise")

        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        for label, widget in (("Task", self.task_combo), ("Weights", self.weights_combo),
                              ("", self.file_box), ("", self.weights_warning),
                              ("Tile size", self.tile_spin), ("Tile overlap", self.overlap_spin),
                              ("Device", self.device_combo), ("", self.device_label),
                              ("Precision", self.precision_combo),
                              ("Strength", self.strength_spin), ("Noise", self.noise_spin),
                              ("Output type", self.output_combo), ("", self.stages_check),
                              ("", self.removed_check)):
            self.form.addRow(label, widget)

        self._apply_settings(self._settings)
        self._loading = False
        self._update_device_label()
        self._update_weights_state()
        when_loaded(self._engine_loaded)

        registry_events.changed.connect(self._on_registry_changed)
        self.task_combo.currentTextChanged.connect(self._on_task_changed)
        self.weights_combo.currentIndexChanged.connect(self._on_weights_changed)
        self.file_edit.editingFinished.connect(self._on_weights_changed)
        self.browse_button.clicked.connect(self._browse)
        self.device_combo.currentTextChanged.connect(self._on_device_changed)
        for signal in (self.tile_spin.valueChanged, self.overlap_spin.valueChanged,
                       self.precision_combo.currentTextChanged, self.stages_check.toggled,
                       self.removed_check.toggled,
                       self.strength_spin.valueChanged, self.noise_spin.valueChanged,
                       self.output_combo.currentTextChanged):
            signal.connect(self._store_settings)

    # ------------------------------------------------------------------ settings

    def settings(self) -> RestoreSettings:
        """The settings currently shown (also what gets saved)."""
        settings = self._settings
        settings.task = self.task_combo.currentText()
        settings.weights[settings.task] = self._weights_choice()
        settings.tile_size = self.tile_spin.tile_size()
        settings.tile_overlap = int(self.overlap_spin.value())
        if self._devices_listed:  # (until then the saved device is kept)
            settings.device = self.device_combo.currentText()
        settings.precision = self.precision_combo.currentText()
        settings.stages = self.stages_check.isChecked()
        settings.show_removed = self.removed_check.isChecked()
        settings.strength = strength_value(self.strength_spin)
        settings.noise = self.noise_spin.noise()
        settings.output_type = self.output_combo.currentText()
        return settings

    def _apply_settings(self, settings: RestoreSettings) -> None:
        self.task_combo.setCurrentText(settings.task)
        self._fill_weights(settings.weights_for(settings.task))
        self.tile_spin.set_tile_size(settings.tile_size)
        self.overlap_spin.setValue(int(settings.tile_overlap))
        self.precision_combo.setCurrentText(settings.precision)
        self.stages_check.setChecked(bool(settings.stages))
        self.removed_check.setChecked(bool(settings.show_removed))
        set_strength(self.strength_spin, settings.strength)
        self.noise_spin.set_noise(settings.noise)
        self.output_combo.setCurrentText(settings.output_type)

    def _store_settings(self, *_: Any) -> None:
        if not self._loading:
            save_settings(self.settings())
            self.changed.emit()

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
            self.weights_combo.setItemData(0, info.get("summary", ""),
                                           Qt.ItemDataRole.ToolTipRole)
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
        path, _ = QFileDialog.getOpenFileName(self, "MPRNet model file", "", MODEL_FILTER)
        if path:
            self.file_edit.setText(path)
            self._on_weights_changed()

    # ------------------------------------------------------------------ device

    def _engine_loaded(self) -> None:
        """List the devices once torch is loaded (the saved one selected if present)."""
        loading, self._loading = self._loading, True
        self.device_combo.clear()
        self.device_combo.addItems(available_devices())
        saved = self._settings.device
        self.device_combo.setCurrentText(saved if saved in available_devices() else "auto")
        self._devices_listed = True
        self._loading = loading
        self._update_device_label()

    def _on_device_changed(self, *_: Any) -> None:
        if self._loading:
            return
        self._update_device_label()
        self._store_settings()

    def _update_device_label(self) -> None:
        show_device(self.device_label, self.device_combo.currentText(), "runs")

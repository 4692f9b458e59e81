"""The *Fine-tune* dock widget: a thin Qt front end over
:func:`napari_mprnet.training.finetune`.

It collects the training pairs (two Image layers, or two folders of TIFF files matched by
name; or the noisy input alone, Target "none (self-supervised)", with a Noise2Void or
Noise2Noise-from-frames method), the base weights and the schedule, runs a
:class:`~napari_mprnet._widgets._training_job.FinetuneJob` and plots the loss and
validation score live (PSNR with a target, the self-supervised loss without; a single image
holds out a band of itself). The tuned model (also a stopped run's) is saved and registered
with :func:`~napari_mprnet._widgets.weights_registry.persist_weights`, so it appears in the
*Restore* widget, in this session and later ones, and can be exported to bioimage.io.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils import notifications
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..model.tasks import TASKS
from ._controls import alive, fill_weights_combo, scrolling, show_device, weights_choice
from ._requests import resolve_weights
from ._training_job import FinetuneJob, FinetuneRequest
from .engine_loader import available_devices, when_loaded
from .finetune_data import FOLDERS, LAYERS, TrainingDataForm, row
from .finetune_output import TunedModelOutput
from .finetune_report import SELF_SUPERVISED_METHODS, result_text, step_text, validation_of
from .finetune_schedule import SCHEDULE_WIDGETS, ScheduleControls
from .restore_controls import MODEL_FILTER
from .settings import WeightsChoice
from .training_plot import TrainingPlot
from .weights_registry import persist_weights, register_weights, registry_events

if TYPE_CHECKING:
    import napari

__all__ = ["FOLDERS", "LAYERS", "SELF_SUPERVISED_METHODS", "FinetuneWidget"]

_TITLE = "MPRNet fine-tune"


class FinetuneWidget(QWidget):
    """Fine-tune MPRNet on (degraded, clean) pairs and hand the result to the restore widget.

    Signals
    -------
    step_done(event)
        After every training step (the trainer's event dict).
    job_finished(state)
        When a run ends: "done", "stopped" or "failed".
    export_finished(path)
        When a bioimage.io export has been written ("" if it failed).
    """

    step_done = Signal(object)
    job_finished = Signal(str)
    export_finished = Signal(str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.job: FinetuneJob | None = None
        #: The last run's FinetuneResult (None before the first run ends with a model).
        self.result: Any = None
        #: Name the last model was registered under.
        self.registered_name: str | None = None
        self._start: tuple[str, float] | None = None
        self._last_val: tuple[str, float] | None = None
        # ---- data: layers or folders (proposed by meaning, see layer_roles)
        self.data_form = TrainingDataForm(self.viewer)
        form_widgets = ("source_combo", "input_combo", "target_combo", "input_dir_edit",
                        "target_dir_edit", "layers_box", "folders_box")
        for attribute in form_widgets:
            setattr(self, attribute, getattr(self.data_form, attribute))

        # ---- model
        self.task_combo = QComboBox()
        self.task_combo.addItems(list(TASKS))
        self.weights_combo = QComboBox()
        self.weights_combo.setToolTip(
            "Starting point: the bundled model for the task, a model file, or a model "
            "fine-tuned in this session"
        )
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("path to a model file")
        self.browse_button = QPushButton("Browse…")
        self.file_box = row(self.file_edit, self.browse_button)

        # ---- schedule
        self.schedule = ScheduleControls()
        for attribute in SCHEDULE_WIDGETS:
            setattr(self, attribute, getattr(self.schedule, attribute))
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto")  # the others once torch is loaded
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("default: from the input and task")
        self.name_edit.setToolTip("Name of the tuned model in the Restore widget's weights list")

        # ---- run
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Stop after the current step; the model so far is kept")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.plot = TrainingPlot()
        self.status_label = QLabel("Ready")
        self.status_label.setWordWrap(True)
        self.save_button = QPushButton("Save model…")
        self.export_button = QPushButton("Export to bioimage.io…")
        for button in (self.save_button, self.export_button):
            button.setEnabled(False)

        self.form = form = QFormLayout()
        form.addRow("Data", self.source_combo)
        form.addRow(self.data_form)
        form.addRow(self.method_label, self.method_combo)
        form.addRow("Task", self.task_combo)
        form.addRow("Base weights", self.weights_combo)
        form.addRow("", self.file_box)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Patch size", self.patch_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Validation fraction", self.val_spin)
        form.addRow("Device", self.device_combo)
        form.addRow("", self.device_label)
        form.addRow("Model name", self.name_edit)
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addLayout(form)
        layout.addWidget(row(self.start_button, self.stop_button))
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.plot)
        layout.addWidget(self.status_label)
        layout.addWidget(row(self.save_button, self.export_button))
        layout.addStretch(1)
        self.scroll_area = scrolling(content, self)

        self.output = TunedModelOutput(self, self.status_label, _TITLE,
                                       self.export_finished.emit)
        self._fill_weights(WeightsChoice())
        self._update_device_label()
        when_loaded(self._engine_loaded)
        self._self_supervised = False
        self._on_target_mode_changed()

        # ---- connections (the data form's own handlers run first)
        for signal in (self.target_combo.currentIndexChanged, self.source_combo.currentTextChanged,
                       self.target_dir_edit.textChanged, self.viewer.layers.events.inserted,
                       self.viewer.layers.events.removed):
            signal.connect(self._on_target_mode_changed)
        registry_events.changed.connect(self._on_registry_changed)
        self.weights_combo.currentIndexChanged.connect(self._on_weights_changed)
        self.browse_button.clicked.connect(self._browse_model)
        self.device_combo.currentTextChanged.connect(self._update_device_label)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self.output.save_clicked)
        self.export_button.clicked.connect(lambda: self.output.export_clicked(
            self.registered_name, self._training_inputs()))

    def selected_layer(self, combo: QComboBox) -> Any:
        """The Image layer ``combo`` (input_combo or target_combo) shows, or None."""
        return self.data_form.selected_layer(combo)

    # ------------------------------------------------------------------ weights / device

    def _weights_choice(self) -> WeightsChoice:
        return weights_choice(self.weights_combo, self.file_edit)

    def _fill_weights(self, choice: WeightsChoice) -> None:
        fill_weights_combo(self.weights_combo, choice)
        self._on_weights_changed()

    def _on_weights_changed(self, *_: Any) -> None:
        self.file_box.setVisible(self._weights_choice().source == "file")

    def _on_registry_changed(self) -> None:
        try:
            self._fill_weights(self._weights_choice())
        except RuntimeError:  # the Qt object is already deleted
            registry_events.changed.disconnect(self._on_registry_changed)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MPRNet model file", "", MODEL_FILTER)
        if path:
            self.file_edit.setText(path)

    def _on_target_mode_changed(self, *_: Any) -> None:
        """Show the method choice without a target; switch the default learning rate."""
        if not alive(self):
            return
        self_supervised = self.data_form.self_supervised
        self.method_label.setVisible(self_supervised)
        self.method_combo.setVisible(self_supervised)
        if self_supervised != self._self_supervised:
            old, new = (2e-4, 5e-5) if self_supervised else (5e-5, 2e-4)
            if abs(self.lr_spin.value() - old) < 1e-9:  # still the default: follow it
                self.lr_spin.setValue(new)
            self._self_supervised = self_supervised

    def _engine_loaded(self) -> None:
        self.device_combo.clear()
        self.device_combo.addItems(available_devices())
        self._update_device_label()

    def _update_device_label(self, *_: Any) -> None:
        show_device(self.device_label, self.device_combo.currentText(), "trains")

    # ------------------------------------------------------------------ running

    def build_request(self) -> FinetuneRequest:
        """The request for the current choices; raises ValueError with a user message."""
        inputs, targets, label, data_name = self.data_form.data()
        task = self.task_combo.currentText()
        model, model_label = resolve_weights(self._weights_choice(), task)
        if self.patch_spin.value() % 8:
            raise ValueError(f"patch size must be a multiple of 8, got {self.patch_spin.value()}")
        method, series, blind_spot, distance = (
            ("supervised", False, "pixel", "mse") if targets is not None
            else SELF_SUPERVISED_METHODS[self.method_combo.currentText()])
        return FinetuneRequest(
            method=method,
            pairs_from_series=series,
            blind_spot_mask=blind_spot,
            blind_spot_distance=distance,
            inputs=inputs,
            targets=targets,
            data_label=label,
            task=task,
            model=task if model is None else model,
            model_label=model_label,
            steps=self.steps_spin.value(),
            patch_size=self.patch_spin.value(),
            batch_size=self.batch_spin.value(),
            learning_rate=float(self.lr_spin.value()),
            val_fraction=float(self.val_spin.value()),
            device=self.device_combo.currentText(),
            data_name=data_name,
        )

    def start(self) -> FinetuneJob | None:
        """Start fine-tuning with the current choices (returns the started job)."""
        if self.job is not None and self.job.running:
            return None
        try:
            request = self.build_request()
        except (TypeError, ValueError) as err:
            notifications.show_error(f"{_TITLE}: {err}")
            return None
        self.plot.clear(request.steps)
        self._start = self._last_val = None
        self.job = FinetuneJob(request, on_event=self._on_event, on_finished=self._on_finished)
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.save_button.setEnabled(False)
        self.export_button.setEnabled(False)
        self.progress_bar.setRange(0, 0)  # busy while the data and the model load
        self.status_label.setText(
            f"Fine-tuning {request.model_label} on {request.data_label} for "
            f"{request.steps} steps…"
        )
        return self.job.start()

    def stop(self) -> None:
        """Stop after the current step; the model trained so far is kept and offered."""
        if self.job is not None and self.job.running:
            self.job.stop()
            self.stop_button.setEnabled(False)
            self.status_label.setText("Stopping after the current step…")

    def _on_event(self, event: dict) -> None:
        if not alive(self):
            return
        score = validation_of(event)
        if "loss" not in event:  # what the trainer reports before and between steps
            if event.get("event") == "start" and score is not None:  # the starting model
                self._start = score
                self.plot.add_val(0, score[1], score[0])
            message = event.get("message")
            if message:
                self.status_label.setText(str(message))
            return
        step, steps = int(event["step"]), int(event["steps"])
        self.progress_bar.setRange(0, steps)
        self.progress_bar.setValue(step)
        self.plot.add_loss(step, float(event["loss"]))
        if score is not None:
            self._last_val = score
            self.plot.add_val(step, score[1], score[0])
        if not (self.job is not None and self.job.stop_requested):
            self.status_label.setText(step_text(step, steps, float(event["loss"]),
                                                self._last_val, self._start))
        self.step_done.emit(event)

    def _model_name(self, job: FinetuneJob) -> str:
        name = self.name_edit.text().strip()
        if name:
            return name
        request = job.request
        return f"{request.task} on {request.data_name} ({job.result.steps_done} steps)"

    def _on_finished(self, job: FinetuneJob) -> None:
        if not alive(self):  # the widget was closed during the run
            return
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if job.result is None:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.status_label.setText(f"Failed: {job.error}")
            self.job_finished.emit(job.state)
            return
        result = self.result = job.result
        name = self._model_name(job)
        self.registered_name = self._register(name, result.model)
        self.progress_bar.setRange(0, max(1, job.request.steps))
        self.progress_bar.setValue(result.steps_done)
        self.status_label.setText(
            f"{result_text(result, job.seconds)}. '{name}' is now in the Restore widget's "
            "weights list."
        )
        self.save_button.setEnabled(True)
        self.export_button.setEnabled(True)
        notifications.show_info(f"{_TITLE}: model '{name}' registered for the Restore widget")
        self.job_finished.emit(job.state)

    def _register(self, name: str, model: Any) -> str | None:
        """Save the model among the fine-tuned ones (kept between sessions) and offer it in
        the Restore widget; in this session only if it cannot be saved."""
        try:
            persist_weights(name, model)
        except OSError as err:
            notifications.show_warning(f"{_TITLE}: could not keep '{name}' for later "
                                       f"sessions ({err}); it is offered in this one")
            register_weights(name, model)
        except (TypeError, ValueError) as err:
            notifications.show_error(f"{_TITLE}: could not register the model: {err}")
            return None
        return name

    # ------------------------------------------------------------------ save / export

    def save_model_to(self, path: str | Path) -> Path | None:
        """Write the last result with its metadata (``.safetensors`` recommended)."""
        return self.output.save_to(path)

    def export_to(self, path: str | Path) -> Any:
        """Export the last result as a bioimage.io package in a thread worker (returns it),
        with a plane of its training inputs (their type) as the package's test input."""
        return self.output.export_to(path, self.registered_name, self._training_inputs())

    def _training_inputs(self) -> Any:
        return None if self.job is None else self.job.request.inputs

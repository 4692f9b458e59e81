"""The *Restore* dock widget: a thin Qt front end over :mod:`napari_mprnet.api`.

It only collects choices (:class:`~.restore_controls.RestoreControls`), starts a
:class:`~napari_mprnet._widgets._jobs.RestoreJob` through the session's job registry
(:data:`~napari_mprnet._widgets._jobs.JOBS`: one job per layer) and shows the progress of
the job running on its layer, whoever started it (this widget or a *Layers > Filter >
Restore* menu command), with a Cancel button. The input layer is captured when *Run* is
pressed, so changing the selection during a run cannot misplace the results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.layers import Image
from napari.utils import notifications
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._layers import layer_key, snapshot
from ._controls import alive, scrolling
from ._jobs import JOBS, LayerBusyError, RestoreJob
from ._requests import build_request
from .engine_loader import available_devices
from .layer_roles import is_result_layer, propose_input
from .restore_controls import MODEL_FILTER, RestoreControls
from .settings import RestoreSettings, save_settings

if TYPE_CHECKING:
    import napari

__all__ = ["MODEL_FILTER", "RestoreWidget", "available_devices"]

#: The controls' widgets, also reachable as attributes of the widget.
_CONTROLS = ("task_combo", "weights_combo", "file_edit", "browse_button", "file_box",
             "weights_warning", "tile_spin", "overlap_spin", "device_combo", "device_label",
             "precision_combo", "strength_spin", "noise_spin", "output_combo", "stages_check",
             "removed_check")


class RestoreWidget(QWidget):
    """Restore an Image layer with MPRNet (denoise, deblur or derain).

    Signals
    -------
    progressed(done, total)
        After every unit of work of the job shown.
    job_finished(state)
        When the job shown ends: "done", "cancelled" or "failed".
    """

    progressed = Signal(int, int)
    job_finished = Signal(str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        #: The job shown: running on the chosen layer, or the last one shown.
        self.job: RestoreJob | None = None
        self._running_text = ""
        self._image_layers: list[Image] = []

        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer to restore (captured when Run is pressed)")
        self.controls = RestoreControls()
        for name in _CONTROLS:
            setattr(self, name, getattr(self.controls, name))
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip(
            "Stop the run on this layer (started here or from the Layers > Filter > Restore "
            "menu) after its current tiles; nothing is added")
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self._idle_bar(0)
        self.status_label = QLabel("Ready")
        self.status_label.setWordWrap(True)

        content = QWidget()
        layer_form = QFormLayout()
        layer_form.addRow("Layer", self.layer_combo)
        layout = QVBoxLayout(content)
        layout.addLayout(layer_form)
        layout.addWidget(self.controls)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.scroll_area = scrolling(content, self)

        self._refresh_layers()
        self._follow_layer()

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        layers.selection.events.active.connect(self._on_active_changed)
        JOBS.started.connect(self._on_job_started)
        self.layer_combo.currentIndexChanged.connect(self._follow_layer)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    def settings(self) -> RestoreSettings:
        """The settings currently shown (also what gets saved)."""
        return self.controls.settings()

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
        if not alive(self):
            return
        self._refresh_layers()
        self._follow_layer()

    def _on_active_changed(self, event: Any) -> None:
        if self.job is not None and self.job.adding_layers:
            return  # keep the input chosen, rather than follow the new output layer
        active = event.value
        if is_result_layer(active):
            return  # never offer our own result for restoring again (the user may pick it)
        if isinstance(active, Image) and active in self._image_layers:
            self.layer_combo.setCurrentIndex(self._image_layers.index(active))

    def _follow_layer(self, *_: Any) -> None:
        """Show the job running on the chosen layer, if any (from here or the menu); step
        the noise level in the layer's intensity units."""
        layer = self.selected_layer()
        if layer is not None:
            self.noise_spin.follow_range(*layer.contrast_limits_range)
        job = None if layer is None else JOBS.running_on(layer_key(layer))
        if job is not None:
            self._attach(job)
        elif self.job is not None and self.job.running:
            self._detach()

    def _on_job_started(self, job: RestoreJob) -> None:
        if not alive(self):
            JOBS.started.disconnect(self._on_job_started)
            return
        layer = self.selected_layer()
        if layer is not None and job.request.source.key == layer_key(layer):
            self._attach(job)

    # ------------------------------------------------------------------ running

    def run(self) -> RestoreJob | None:
        """Restore the chosen layer with the chosen settings (returns the started job; None
        if nothing started, e.g. the layer is being restored already)."""
        layer = self.selected_layer()
        if layer is None:
            notifications.show_warning("MPRNet restore: add or select an Image layer first")
            return None
        settings = self.settings()
        save_settings(settings)
        try:
            request = build_request(snapshot(layer), settings, strength=settings.strength,
                                    noise=settings.noise, show_removed=settings.show_removed)
            return JOBS.start(self.viewer, request, on_created=self._attach)
        except (TypeError, ValueError) as err:  # LayerBusyError included
            level = "warning" if isinstance(err, LayerBusyError) else "error"
            getattr(notifications, f"show_{level}")(f"MPRNet restore: {err}")
            return None

    def cancel(self) -> None:
        """Stop the job on the chosen layer after its current tiles; nothing is added."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling after the current tiles…")

    def _attach(self, job: RestoreJob) -> None:
        """Show ``job``'s progress here, with Cancel."""
        if self.job is job:
            return
        self._disconnect()
        self.job = job
        job.progressed.connect(self._on_progress)
        job.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(not job.cancelling)
        self.progress_bar.setRange(0, 0)  # busy until the first tile batch is done
        request = job.request
        where = "" if request.origin == "the Restore widget" else (
            f", started from {request.origin}")
        self._running_text = (f"Restoring '{request.source.name}' ({request.task}, "
                              f"{request.model_label}{where})…")
        self.status_label.setText(self._running_text)
        if job.progress is not None:
            self._on_progress(job.progress.done, job.progress.total)

    def _disconnect(self) -> None:
        if self.job is not None:
            self.job.progressed.disconnect(self._on_progress)
            self.job.finished.disconnect(self._on_finished)

    def _detach(self) -> None:
        """The chosen layer has no job: stop showing the one of another layer."""
        self._disconnect()
        self.job = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._idle_bar(0)
        self.status_label.setText("Ready")

    def _idle_bar(self, value: int) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(value)
        self.progress_bar.setFormat("%p%")

    def _on_progress(self, done: int, total: int) -> None:
        job = self.job
        if not alive(self) or job is None or not job.running:
            return  # (a step queued before the job ended must not overwrite its end state)
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        if job.progress is not None:  # e.g. "12/36 tiles, 1.6 of 4.8 Mpix, 0:35 left"
            self.progress_bar.setFormat(job.progress.describe())
            # a step before the first tile may say what it does (converting the network)
            self.status_label.setText(job.progress.note or self._running_text)
        self.progressed.emit(done, total)

    def _on_finished(self, job: RestoreJob) -> None:
        if not alive(self):  # the widget was closed during the run
            return
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._idle_bar(1 if job.state == "done" else 0)
        name = job.request.source.name
        if job.state == "done":
            added = ", ".join(f"'{layer.name}'" for layer in job.layers)
            self.status_label.setText(f"Done in {job.seconds:.1f} s: added {added}")
        elif job.state == "cancelled":
            self.status_label.setText(f"Cancelled: nothing added for '{name}'")
        else:
            self.status_label.setText(f"Failed: {job.error}")
        self.job_finished.emit(job.state)

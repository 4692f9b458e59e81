"""Restoration jobs in napari thread workers, at most one per layer, all of them stoppable.

The glue shared by the Restore widget and the *Layers > Filter > Restore* menu commands. No
numerics here: the work is :func:`napari_mprnet.api.iter_restore` (imported in the worker
thread, so the first run loads torch off the GUI thread), and the output layers come from
:func:`napari_mprnet._layers.make_layers`.

:data:`JOBS` knows every running job by its input layer: a second request for a layer being
restored is refused with a message saying what runs and how to stop it; the Restore widget
follows (and can cancel) the job of its layer whoever started it. Every job shows a
cancellable progress bar in napari's activity dock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari.qt.threading import create_worker
from napari.utils import cancelable_progress, notifications
from psygnal import Signal

from .._layers import make_layers, notify_removed
from ._requests import RestoreRequest
from .layer_roles import run_names

if TYPE_CHECKING:
    from ..engine.progress import Progress

__all__ = ["JOBS", "JobProgress", "JobRegistry", "LayerBusyError", "RestoreJob"]

log = logging.getLogger(__name__)

#: Jobs still running (restoration and fine-tuning); keeps them alive without a widget.
_ACTIVE_JOBS: set[Any] = set()
#: Shown in the activity dock until the first tile batch is done.
_STARTING = "starting: loading PyTorch and the model"


@dataclass(frozen=True)
class _Failed:
    error: Exception


@dataclass(frozen=True)
class _Outcome:
    results: list
    record: dict
    removed: Any = None  # a RemovedPart when asked for


def _restore_steps(request: RestoreRequest) -> Generator[Progress, None, Any]:
    """Runs in the worker thread: yields progress; returns an ``_Outcome`` or a ``_Failed``.

    Failures are returned rather than raised so that they reach the user as a plain
    notification instead of napari's traceback dialog.
    """
    try:
        from ..api import iter_restore, removed_part
        from ..provenance import run_record

        results = yield from iter_restore(
            request.source.data,
            request.task,
            request.model,
            tile_size=request.tile_size,
            tile_overlap=request.tile_overlap,
            device=request.device,
            precision=request.precision,
            stages=request.stages,
            rgb=request.source.rgb,
            strength=request.strength,
            noise=request.noise,
            output_dtype=request.output_dtype,
        )
        record = run_record(request.model, request.task, request.strength, request.noise,
                            name=request.model_label)
        removed = removed_part(request.source.data, results[0], task=request.task,
                               rgb=request.source.rgb) if request.show_removed else None
    except Exception as err:
        log.debug("napari-mprnet restoration failed", exc_info=True)
        return _Failed(err)
    return _Outcome(list(results), record, removed)


def _describe(error: Exception) -> str:
    if isinstance(error, (ValueError, TypeError, FileNotFoundError, MemoryError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


class JobProgress(cancelable_progress):
    """The activity dock's bar of a job: its Cancel button cancels the job."""

    def __init__(self, job: RestoreJob) -> None:
        self._job = job
        super().__init__(total=0, desc=f"{job.description} ({_STARTING})")  # busy until known

    def cancel(self) -> None:
        super().cancel()
        self._job.cancel()


class RestoreJob:
    """Restore a layer snapshot in a thread worker; add the output layers when done.

    ``state`` goes ``"pending"`` -> ``"running"`` -> ``"done"``, ``"cancelled"`` or
    ``"failed"``. Signals are emitted in the main (Qt) thread: ``progressed(done, total)``
    after every unit of work and ``finished(job)`` at the end, whatever the outcome. A
    cancelled or failed job adds no layers.
    """

    progressed = Signal(int, int)
    finished = Signal(object)

    def __init__(self, viewer: Any, request: RestoreRequest) -> None:
        self.viewer = viewer
        self.request = request
        self.state = "pending"
        self.error: Exception | None = None
        self.layers: list[Any] = []
        self.seconds = 0.0
        #: True while the output layers are being added (napari selects each new layer)
        self.adding_layers = False
        #: The latest :class:`~napari_mprnet.engine.progress.Progress` (tiles, pixels, ETA)
        self.progress: Progress | None = None
        self._started = 0.0
        self.description = f"MPRNet {request.task}: {request.source.name}"
        self.worker = create_worker(_restore_steps, request, _start_thread=False,
                                    _ignore_errors=True)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.aborted.connect(self._aborted)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)
        self.pbar: JobProgress | None = None

    # ------------------------------------------------------------------ control

    @property
    def running(self) -> bool:
        return self.state in ("pending", "running")

    @property
    def cancelling(self) -> bool:
        return self.running and self.worker.abort_requested

    def start(self) -> RestoreJob:
        self.state = "running"
        self._started = time.perf_counter()
        self.pbar = JobProgress(self)
        _ACTIVE_JOBS.add(self)
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Stop after the current unit of work (a tile batch or a probed plane); nothing is
        added."""
        if self.running and not self.worker.abort_requested:
            self.worker.quit()
            if self.pbar is not None:
                self.pbar.set_description(f"{self.description} (cancelling…)")

    def describe(self) -> str:
        """E.g. "denoise of 'cells' (started from the menu, 12/36 tiles, 0:35 left)"."""
        where = f"started from {self.request.origin}"
        step = self.progress.describe() if self.progress is not None else _STARTING
        return f"{self.request.task} of '{self.request.source.name}' ({where}, {step})"

    # ------------------------------------------------------------------ worker signals

    def _yielded(self, step: Progress) -> None:
        self.progress = step
        pbar = self.pbar  # (updating it may run queued events, which can close it)
        if pbar is not None and not self.worker.abort_requested:
            if pbar.total != step.total:
                pbar.total = step.total
            pbar.n = step.done
            pbar.set_description(f"{self.description} ({step.describe()})")
            pbar.refresh()
        self.progressed.emit(step.done, step.total)

    def _returned(self, outcome: Any) -> None:
        if isinstance(outcome, _Failed):
            self._fail(outcome.error)
            return
        if self.worker.abort_requested:
            self.state = "cancelled"
            return
        self.adding_layers = True
        try:
            request = self.request
            layers = make_layers(request.source, outcome.results, request.task,
                                 outcome.record, outcome.removed)
            taken = {layer.name for layer in self.viewer.layers}
            for layer, name in zip(layers, run_names([lyr.name for lyr in layers], taken)):
                layer.name = name  # a repeated run's layers all carry the same number
            # stage 1, stage 2, then the final image on top (and selected)
            for layer in reversed(layers):
                self.viewer.add_layer(layer)
        except Exception as err:  # noqa: BLE001 - e.g. the viewer was closed meanwhile
            self._fail(err)
            return
        finally:
            self.adding_layers = False
        self.layers = layers
        self.state = "done"
        notify_removed(outcome.removed, request.source.name)

    def _aborted(self) -> None:
        self.state = "cancelled"
        notifications.show_info(f"{self.description}: cancelled, no layer added")

    def _errored(self, error: Exception) -> None:
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        self.state = "failed"
        self.error = error
        notifications.show_error(
            f"Restoring '{self.request.source.name}' ({self.request.task}) failed: "
            f"{_describe(error)}"
        )

    def _finished(self) -> None:
        self.seconds = time.perf_counter() - self._started
        if self.state == "running":  # finished without a result (e.g. the thread died)
            self.state = "cancelled" if self.worker.abort_requested else "failed"
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        _ACTIVE_JOBS.discard(self)
        JOBS.forget(self)
        self.finished.emit(self)


class LayerBusyError(ValueError):
    """A layer is being restored already (the message says by what and how to stop it)."""


class JobRegistry:
    """The running restoration jobs by input layer (its ``unique_id``): one per layer.

    ``started(job)`` and ``finished(job)`` are emitted in the GUI thread.
    """

    started = Signal(object)
    finished = Signal(object)

    def __init__(self) -> None:
        self._jobs: dict[str, RestoreJob] = {}

    def running_on(self, key: str) -> RestoreJob | None:
        """The job restoring the layer ``key`` (a snapshot's ``key``), or None."""
        job = self._jobs.get(key)
        return job if job is not None and job.running else None

    def start(self, viewer: Any, request: RestoreRequest,
              on_created: Callable[[RestoreJob], Any] | None = None) -> RestoreJob:
        """Start restoring ``request``'s layer unless it is being restored already.

        ``on_created(job)`` runs before the job starts (to connect to its signals).

        Raises
        ------
        LayerBusyError
            If a job is running on that layer: nothing is started.
        """
        key = request.source.key
        running = self.running_on(key)
        if running is not None:
            raise LayerBusyError(
                f"'{request.source.name}' is already being restored: {running.describe()}. "
                "Wait for it, or cancel it in the activity dock or the Restore widget"
            )
        job = RestoreJob(viewer, request)
        if on_created is not None:
            on_created(job)
        self._jobs[key] = job
        job.start()
        self.started.emit(job)
        return job

    def forget(self, job: RestoreJob) -> None:
        key = job.request.source.key
        if self._jobs.get(key) is job:
            del self._jobs[key]
            self.finished.emit(job)

    def running(self) -> list[RestoreJob]:
        """Every running job."""
        return [job for job in self._jobs.values() if job.running]


#: The one registry of the session (menu commands and every Restore widget).
JOBS = JobRegistry()

"""One fine-tuning run in a napari thread worker, for the *Fine-tune* widget.

No numerics here: the work is :func:`napari_mprnet.training.finetune`. Its per-step callback
runs in the worker thread; it forwards every event to the Qt main thread through a queued
signal and returns False once a stop is requested, so training ends cleanly after the
current step and the partially trained model is still returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import notifications, progress
from qtpy.QtCore import QObject, Signal

from . import _jobs
from ._jobs import _describe, _Failed

__all__ = ["FinetuneJob", "FinetuneRequest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneRequest:
    """Everything a fine-tuning run needs, fixed when it starts."""

    inputs: Any  # a layer snapshot (data, rgb, name) or a folder path
    targets: Any
    data_label: str
    task: str
    model: Any  # a task name, a model file path or an MPRNet
    model_label: str
    steps: int = 200
    patch_size: int = 64
    batch_size: int = 4
    learning_rate: float = 2e-4
    val_fraction: float = 0.1
    device: str = "auto"
    data_name: str = "data"
    method: str = "supervised"
    pairs_from_series: bool = False
    blind_spot_mask: str = "pixel"
    blind_spot_distance: str = "mse"


class _Relay(QObject):
    """Lives in the main thread; signals emitted from the worker arrive there (queued)."""

    event = Signal(object)


def _train(request: FinetuneRequest, emit: Callable[[dict], Any],
           stop_requested: Callable[[], bool]) -> Any:
    """Runs in the worker thread: returns the FinetuneResult or a ``_Failed``."""
    from ..training.trainer import finetune

    def callback(event: dict) -> bool:
        emit(dict(event))
        return not stop_requested()

    try:
        return finetune(
            request.inputs,
            request.targets,
            model=request.model,
            steps=request.steps,
            patch_size=request.patch_size,
            batch_size=request.batch_size,
            learning_rate=request.learning_rate,
            val_fraction=request.val_fraction,
            device=request.device,
            callback=callback,
            method=request.method,
            pairs_from_series=request.pairs_from_series,
            blind_spot_mask=request.blind_spot_mask,
            blind_spot_distance=request.blind_spot_distance,
        )
    except Exception as err:  # reported as a notification, not a traceback dialog
        log.debug("napari-mprnet fine-tuning failed", exc_info=True)
        return _Failed(err)


class FinetuneJob:
    """Fine-tune in a thread worker.

    ``state`` goes ``"pending"`` -> ``"running"`` -> ``"done"``, ``"stopped"`` (a model is
    still returned) or ``"failed"``. Callbacks run in the main (Qt) thread:
    ``on_event(event)`` after every step (the trainer's event dict) and ``on_finished(job)``
    at the end, whatever the outcome.
    """

    def __init__(
        self,
        request: FinetuneRequest,
        *,
        on_event: Callable[[dict], Any] | None = None,
        on_finished: Callable[[FinetuneJob], Any] | None = None,
    ) -> None:
        self.request = request
        self.state = "pending"
        self.error: Exception | None = None
        self.result: Any = None
        self.seconds = 0.0
        self.events: list[dict] = []
        self.description = f"MPRNet fine-tuning ({request.task}): {request.data_label}"
        self._on_event = on_event
        self._on_finished = on_finished
        self._stop = threading.Event()
        self._started = 0.0
        self._pbar: progress | None = None
        self._relay = _Relay()
        self._relay.event.connect(self._received)
        self.worker = create_worker(
            _train, request, self._relay.event.emit, self._stop.is_set,
            _start_thread=False, _ignore_errors=True,
        )
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._fail)
        self.worker.finished.connect(self._finished)

    @property
    def running(self) -> bool:
        return self.state in ("pending", "running")

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def start(self) -> FinetuneJob:
        self.state = "running"
        self._started = time.perf_counter()
        self._pbar = progress(total=self.request.steps, desc=self.description)
        _jobs._ACTIVE_JOBS.add(self)
        self.worker.start()
        return self

    def stop(self) -> None:
        """Stop after the current step; the model trained so far is still returned."""
        if self.running:
            self._stop.set()

    # ------------------------------------------------------------------ worker signals

    def _received(self, event: dict) -> None:
        self.events.append(event)
        if self._pbar is not None:
            self._pbar.n = int(event.get("step", 0))
            self._pbar.refresh()
        if self._on_event is not None:
            self._on_event(event)

    def _returned(self, outcome: Any) -> None:
        if isinstance(outcome, _Failed):
            self._fail(outcome.error)
            return
        self.result = outcome
        self.state = "stopped" if getattr(outcome, "stopped", False) else "done"

    def _fail(self, error: Exception) -> None:
        self.state = "failed"
        self.error = error
        notifications.show_error(
            f"Fine-tuning on {self.request.data_label} failed: {_describe(error)}"
        )

    def _finished(self) -> None:
        self.seconds = time.perf_counter() - self._started
        if self.state == "running":  # finished without a result (e.g. the thread died)
            self.state = "failed"
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        _jobs._ACTIVE_JOBS.discard(self)
        if self._on_finished is not None:
            self._on_finished(self)

"""One restoration job in a napari thread worker: the glue shared by the restore widget and
the *Layers > Filter > Restore* menu commands. No numerics here: the work is
:func:`napari_mprnet.api.iter_restore`, and the output layers come from
:func:`napari_mprnet._layers.make_layers`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import notifications, progress

from .._layers import LayerSnapshot, make_layers
from ..api import iter_restore
from ..engine.noise_level import noise_record
from ..engine.runner import Progress
from ._controls import noise_applies
from .layer_roles import run_names
from .settings import RestoreSettings, WeightsChoice
from .weights_registry import registered_weights

__all__ = ["RestoreJob", "RestoreRequest", "build_request", "resolve_weights"]

log = logging.getLogger(__name__)

#: Jobs still running; keeps them (and their callbacks) alive without a widget.
_ACTIVE_JOBS: set[RestoreJob] = set()


@dataclass(frozen=True)
class RestoreRequest:
    """Everything a job needs, fixed when it starts."""

    source: LayerSnapshot
    task: str
    model: Any  # None: bundled default; a file path; or an MPRNet
    model_label: str
    tile_size: int | str = "auto"
    tile_overlap: int = 32
    device: str = "auto"
    precision: str | None = None
    stages: bool = False
    strength: float | str = "auto"
    noise: float | str = "auto"


def resolve_weights(choice: WeightsChoice, task: str) -> tuple[Any, str]:
    """The ``model`` argument for :func:`iter_restore` and a label for the user.

    Raises
    ------
    ValueError
        If no file is chosen, or the registered model is not (or no longer) registered.
    """
    if choice.source == "file":
        if not choice.file:
            raise ValueError("choose a model file, or select the bundled default weights")
        path = Path(choice.file).expanduser()
        if not path.exists():
            raise ValueError(f"model file '{path}' does not exist")
        return str(path), path.name
    if choice.source == "registered":
        models = registered_weights()
        if choice.name not in models:
            raise ValueError(
                f"the fine-tuned model {choice.name!r} is not available in this session; "
                "choose other weights in the Restore widget"
            )
        return models[choice.name], f"fine-tuned: {choice.name}"
    return None, f"bundled {task} model"


def build_request(
    source: LayerSnapshot, settings: RestoreSettings, task: str | None = None,
    strength: float | str = "auto", noise: float | str = "auto",
) -> RestoreRequest:
    """A request from saved/selected settings (``task`` overrides the settings' task;
    ``strength`` and ``noise`` are the widget's, "auto" for menu commands; ``noise`` is
    dropped, as its control is disabled, where it is not used: another task or a fixed
    strength)."""
    task = settings.task if task is None else task
    model, label = resolve_weights(settings.weights_for(task), task)
    return RestoreRequest(
        source=source,
        task=task,
        model=model,
        model_label=label,
        tile_size=settings.tile_size,
        tile_overlap=settings.tile_overlap,
        device=settings.device,
        precision=None if settings.precision == "auto" else settings.precision,
        stages=settings.stages,
        strength=strength,
        noise=noise if noise_applies(task, strength) else "auto",
    )


@dataclass(frozen=True)
class _Failed:
    error: Exception


def _restore_steps(request: RestoreRequest) -> Generator[Progress, None, Any]:
    """Runs in the worker thread: yields progress; returns the results or a ``_Failed``.

    Failures are returned rather than raised so that they reach the user as a plain
    notification instead of napari's traceback dialog.
    """
    try:
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
        )
    except Exception as err:
        log.debug("napari-mprnet restoration failed", exc_info=True)
        return _Failed(err)
    return results


def _describe(error: Exception) -> str:
    if isinstance(error, (ValueError, TypeError, FileNotFoundError, MemoryError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


class RestoreJob:
    """Restore a layer snapshot in a thread worker; add the output layers when done.

    ``state`` goes ``"pending"`` -> ``"running"`` -> ``"done"``, ``"cancelled"`` or
    ``"failed"``. Callbacks run in the main (Qt) thread: ``on_progress(done, total)`` after
    every tile batch and ``on_finished(job)`` at the end, whatever the outcome.
    A cancelled or failed job adds no layers.
    """

    def __init__(
        self,
        viewer: Any,
        request: RestoreRequest,
        *,
        on_progress: Callable[[int, int], Any] | None = None,
        on_finished: Callable[[RestoreJob], Any] | None = None,
    ) -> None:
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
        self._on_progress = on_progress
        self._on_finished = on_finished
        self._started = 0.0
        self.description = f"MPRNet {request.task}: {request.source.name}"
        self.worker = create_worker(_restore_steps, request, _start_thread=False,
                                    _ignore_errors=True)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.aborted.connect(self._aborted)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)
        self._pbar: progress | None = None

    # ------------------------------------------------------------------ control

    @property
    def running(self) -> bool:
        return self.state in ("pending", "running")

    def start(self) -> RestoreJob:
        self.state = "running"
        self._started = time.perf_counter()
        self._pbar = progress(total=0, desc=self.description)  # activity dock; busy until known
        _ACTIVE_JOBS.add(self)
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Stop between tile batches; nothing is added."""
        if self.running:
            self.worker.quit()

    # ------------------------------------------------------------------ worker signals

    def _yielded(self, step: Progress) -> None:
        self.progress = step
        pbar = self._pbar  # (updating it may run queued events, which can close it)
        if pbar is not None:
            if pbar.total != step.total:
                pbar.total = step.total
            pbar.n = step.done
            pbar.set_description(f"{self.description} ({step.describe()})")
            pbar.refresh()
        if self._on_progress is not None:
            self._on_progress(step.done, step.total)

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
            layers = make_layers(request.source, list(outcome), request.task,
                                 noise_record(request.noise, request.strength, request.task))
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
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        _ACTIVE_JOBS.discard(self)
        if self._on_finished is not None:
            self._on_finished(self)

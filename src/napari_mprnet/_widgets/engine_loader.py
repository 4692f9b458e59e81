"""PyTorch and the restoration engine, imported off the GUI thread on first use.

Importing torch takes seconds; done in a napari thread worker, the viewer stays responsive
while the widgets show a "loading" state. The widget modules themselves import no torch.
:func:`when_loaded` runs a callback in the GUI thread once everything is imported (at once if
it already is); every widget and menu command shares the one load.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["LOADING_TEXT", "available_devices", "engine_loaded", "when_loaded"]

log = logging.getLogger(__name__)

LOADING_TEXT = "loading PyTorch…"
#: Imported once torch and the engine are (whoever imported them).
ENGINE_MODULE = "napari_mprnet.api"
_waiting: list[Callable[[], Any]] = []
_state: dict[str, Any] = {"worker": None, "error": None, "loaded": False}


def available_devices() -> list[str]:
    """Device choices on this machine: auto, cpu, and any CUDA / Apple MPS devices (imports
    torch: call it once :func:`engine_loaded`)."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda"] if count == 1 else [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _import_engine() -> None:
    """Runs in the worker thread: everything a run imports."""
    import napari_mprnet.api
    import napari_mprnet.engine.devices  # noqa: F401


def engine_loaded() -> bool:
    """Whether torch and the engine are imported (by the load, or by anyone before it)."""
    if not _state["loaded"] and _state["worker"] is None and ENGINE_MODULE in sys.modules:
        _state["loaded"] = True
    return _state["loaded"]


def load_error() -> Exception | None:
    """Why the last load failed (None if it did not)."""
    return _state["error"]


def _done(*_: Any) -> None:
    _state["worker"] = None
    _state["loaded"] = _state["error"] is None
    waiting, _waiting[:] = list(_waiting), []
    if not _state["loaded"]:
        from napari.utils import notifications

        notifications.show_error(f"napari-mprnet could not load PyTorch: {_state['error']}")
        return
    for callback in waiting:
        try:
            callback()
        except RuntimeError:  # the widget was closed meanwhile
            log.debug("napari-mprnet: a closed widget missed the engine load", exc_info=True)


def _failed(error: Exception) -> None:
    _state["error"] = error
    log.warning("napari-mprnet could not import PyTorch: %s", error)


def when_loaded(callback: Callable[[], Any]) -> bool:
    """Call ``callback()`` in the GUI thread once torch and the engine are imported; returns
    True if that happened at once (already loaded), False if it waits for the load (started
    here in a thread worker if none is running)."""
    if engine_loaded():
        callback()
        return True
    _waiting.append(callback)
    if _state["worker"] is None:
        from napari.qt.threading import create_worker

        worker = create_worker(_import_engine, _start_thread=False, _ignore_errors=True)
        worker.errored.connect(_failed)
        worker.finished.connect(_done)
        _state["worker"] = worker
        _state["error"] = None
        worker.start()
    return False

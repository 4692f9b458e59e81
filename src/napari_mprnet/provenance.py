"""What a restored result records about how it was made: the weights (name, file, SHA-256),
the task, the strength, the noise level and the package version.

Result layers carry it in ``metadata["napari_mprnet"]``, so that a figure made from a layer
can be traced back to the exact model file (a fine-tuned model's own file, not the bundled
model it started from).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["file_sha256", "run_record", "weights_record"]

_digests: dict[tuple, str] = {}
_lock = threading.Lock()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (cached per path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _digests:
            return _digests[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    with _lock:
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _file_record(path: Path, name: str | None) -> dict:
    try:
        sha = file_sha256(path)
    except OSError:
        sha = None  # e.g. removed since: the path still says what was asked for
    return {"name": name or path.name, "path": str(path.absolute()), "sha256": sha}


def weights_record(model: Any, task: str, name: str | None = None) -> dict:
    """``{"name", "path", "sha256"}`` of the weights a run used.

    ``model`` as given to ``restore()``: None or a task name (the bundled model: its file and
    its registered checksum), a model file, or a loaded MPRNet (its ``source`` file if it
    was loaded from one; path and SHA-256 None for a network made in memory). ``name``
    labels it (default: the file name, or "bundled <task> model").
    """
    from .pretrained import bundled_info, bundled_name, bundled_path

    bundled = task if model is None else bundled_name(model)
    if bundled is not None:
        return {"name": name or f"bundled {bundled} model", "path": str(bundled_path(bundled)),
                "sha256": bundled_info(bundled)["sha256"]}
    if isinstance(model, (str, os.PathLike)):
        return _file_record(Path(model).expanduser(), name)
    source = getattr(model, "source", None)
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        return _file_record(Path(source), name)
    summary = (getattr(model, "metadata", None) or {}).get("summary")
    return {"name": name or summary or "network given in memory", "path": None, "sha256": None}


def run_record(model: Any, task: str, strength: Any = "auto", noise: Any = None,
               name: str | None = None) -> dict:
    """Everything a result records: ``weights`` (:func:`weights_record`), ``task``,
    ``strength`` (as asked: "auto" or a number), the noise level where it was used
    (:func:`~.engine.noise_level.noise_record`) and ``version`` (of napari-mprnet)."""
    from . import __version__
    from .engine.noise_level import noise_record

    return {"weights": weights_record(model, task, name), "task": task,
            "strength": strength, **noise_record(noise, strength, task),
            "version": __version__}

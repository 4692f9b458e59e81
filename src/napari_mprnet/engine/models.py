"""Resolving the ``model`` argument of a restoration to a loaded network.

``None`` means the bundled default of the task, a task name ("denoise", "deblur", "derain")
always means its bundled, checksummed file (a local file of such a name is used only when
given as a path, e.g. ``"./denoise"``), any other string or path is a model file, and an
:class:`~napari_mprnet.model.arch.MPRNet` is used as it is. Loaded files are cached per file
version (path, size, modification time) and device, so a file rewritten on disk is reloaded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from ..model.arch import MPRNet
from ..model.presets import TASKS
from ..weights import load_model

__all__ = ["clear_model_cache", "model_source_key", "prepare_model"]

_model_cache: dict[tuple, MPRNet] = {}
_cache_lock = threading.Lock()


def model_source_key(source: str | os.PathLike) -> tuple:
    """What identifies the network ``source`` stands for: ``("bundled", name)`` for a bundled
    model name, else ``("file", absolute path, size, modification time)``."""
    from ..pretrained import bundled_name

    name = bundled_name(source)
    if name is not None:
        return ("bundled", name)
    path = Path(source).expanduser()
    try:
        stat = path.stat()
        version: tuple = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = ()  # load_model reports the missing file
    return ("file", str(path.absolute()), *version)


def prepare_model(
    model: str | os.PathLike | MPRNet | None, task: str, device: torch.device | str = "cpu"
) -> MPRNet:
    """Resolve ``model`` (None: the bundled default for ``task``; a task name; a file; an
    MPRNet) to a loaded network; see the module docstring.

    Raises
    ------
    ValueError
        If ``task`` is unknown or the file is not a usable MPRNet model.
    TypeError
        If ``model`` is of an unsupported type.
    """
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if isinstance(model, MPRNet):
        return model
    source = task if model is None else model
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"model must be a task name, a model file path or an MPRNet, "
            f"got {type(source).__name__}"
        )
    key = (*model_source_key(source), str(device))
    with _cache_lock:  # threads asking for the same file wait for a single load
        if key not in _model_cache:
            _model_cache[key] = load_model(source, device=device)
        return _model_cache[key]


def clear_model_cache() -> None:
    """Forget every network loaded by :func:`prepare_model`."""
    with _cache_lock:
        _model_cache.clear()

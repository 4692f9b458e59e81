"""Resolving the ``model`` argument of a restoration to a loaded network.

``None`` means the bundled default of the task, a task name ("denoise", "deblur", "derain")
always means its bundled, checksummed file (a local file of such a name is used only when
given as a path, e.g. ``"./denoise"``), any other string or path is a model file, and an
:class:`~napari_mprnet.model.arch.MPRNet` is used as it is. Loaded files are cached per file
version (path, size, modification time) and device, so a file rewritten on disk is reloaded.

A cached network is shared by every run that asks for it, in any thread, so runs never change
it: :func:`ready_model` puts a network on its device, in eval mode and in the channels-last
memory format once, under a lock, and leaves a network that is already so untouched (changing
a network's parameters while another thread runs it gives that run wrong numbers).
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import torch

from ..model.arch import MPRNet
from ..model.presets import TASKS
from ..weights import load_model

__all__ = ["clear_model_cache", "model_source_key", "prepare_model", "ready_model",
           "resolve_task"]

_model_cache: dict[tuple, MPRNet] = {}
_cache_lock = threading.Lock()
#: Held while a network is checked and, if needed, converted by :func:`ready_model`.
_ready_lock = threading.Lock()


def _on_device(tensor: torch.Tensor, device: torch.device) -> bool:
    return tensor.device.type == device.type and (
        device.index is None or tensor.device.index == device.index)


def _needs_conversion(model: MPRNet, device: torch.device, channels_last: bool) -> bool:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if not _on_device(tensor, device):
            return True
        if channels_last and tensor.dim() == 4 \
                and not tensor.is_contiguous(memory_format=torch.channels_last):
            return True
    return False


def ready_model(model: MPRNet, device: torch.device | str, channels_last: bool) -> MPRNet:
    """``model`` on ``device``, in eval mode and (if ``channels_last``) with its 4-D weights
    in the channels-last memory format; converted in place, once.

    Thread-safe: the check and the conversion run under one lock, and a network that is
    already ready is not touched at all (not even re-assigned), so any number of threads may
    run it meanwhile. Runs on different devices need a network object each (the model cache
    of :func:`prepare_model` holds one per device): moving a network that another thread is
    running would change its numbers under it.
    """
    device = torch.device(device)
    with _ready_lock:
        if _needs_conversion(model, device, channels_last):
            model.to(device)
            if channels_last:
                model.to(memory_format=torch.channels_last)
        if any(module.training for module in model.modules()):
            model.eval()
    return model


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


def resolve_task(task: str | None, model: str | os.PathLike | MPRNet | None) -> str:
    """The task a run restores: ``task`` when given, else the task ``model`` declares (a
    bundled task name, or ``"task"`` in a network's or file's metadata), else "denoise".

    A deblurring or deraining model passed without ``task`` must not be treated as a
    denoiser (``strength="auto"`` measures noise only when denoising, and output names
    follow the task). Loads (and caches) a model file on the CPU to read its metadata.

    Raises
    ------
    ValueError
        If ``task`` is given and unknown, or the model file is not usable.
    """
    if task is not None:
        if not isinstance(task, str) or task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        return task
    if model is None:
        return "denoise"
    if isinstance(model, str) and model in TASKS:
        return model
    network = model if isinstance(model, MPRNet) else prepare_model(model, "denoise")
    declared = (getattr(network, "metadata", None) or {}).get("task")
    return declared if declared in TASKS else "denoise"


def clear_model_cache() -> None:
    """Forget every network loaded by :func:`prepare_model`."""
    with _cache_lock:
        _model_cache.clear()

"""Caches of compiled backends: compiled modules and loaded engines in memory (per model,
weakly), and the on-disk cache folder with the weights hash that names its files."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import CACHE_ENV

__all__ = ["cache_dir", "clear_compiled_cache", "lookup", "store", "weights_hash"]

#: Compiled modules kept in memory (oldest dropped first).
_MAX_COMPILED = 16

def cache_dir() -> Path:
    """Folder of on-disk caches: ``$NAPARI_MPRNET_CACHE``, else the user's cache folder."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "napari-mprnet"


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of a model's configuration and weights (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# compiled modules: key -> (weak reference to the model, compiled module)
_COMPILED: OrderedDict[tuple, tuple[weakref.ref, Any]] = OrderedDict()


def clear_compiled_cache() -> None:
    """Forget every compiled module and loaded TensorRT engine held in memory."""
    _COMPILED.clear()


def lookup(key: tuple, model: nn.Module):
    entry = _COMPILED.get(key)
    if entry is None or entry[0]() is not model:
        return None
    _COMPILED.move_to_end(key)
    return entry[1]


def store(key: tuple, model: nn.Module, compiled: Any) -> None:
    _COMPILED[key] = (weakref.ref(model), compiled)
    _COMPILED.move_to_end(key)
    while len(_COMPILED) > _MAX_COMPILED:
        _COMPILED.popitem(last=False)

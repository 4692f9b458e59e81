"""Choosing a backend by name: validation, "auto" per device, construction."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import torch
from torch import nn

from .base import BACKENDS, Backend
from .compile import CompileBackend
from .eager import EagerBackend
from .tensorrt import TensorRTBackend

__all__ = ["make_backend", "normalize_backend", "resolve_backend", "tensorrt_available"]


def normalize_backend(name: Any) -> str:
    """Validate a backend name; raise ValueError listing the choices."""
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name.lower()


def tensorrt_available() -> bool:
    """Whether ``torch_tensorrt`` can be imported (without importing it)."""
    if "torch_tensorrt" in sys.modules:
        return sys.modules["torch_tensorrt"] is not None
    try:
        return importlib.util.find_spec("torch_tensorrt") is not None
    except (ImportError, ValueError):
        return False


def resolve_backend(name: Any, device: torch.device) -> str:
    """The backend ``name`` stands for on ``device``: "auto" becomes the fastest one there
    (tensorrt or compile on CUDA, eager elsewhere); other names are validated and kept."""
    name = normalize_backend(name)
    if name != "auto":
        return name
    if device.type != "cuda":
        return "eager"
    return "tensorrt" if tensorrt_available() else "compile"


_CLASSES = {"eager": EagerBackend, "compile": CompileBackend, "tensorrt": TensorRTBackend}


def make_backend(name: str, model: nn.Module, device: torch.device | str, precision: str,
                 options: dict | None = None, split_patches: bool | None = None) -> Backend:
    """Build the backend ``name`` ("auto" resolved for ``device``) for ``model``;
    ``split_patches`` goes to ``MPRNet.forward`` (None: the model's default)."""
    device = torch.device(device)
    resolved = resolve_backend(name, device)
    return _CLASSES[resolved](model, device, precision, options, split_patches)

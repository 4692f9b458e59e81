"""Choosing a backend by name: validation, the default and "auto" per device, construction."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import torch
from torch import nn

from .base import BACKENDS, Backend
from .compile import CompileBackend
from .eager import EagerBackend
from .openvino import OpenVINOBackend
from .tensorrt import TensorRTBackend

__all__ = ["BACKEND_ENV", "default_backend", "make_backend", "normalize_backend",
           "openvino_available", "resolve_backend", "tensorrt_available"]

#: Environment variable naming the backend used when none is given (e.g. "eager").
BACKEND_ENV = "NAPARI_MPRNET_BACKEND"


def normalize_backend(name: Any) -> str:
    """Validate a backend name; raise ValueError listing the choices."""
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name.lower()


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it); a module blocked by a
    ``None`` entry in ``sys.modules`` cannot."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tensorrt_available() -> bool:
    """Whether ``torch_tensorrt`` can be imported (without importing it)."""
    return _importable("torch_tensorrt")


def openvino_available() -> bool:
    """Whether ``openvino`` can be imported (without importing it)."""
    return _importable("openvino")


def default_backend(device: torch.device) -> str:
    """The backend used when none is given: ``$NAPARI_MPRNET_BACKEND`` if set; else
    "openvino" on a CPU where OpenVINO is installed and "eager" elsewhere (GPUs start at
    once; ask for "auto" to compile there).

    Raises
    ------
    ValueError
        If ``$NAPARI_MPRNET_BACKEND`` names no backend.
    """
    chosen = os.environ.get(BACKEND_ENV, "").strip()
    if chosen:
        try:
            name = normalize_backend(chosen)
        except ValueError:
            raise ValueError(f"{BACKEND_ENV}={chosen!r} is not a backend; choose one of "
                             f"{', '.join(BACKENDS)}") from None
        return resolve_backend(name, device)
    return "openvino" if device.type == "cpu" and openvino_available() else "eager"


def resolve_backend(name: Any, device: torch.device) -> str:
    """The backend ``name`` stands for on ``device``: None is :func:`default_backend`;
    "auto" becomes the fastest one there (tensorrt or compile on CUDA, openvino on a CPU
    where it is installed, eager elsewhere); other names are validated and kept."""
    if name is None:
        return default_backend(device)
    name = normalize_backend(name)
    if name != "auto":
        return name
    if device.type == "cuda":
        return "tensorrt" if tensorrt_available() else "compile"
    return "openvino" if device.type == "cpu" and openvino_available() else "eager"


_CLASSES = {"eager": EagerBackend, "compile": CompileBackend, "tensorrt": TensorRTBackend,
            "openvino": OpenVINOBackend}


def make_backend(name: str | None, model: nn.Module, device: torch.device | str,
                 precision: str, options: dict | None = None,
                 split_patches: bool | None = None) -> Backend:
    """Build the backend ``name`` (None and "auto" resolved for ``device``) for ``model``;
    ``split_patches`` goes to ``MPRNet.forward`` (None: the model's default)."""
    device = torch.device(device)
    resolved = resolve_backend(name, device)
    return _CLASSES[resolved](model, device, precision, options, split_patches)

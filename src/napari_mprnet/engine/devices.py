"""Choosing and describing the device a model runs on."""

from __future__ import annotations

import torch

__all__ = ["describe_device", "device_memory_bytes", "resolve_device"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return a ``torch.device``; "auto" (or None) picks CUDA, then Apple MPS, then CPU.

    Raises
    ------
    ValueError
        If the name is not a device torch knows, or names a device that is not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ValueError(
                f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from None
    else:
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available here; "
                         "use device='auto' or 'cpu'")
    count = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= count:
        raise ValueError(f"device {device!r} does not exist: {count} CUDA device(s) found")
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} was requested but Apple MPS is not available here")
    return resolved


def device_memory_bytes(device: torch.device) -> tuple[int, int] | None:
    """Return ``(free, total)`` bytes of a CUDA device, or None where it cannot be known."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)


def describe_device(device: str | torch.device | None = "auto") -> str:
    """A one-line, human-readable description, e.g. ``"cuda:0 (NVIDIA H200, 139.8 GiB free)"``."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        return f"cuda:{index} ({name}, {free / 2**30:.1f} GiB free)"
    if resolved.type == "mps":
        return "mps (Apple GPU)"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"

"""Mixed precision for training: which autocast dtype, channels-last, loss scaling."""

from __future__ import annotations

import contextlib

import torch

from ..engine.devices import cpu_supports_bf16
from ..engine.runner import PRECISIONS, normalize_precision

__all__ = ["MixedPrecision", "choose_channels_last", "choose_precision"]


def choose_precision(precision: str | None, device: torch.device) -> str:
    """None/"auto": bf16 on CUDA (fp16 where bf16 is unsupported) and on CPUs that compute
    bf16 natively (AVX512-BF16/AMX), fp32 elsewhere; otherwise the name, validated."""
    if precision is None or (isinstance(precision, str) and precision.lower() == "auto"):
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_supports_bf16():
            return "bf16"
        return "fp32"
    return normalize_precision(precision, device)


def choose_channels_last(channels_last: bool | None, device: torch.device, prec: str) -> bool:
    """Default: on CUDA, and on a CPU training in bf16 (where it is measured faster)."""
    if channels_last is not None:
        return bool(channels_last)
    return device.type == "cuda" or (device.type == "cpu" and prec == "bf16")


class MixedPrecision:
    """Autocast contexts and the gradient scaler of one run (the weights stay fp32).

    Parameters
    ----------
    name : {"fp32", "fp16", "bf16"}
        From :func:`choose_precision`.
    device : torch.device
        Where training runs; fp16 on CUDA scales the loss.
    """

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device
        self.dtype = PRECISIONS[name]
        self.uses_scaler = name == "fp16" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.uses_scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of a training forward pass."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def validation_autocast(self) -> contextlib.AbstractContextManager:
        """On a CPU validation scores the fp32 model (cheap next to training; exact
        numbers); elsewhere it runs like training."""
        return contextlib.nullcontext() if self.device.type == "cpu" else self.autocast()

    def scaler_state(self) -> dict:
        """What a checkpoint keeps of the scaler (empty without loss scaling)."""
        return self.scaler.state_dict() if self.uses_scaler else {}

    def load_scaler_state(self, state: dict | None) -> None:
        """Restore :meth:`scaler_state` (ignored without loss scaling)."""
        if self.uses_scaler and state:
            self.scaler.load_state_dict(state)

"""What every backend shares: the :class:`Backend` protocol with its fallback chain,
backend options, the autocast wrapper around the network and out-of-memory detection."""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from ..precision import PRECISIONS

__all__ = ["BACKENDS", "CACHE_ENV", "OPTION_KEYS", "Backend", "BackendFallbackWarning",
           "InferenceModule", "check_options", "is_out_of_memory"]

log = logging.getLogger(__name__)

#: Backend names accepted by :func:`make_backend` (and ``restore(backend=...)``).
BACKENDS = ("auto", "eager", "compile", "tensorrt", "openvino")
#: Environment variable overriding the on-disk cache folder.
CACHE_ENV = "NAPARI_MPRNET_CACHE"
#: Keys ``backend_options`` may hold.
OPTION_KEYS = {
    "mode": "torch.compile mode (default None; 'reduce-overhead' with cuda_graphs)",
    "cuda_graphs": "compile with CUDA graphs (mode='reduce-overhead'); default False",
    "compile_backend": "torch.compile backend (default 'inductor'; 'eager' for debugging)",
    "fullgraph": "torch.compile fullgraph flag (default False)",
    "compile_options": "dict passed as torch.compile(options=...)",
    "cache_dir": "folder of the TensorRT engine or OpenVINO network cache (default: "
                 "cache_dir() / 'tensorrt' or 'openvino')",
    "disk_cache": "save and load TensorRT engines and OpenVINO networks on disk (default True)",
    "tensorrt_options": "extra keyword arguments for torch_tensorrt.compile",
}
class BackendFallbackWarning(UserWarning):
    """A faster backend could not be used; a slower one runs instead."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an accelerator (or host) out-of-memory error."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def check_options(options: dict | None) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"backend_options must be a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(
            f"unknown backend option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(OPTION_KEYS)}"
        )
    return dict(options)


class InferenceModule(nn.Module):
    """The network under autocast, returning only the outputs that are needed;
    ``split_patches`` (unless None) is passed on to ``MPRNet.forward``."""

    def __init__(self, model: nn.Module, device_type: str, autocast: torch.dtype | None,
                 stages: bool, split_patches: bool | None = None) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.autocast = autocast
        self.stages = stages
        self.kwargs = {} if split_patches is None else {"split_patches": bool(split_patches)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.autocast is None:
            outputs = self.model(x, **self.kwargs)
        else:
            with torch.autocast(device_type=self.device_type, dtype=self.autocast):
                outputs = self.model(x, **self.kwargs)
        return list(outputs) if self.stages else [outputs[0]]


class Backend:
    """Runs padded tile batches through a model. Subclasses override :meth:`_run`.

    Attributes
    ----------
    name : str
        The backend asked for.
    fixed_shape : bool
        Whether every batch should have the same shape (compiled backends).
    stats : dict
        ``compiles`` (number of compilations), ``compile_s`` (seconds spent compiling,
        first calls included), ``cache_hits`` and ``disk_loads``.
    split_patches : bool or None
        Passed on to ``MPRNet.forward`` (None: the model's default, the paper's split).
    """

    name = "base"
    fixed_shape = False

    def __init__(self, model: nn.Module, device: torch.device, precision: str,
                 options: dict | None = None, split_patches: bool | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of fp32, fp16, bf16")
        self.model = model
        self.device = torch.device(device)
        self.precision = precision
        self.options = check_options(options)
        self.split_patches = split_patches
        self.stats = {"compiles": 0, "compile_s": 0.0, "cache_hits": 0, "disk_loads": 0}
        self._fallback: Backend | None = None

    @property
    def active(self) -> str:
        """Name of the backend that actually runs (after any fallback)."""
        return self._fallback.active if self._fallback is not None else self.name

    @property
    def current(self) -> Backend:
        """The backend object that actually runs (after any fallback)."""
        return self._fallback.current if self._fallback is not None else self

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.precision == "fp32" else PRECISIONS[self.precision]

    def __call__(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        """Run ``batch``; return ``[final]`` or ``[final, stage2, stage1]`` (device tensors)."""
        if self._fallback is not None:
            return self._fallback(batch, stages)
        try:
            return self._run(batch, stages)
        except Exception as error:
            if is_out_of_memory(error) or self.name == "eager":
                raise
            self._fall_back(error)
            return self._fallback(batch, stages)

    def _run(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        raise NotImplementedError

    def _next_backend(self) -> Backend:
        """The backend to fall back to; each backend that can fail names its own."""
        raise NotImplementedError(f"the {self.name} backend has no fallback")

    def _module(self, model: nn.Module, autocast: torch.dtype | None,
                stages: bool) -> InferenceModule:
        return InferenceModule(model, self.device.type, autocast, stages, self.split_patches)

    def _fall_back(self, error: BaseException | str) -> None:
        self._fallback = self._next_backend()
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        reason = reason.strip().splitlines()[0][:300] if reason.strip() else reason
        warnings.warn(
            f"{self.name} backend unavailable ({reason}); falling back to the "
            f"{self._fallback.name} backend",
            BackendFallbackWarning,
            stacklevel=4,
        )
        log.warning("%s backend failed: %s", self.name, error)

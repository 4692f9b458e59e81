"""Inference backends: how one padded tile batch goes through the network.

A backend takes a batch ``(B, C, H, W)`` already on the device (H and W multiples of 8)
and returns ``[final]`` or ``[final, stage2, stage1]`` on the device. Three exist:

``eager``
    The model as it is, under autocast (fp16/bf16) and ``torch.inference_mode``; on CUDA
    ``torch.backends.cudnn.benchmark`` is switched on so cuDNN picks the fastest kernels
    for the (fixed) tile shape.
``compile``
    ``torch.compile`` of the model for one fixed input shape (``dynamic=False``). The runner
    keeps every batch of an image the same shape (the last partial batch is padded with
    dummy tiles), so one compilation serves a whole image. Compiled modules are cached per
    model, shape, dtype, precision and device. ``cuda_graphs=True`` compiles with
    ``mode="reduce-overhead"`` (CUDA graphs).
``tensorrt``
    Torch-TensorRT (``ir="dynamo"``) of the fixed tile shape, by default in fp16. Engines are
    saved on disk (:func:`cache_dir`, overridable with ``NAPARI_MPRNET_CACHE``) under a key
    made of the weights' hash, the input shape, the precision, the GPU and the torch /
    torch_tensorrt versions, and loaded from there next time.

``auto`` is ``tensorrt`` on CUDA where ``torch_tensorrt`` can be imported, else ``compile``
on CUDA and ``eager`` on CPU and Apple MPS. A backend that cannot be built or whose
compilation fails warns (:class:`BackendFallbackWarning`) and hands over to the next one:
tensorrt -> compile -> eager. Out-of-memory errors are never swallowed: the runner needs
them to shrink its batches.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .precision import PRECISIONS

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendFallbackWarning",
    "CompileBackend",
    "EagerBackend",
    "TensorRTBackend",
    "cache_dir",
    "clear_compiled_cache",
    "is_out_of_memory",
    "make_backend",
    "normalize_backend",
    "resolve_backend",
    "tensorrt_available",
    "weights_hash",
]

log = logging.getLogger(__name__)

#: Backend names accepted by :func:`make_backend` (and ``restore(backend=...)``).
BACKENDS = ("auto", "eager", "compile", "tensorrt")
#: Environment variable overriding the on-disk cache folder.
CACHE_ENV = "NAPARI_MPRNET_CACHE"
#: Keys ``backend_options`` may hold.
OPTION_KEYS = {
    "mode": "torch.compile mode (default None; 'reduce-overhead' with cuda_graphs)",
    "cuda_graphs": "compile with CUDA graphs (mode='reduce-overhead'); default False",
    "compile_backend": "torch.compile backend (default 'inductor'; 'eager' for debugging)",
    "fullgraph": "torch.compile fullgraph flag (default False)",
    "compile_options": "dict passed as torch.compile(options=...)",
    "cache_dir": "folder of the TensorRT engine cache (default: cache_dir())",
    "disk_cache": "save and load TensorRT engines on disk (default True)",
    "tensorrt_options": "extra keyword arguments for torch_tensorrt.compile",
}
#: Compiled modules kept in memory (oldest dropped first).
_MAX_COMPILED = 16


class BackendFallbackWarning(UserWarning):
    """A faster backend could not be used; a slower one runs instead."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an accelerator (or host) out-of-memory error."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


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


def _check_options(options: dict | None) -> dict:
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
    """The network under autocast, returning only the outputs that are needed."""

    def __init__(self, model: nn.Module, device_type: str, autocast: torch.dtype | None,
                 stages: bool) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.autocast = autocast
        self.stages = stages

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.autocast is None:
            outputs = self.model(x)
        else:
            with torch.autocast(device_type=self.device_type, dtype=self.autocast):
                outputs = self.model(x)
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
    """

    name = "base"
    fixed_shape = False

    def __init__(self, model: nn.Module, device: torch.device, precision: str,
                 options: dict | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of fp32, fp16, bf16")
        self.model = model
        self.device = torch.device(device)
        self.precision = precision
        self.options = _check_options(options)
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
        return EagerBackend(self.model, self.device, self.precision, self.options)

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


class EagerBackend(Backend):
    """The model as it is: autocast, inference mode, cuDNN autotuning on CUDA."""

    name = "eager"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._modules: dict[bool, InferenceModule] = {}

    def _run(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        module = self._modules.get(stages)
        if module is None:
            module = InferenceModule(self.model, self.device.type, self.autocast_dtype, stages)
            self._modules[stages] = module
        with torch.inference_mode():
            return module(batch)


# compiled modules: key -> (weak reference to the model, compiled module)
_COMPILED: OrderedDict[tuple, tuple[weakref.ref, Any]] = OrderedDict()


def clear_compiled_cache() -> None:
    """Forget every compiled module and loaded TensorRT engine held in memory."""
    _COMPILED.clear()


def _layout(batch: torch.Tensor) -> str:
    if batch.dim() == 4 and batch.is_contiguous(memory_format=torch.channels_last) \
            and not batch.is_contiguous():
        return "channels_last"
    return "contiguous" if batch.is_contiguous() else str(batch.stride())


def _lookup(key: tuple, model: nn.Module):
    entry = _COMPILED.get(key)
    if entry is None or entry[0]() is not model:
        return None
    _COMPILED.move_to_end(key)
    return entry[1]


def _store(key: tuple, model: nn.Module, compiled: Any) -> None:
    _COMPILED[key] = (weakref.ref(model), compiled)
    _COMPILED.move_to_end(key)
    while len(_COMPILED) > _MAX_COMPILED:
        _COMPILED.popitem(last=False)


class CompileBackend(Backend):
    """``torch.compile`` for the fixed tile-batch shape; falls back to eager on failure."""

    name = "compile"
    fixed_shape = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.cuda_graphs = bool(self.options.get("cuda_graphs", False))
        mode = self.options.get("mode")
        if self.cuda_graphs and mode is None:
            mode = "reduce-overhead"
        self.mode = mode
        self.compile_backend = self.options.get("compile_backend", "inductor")
        if not hasattr(torch, "compile"):
            self._fall_back("torch.compile is not available in this torch")

    def _key(self, batch: torch.Tensor, stages: bool) -> tuple:
        return ("compile", id(self.model), tuple(batch.shape), batch.dtype, _layout(batch),
                str(batch.device), self.precision, stages, self.mode,
                repr(self.compile_backend), bool(self.options.get("fullgraph", False)),
                repr(sorted((self.options.get("compile_options") or {}).items())))

    def _run(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        key = self._key(batch, stages)
        compiled = _lookup(key, self.model)
        first = compiled is None
        if first:
            module = InferenceModule(self.model, self.device.type, self.autocast_dtype, stages)
            kwargs: dict[str, Any] = {"backend": self.compile_backend, "dynamic": False,
                                      "fullgraph": bool(self.options.get("fullgraph", False))}
            if self.mode is not None:
                kwargs["mode"] = self.mode
            if self.options.get("compile_options"):
                kwargs["options"] = dict(self.options["compile_options"])
            started = time.perf_counter()
            compiled = torch.compile(module, **kwargs)
            self.stats["compiles"] += 1
        else:
            self.stats["cache_hits"] += 1
        with torch.inference_mode():
            if self.cuda_graphs and hasattr(torch, "compiler") and \
                    hasattr(torch.compiler, "cudagraph_mark_step_begin"):
                torch.compiler.cudagraph_mark_step_begin()
            outputs = list(compiled(batch))
            if self.cuda_graphs:  # graph outputs are overwritten by the next replay
                outputs = [o.clone() for o in outputs]
        if first:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stats["compile_s"] += time.perf_counter() - started
            _store(key, self.model, compiled)  # only once it has run successfully
        return outputs


class TensorRTBackend(Backend):
    """Torch-TensorRT engines for the fixed tile-batch shape, cached on disk."""

    name = "tensorrt"
    fixed_shape = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._trt = None
        self._weights_hash: str | None = None
        try:
            self._trt = importlib.import_module("torch_tensorrt")
        except Exception as error:  # noqa: BLE001 - ImportError, or a broken install
            self._fall_back(f"torch_tensorrt cannot be imported: {error}")

    def _next_backend(self) -> Backend:
        return CompileBackend(self.model, self.device, self.precision, self.options)

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def cache_folder(self) -> Path:
        folder = self.options.get("cache_dir")
        return Path(folder) if folder is not None else cache_dir() / "tensorrt"

    def key_material(self, shape: tuple[int, ...], stages: bool) -> dict:
        """Everything an engine depends on; its hash names the cache file."""
        if self._weights_hash is None:
            self._weights_hash = weights_hash(self.model)
        gpu = self.device.type
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else \
                torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            gpu = f"{torch.cuda.get_device_name(index)} sm_{major}{minor}"
        return {
            "weights": self._weights_hash,
            "shape": list(shape),
            "precision": self.precision,
            "stages": bool(stages),
            "torch": torch.__version__,
            "torch_tensorrt": str(getattr(self._trt, "__version__", "unknown")),
            "device": gpu,
            "options": repr(sorted((self.options.get("tensorrt_options") or {}).items())),
        }

    def engine_path(self, shape: tuple[int, ...], stages: bool) -> Path:
        """Where the engine for ``shape`` is (or will be) saved."""
        material = self.key_material(shape, stages)
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
        dims = "x".join(str(d) for d in shape)
        return self.cache_folder() / f"mprnet_{dims}_{self.precision}_{digest[:24]}.ep"

    def _compile(self, shape: tuple[int, ...], stages: bool):
        trt = self._trt
        net = copy.deepcopy(self.model).to(dtype=self.dtype).eval()
        module = InferenceModule(net, self.device.type, None, stages).eval()
        extra = dict(self.options.get("tensorrt_options") or {})
        return trt.compile(
            module,
            ir="dynamo",
            inputs=[trt.Input(shape, dtype=self.dtype)],
            enabled_precisions={self.dtype},
            **extra,
        )

    def _save(self, engine, path: Path, example: torch.Tensor) -> None:
        tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")  # same suffix as the target
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._trt.save(engine, str(tmp), arg_inputs=[example])
            except TypeError:  # older torch_tensorrt: inputs= instead of arg_inputs=
                self._trt.save(engine, str(tmp), inputs=[example])
            os.replace(tmp, path)
            log.info("saved TensorRT engine to %s", path)
        except Exception as error:  # noqa: BLE001 - a cache that cannot be written is not fatal
            warnings.warn(f"could not save the TensorRT engine to {path}: {error}",
                          BackendFallbackWarning, stacklevel=5)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _load(self, path: Path):
        loaded = self._trt.load(str(path))
        module = getattr(loaded, "module", None)
        return module() if callable(module) and not isinstance(loaded, nn.Module) else loaded

    def _engine(self, batch: torch.Tensor, stages: bool):
        shape = tuple(batch.shape)
        path = self.engine_path(shape, stages)
        key = ("tensorrt", str(path), str(batch.device))
        engine = _lookup(key, self.model)
        if engine is not None:
            self.stats["cache_hits"] += 1
            return engine
        disk = bool(self.options.get("disk_cache", True))
        if disk and path.exists():
            try:
                engine = self._load(path)
                self.stats["disk_loads"] += 1
            except Exception as error:  # noqa: BLE001 - stale or broken file: rebuild it
                warnings.warn(f"could not load the cached TensorRT engine {path} ({error}); "
                              "rebuilding it", BackendFallbackWarning, stacklevel=5)
                engine = None
        if engine is None:
            started = time.perf_counter()
            engine = self._compile(shape, stages)
            self.stats["compiles"] += 1
            self.stats["compile_s"] += time.perf_counter() - started
            if disk:
                self._save(engine, path, batch)
                with contextlib.suppress(OSError):
                    path.with_suffix(".json").write_text(
                        json.dumps(self.key_material(shape, stages), indent=1))
        _store(key, self.model, engine)
        return engine

    def _run(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        x = batch.to(dtype=self.dtype).contiguous()
        engine = self._engine(x, stages)
        with torch.inference_mode():
            outputs = engine(x)
        return list(engine_outputs(outputs))


def engine_outputs(outputs: Any) -> list[torch.Tensor]:
    """A compiled engine's outputs as a list (engines may return a tensor, tuple or list)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return list(outputs)


_CLASSES = {"eager": EagerBackend, "compile": CompileBackend, "tensorrt": TensorRTBackend}


def make_backend(name: str, model: nn.Module, device: torch.device | str, precision: str,
                 options: dict | None = None) -> Backend:
    """Build the backend ``name`` ("auto" resolved for ``device``) for ``model``."""
    device = torch.device(device)
    resolved = resolve_backend(name, device)
    return _CLASSES[resolved](model, device, precision, options)

"""The ``tensorrt`` backend: Torch-TensorRT engines of the fixed batch shape, cached on disk."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...io.atomic import atomic_output, atomic_write_bytes
from ..precision import PRECISIONS
from .base import Backend, BackendFallbackWarning
from .cache import cache_dir, lookup, store, weights_hash
from .compile import CompileBackend

__all__ = ["TensorRTBackend", "engine_outputs"]

log = logging.getLogger(__name__)


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
        return CompileBackend(self.model, self.device, self.precision, self.options,
                              self.split_patches)

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
            "split_patches": self.split_patches,
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
        module = self._module(net, None, stages).eval()
        extra = dict(self.options.get("tensorrt_options") or {})
        return trt.compile(
            module,
            ir="dynamo",
            inputs=[trt.Input(shape, dtype=self.dtype)],
            enabled_precisions={self.dtype},
            **extra,
        )

    def _save(self, engine, path: Path, example: torch.Tensor) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path, overwrite=True) as tmp:  # same suffix as the target
                try:
                    self._trt.save(engine, str(tmp), arg_inputs=[example])
                except TypeError:  # older torch_tensorrt: inputs= instead of arg_inputs=
                    self._trt.save(engine, str(tmp), inputs=[example])
            log.info("saved TensorRT engine to %s", path)
        except Exception as error:  # noqa: BLE001 - a cache that cannot be written is not fatal
            warnings.warn(f"could not save the TensorRT engine to {path}: {error}",
                          BackendFallbackWarning, stacklevel=5)

    def _load(self, path: Path):
        loaded = self._trt.load(str(path))
        module = getattr(loaded, "module", None)
        return module() if callable(module) and not isinstance(loaded, nn.Module) else loaded

    def _engine(self, batch: torch.Tensor, stages: bool):
        shape = tuple(batch.shape)
        path = self.engine_path(shape, stages)
        key = ("tensorrt", str(path), str(batch.device))
        engine = lookup(key, self.model)
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
                    atomic_write_bytes(path.with_suffix(".json"), json.dumps(
                        self.key_material(shape, stages), indent=1).encode(), overwrite=True)
        store(key, self.model, engine)
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

"""The ``compile`` backend: ``torch.compile`` of the model for one fixed batch shape."""

from __future__ import annotations

import time
from typing import Any

import torch

from .base import Backend
from .cache import lookup, store
from .eager import EagerBackend

__all__ = ["CompileBackend"]


def _layout(batch: torch.Tensor) -> str:
    if batch.dim() == 4 and batch.is_contiguous(memory_format=torch.channels_last) \
            and not batch.is_contiguous():
        return "channels_last"
    return "contiguous" if batch.is_contiguous() else str(batch.stride())



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

    def _next_backend(self) -> Backend:
        return EagerBackend(self.model, self.device, self.precision, self.options,
                            self.split_patches)

    def _key(self, batch: torch.Tensor, stages: bool) -> tuple:
        return ("compile", id(self.model), tuple(batch.shape), batch.dtype, _layout(batch),
                str(batch.device), self.precision, stages, self.split_patches, self.mode,
                repr(self.compile_backend), bool(self.options.get("fullgraph", False)),
                repr(sorted((self.options.get("compile_options") or {}).items())))

    def _run(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        key = self._key(batch, stages)
        compiled = lookup(key, self.model)
        first = compiled is None
        if first:
            module = self._module(self.model, self.autocast_dtype, stages)
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
            store(key, self.model, compiled)  # only once it has run successfully
        return outputs

"""The ``eager`` backend: the model as it is."""

from __future__ import annotations

import torch

from .base import Backend, InferenceModule

__all__ = ["EagerBackend"]


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
            module = self._module(self.model, self.autocast_dtype, stages)
            self._modules[stages] = module
        with torch.inference_mode():
            return module(batch)

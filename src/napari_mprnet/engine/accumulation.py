"""Blending tile results into the output planes.

Every tile result is multiplied by its blending weight (:meth:`Tile.weight`, which sums to
one over overlapping tiles) and added into float32 outputs the size of the input:
:func:`blend` for host arrays, :class:`HostAccumulator` (one batch behind, asynchronous
copies on CUDA) and :class:`DeviceAccumulator` (one plane buffer per output on the device)
for the pipelined loop.
"""

from __future__ import annotations

import numpy as np
import torch

from . import staging
from .tiling import Tile

__all__ = ["Accumulator", "DeviceAccumulator", "HostAccumulator", "blend"]


def blend(outputs: list[np.ndarray], chunk: list[tuple[int, Tile]],
          results: list[np.ndarray]) -> None:
    """Add each ``(B, h, w, c)`` host result of ``chunk``, weighted, into ``outputs``."""
    for (p, t), *per_stage in zip(chunk, *results):
        weight = t.weight()[..., None]
        for out, result in zip(outputs, per_stage):
            out[p][t.slices] += weight * result


class Accumulator:
    """Blends tile results ``(B, c, h, w)`` (device tensors) into the outputs."""

    def __init__(self, outputs: list[np.ndarray], device: torch.device) -> None:
        self.outputs = outputs
        self.device = device

    def add(self, chunk: list[tuple[int, Tile]], results: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Complete every pending addition."""


class HostAccumulator(Accumulator):
    """Blend on the host, one batch behind: a batch's results are copied back
    asynchronously (into pinned buffers on CUDA) and blended while the next batch runs."""

    def __init__(self, outputs: list[np.ndarray], device: torch.device,
                 asynchronous: bool) -> None:
        super().__init__(outputs, device)
        self.asynchronous = asynchronous
        self._pending = None
        self._slots: list[list[torch.Tensor]] = [[], []]
        self._slot = 0

    def _pinned(self, slot: int, index: int, shape: torch.Size) -> torch.Tensor:
        buffers = self._slots[slot]
        if index >= len(buffers) or buffers[index].shape != shape:
            buffers[index:index + 1] = [staging.host_buffer(tuple(shape), pin=True)]
        return buffers[index]

    def add(self, chunk: list[tuple[int, Tile]], results: list[torch.Tensor]) -> None:
        staged = []
        for index, result in enumerate(results):
            source = result[:len(chunk)].permute(0, 2, 3, 1)
            if self.asynchronous:
                target = self._pinned(self._slot, index, source.shape)
                target.copy_(source, non_blocking=True)
            else:
                target = source.to("cpu").contiguous()
            staged.append(target)
        event = None
        if self.asynchronous:
            event = torch.cuda.Event()
            event.record()
        self._slot = 1 - self._slot
        previous, self._pending = self._pending, (chunk, staged, event)
        if previous is not None:
            self._blend(*previous)

    def _blend(self, chunk, staged, event) -> None:
        if event is not None:
            event.synchronize()
        blend(self.outputs, chunk, [tensor.numpy()[:len(chunk)] for tensor in staged])

    def finish(self) -> None:
        if self._pending is not None:
            self._blend(*self._pending)
            self._pending = None


class DeviceAccumulator(Accumulator):
    """Blend on the device into one ``(c, H, W)`` float32 buffer per output, copied back to
    the host when the work moves on to the next plane."""

    def __init__(self, outputs: list[np.ndarray], device: torch.device) -> None:
        super().__init__(outputs, device)
        height, width, channels = outputs[0].shape[1:]
        self.buffers = [torch.zeros((channels, height, width), dtype=torch.float32,
                                    device=device) for _ in outputs]
        self.plane: int | None = None
        self._profiles: dict[tuple[str, int, int], torch.Tensor] = {}

    def _profile(self, axis: str, start: int, values: np.ndarray) -> torch.Tensor:
        key = (axis, start, len(values))
        if key not in self._profiles:
            self._profiles[key] = torch.from_numpy(values).to(self.device)
        return self._profiles[key]

    def add(self, chunk: list[tuple[int, Tile]], results: list[torch.Tensor]) -> None:
        for row, (p, t) in enumerate(chunk):
            if p != self.plane:
                self._flush()
                self.plane = p
            weight = (self._profile("y", t.y, t.weight_y)[:, None]
                      * self._profile("x", t.x, t.weight_x)[None, :])
            rows, cols = t.slices
            for buffer, result in zip(self.buffers, results):
                buffer[:, rows, cols] += result[row] * weight

    def _flush(self) -> None:
        if self.plane is None:
            return
        for out, buffer in zip(self.outputs, self.buffers):
            out[self.plane] = buffer.permute(1, 2, 0).cpu().numpy()
            buffer.zero_()

    def finish(self) -> None:
        self._flush()
        self.plane = None

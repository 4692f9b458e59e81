"""Getting tiles to the network: gathering them into batches and padding them.

:func:`gather` stacks a chunk of tiles for the plain loop; :class:`Staging` is the ring of
two host buffers the pipelined loop gathers into (page-locked on CUDA, so that copies to
the device are asynchronous); :func:`pad_to_multiple` pads a batch to the network's size
multiple.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .tiling import Tile

__all__ = ["Staging", "gather", "host_buffer", "pad_to_multiple"]

#: One unit of work: a plane index and a tile of it.
WorkItem = tuple[int, Tile]


def pad_to_multiple(batch: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Pad ``(N, C, H, W)`` at the bottom/right to multiples of ``multiple``.

    Reflect padding where the image is large enough, replicate otherwise.
    Returns the padded tensor and the original height and width.
    """
    h, w = batch.shape[-2:]
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return batch, h, w
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(batch, (0, pad_w, 0, pad_h), mode=mode), h, w


def gather(planes: np.ndarray, chunk: list[WorkItem]) -> np.ndarray:
    """The tiles of ``chunk`` stacked into one ``(B, h, w, c)`` array."""
    return np.stack([planes[p][t.slices] for p, t in chunk])


def host_buffer(shape: tuple[int, ...], pin: bool) -> torch.Tensor:
    """A zeroed float32 host tensor, in page-locked memory if ``pin`` (CUDA only)."""
    return torch.zeros(shape, dtype=torch.float32, pin_memory=pin)


class Staging:
    """A ring of two host buffers ``(B, h, w, c)`` that tile batches are gathered into:
    pinned memory on CUDA (so host-to-device copies are asynchronous), plain elsewhere.
    A buffer is refilled only once the copy that last read it has finished."""

    def __init__(self, tile_shape: tuple[int, int, int], pin: bool) -> None:
        self.tile_shape = tile_shape
        self.pin = pin
        self._buffers: list[torch.Tensor] = []
        self._events: dict[int, torch.cuda.Event] = {}
        self._batch: int | None = None
        self._next = 0

    def fill(self, planes: np.ndarray, chunk: list[WorkItem], batch_size: int) -> torch.Tensor:
        """Gather ``chunk``'s tiles into the next buffer (rows past the chunk hold dummy
        tiles); return the whole buffer."""
        if batch_size != self._batch:
            self._buffers = [host_buffer((batch_size, *self.tile_shape), self.pin)
                             for _ in range(2)]
            self._events = {}
            self._batch, self._next = batch_size, 0
        index = self._next
        self._next = (index + 1) % len(self._buffers)
        event = self._events.pop(index, None)
        if event is not None:
            event.synchronize()
        view = self._buffers[index].numpy()
        for row, (p, t) in enumerate(chunk):
            view[row] = planes[p][t.slices]
        return self._buffers[index]

    def copied(self, buffer: torch.Tensor) -> None:
        """Note that a (non-blocking) copy reading ``buffer`` has just been queued."""
        if not self.pin:
            return
        for index, candidate in enumerate(self._buffers):
            if candidate is buffer:
                event = torch.cuda.Event()
                event.record()
                self._events[index] = event

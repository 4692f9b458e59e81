"""Running a model over stacks of planes, tile batch by tile batch.

The runner takes normalised planes ``(P, H, W, c)``, cuts every plane into the tiles of a
:class:`~napari_mprnet.engine.tiling.TileGrid`, runs the tiles in batches and adds each
result, multiplied by its blending weight, into float32 output buffers the size of the
input. Peak memory is therefore the tile batch's activations plus the output buffers,
whatever the image size.

:meth:`TiledRunner.iter_run` is a generator that yields a :class:`Progress` after every tile
batch, so a caller can show progress and stop the work between batches; its return value
(``StopIteration.value``) holds the outputs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..model.arch import MPRNet
from .devices import device_memory_bytes, resolve_device
from .tiling import Tile, TileGrid, validate_tiling

__all__ = [
    "PRECISIONS",
    "Progress",
    "TiledRunner",
    "default_precision",
    "is_out_of_memory",
    "pad_to_multiple",
]

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_PRECISION_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
#: Smallest tile the out-of-memory back-off will shrink to.
MIN_TILE = 64
#: Largest tile "auto" picks: bigger tiles barely reduce the overlap overhead.
MAX_AUTO_TILE = 1024
#: Bytes of live activations per pixel and feature channel during a no-grad forward,
#: measured on CPU for fp32 (benchmarks/bench_restore.py prints the actual peak).
_BYTES_PER_PIXEL_FEATURE = 4 * 14


@dataclass(frozen=True)
class Progress:
    """How far a run has got: ``done`` of ``total`` tile batches."""

    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def default_precision(device: torch.device) -> str:
    """fp16 autocast on CUDA, fp32 elsewhere."""
    return "fp16" if device.type == "cuda" else "fp32"


def normalize_precision(precision: str | None, device: torch.device) -> str:
    """Validate a precision name (fp32/fp16/bf16, or None for the device's default)."""
    if precision is None:
        return default_precision(device)
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a string such as 'fp32', got {precision!r}")
    name = _PRECISION_ALIASES.get(precision.lower(), precision.lower())
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of fp32, fp16, bf16")
    return name


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an accelerator (or host) out-of-memory error."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


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


def _available_host_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


class TiledRunner:
    """Run an MPRNet tile by tile with blended overlaps.

    Parameters
    ----------
    model : MPRNet
        The network (moved to ``device``; put in eval mode).
    device : str or torch.device
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    precision : {"fp32", "fp16", "bf16"}, optional
        Autocast precision; default fp16 on CUDA and fp32 elsewhere.
    tile_size : int or "auto"
        Tile edge in pixels (>= 16); "auto" chooses from the device's free memory.
    tile_overlap : int
        Overlap between neighbouring tiles in pixels.
    batch_size : int, optional
        Tiles per forward pass; default chosen from free memory.
    channels_last : bool, optional
        Use the channels-last memory format (default: on GPUs).
    """

    def __init__(
        self,
        model: MPRNet,
        device: str | torch.device = "auto",
        precision: str | None = None,
        tile_size: int | str = "auto",
        tile_overlap: int = 32,
        batch_size: int | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if not isinstance(model, MPRNet):
            raise TypeError(f"model must be an MPRNet, got {type(model).__name__}")
        self.device = resolve_device(device)
        self.precision = normalize_precision(precision, self.device)
        if tile_size != "auto":
            validate_tiling(tile_size, tile_overlap)
        elif not isinstance(tile_overlap, int) or isinstance(tile_overlap, bool):
            raise TypeError(f"tile_overlap must be an integer, got {tile_overlap!r}")
        elif tile_overlap < 0:
            raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.batch_size = batch_size
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ sizing

    def _budget_bytes(self) -> int:
        memory = device_memory_bytes(self.device)
        if memory is not None:
            free, _total = memory
            return int(free * 0.6)
        return int(min(_available_host_bytes() * 0.5, 4 * 2**30))

    def _bytes_per_pixel(self) -> int:
        cfg = self.model.config
        width = max(cfg.n_feat + cfg.scale_orsnetfeats, cfg.n_feat + 2 * cfg.scale_unetfeats)
        scale = 0.5 if self.precision != "fp32" and self.device.type != "cpu" else 1.0
        return int(_BYTES_PER_PIXEL_FEATURE * width * scale)

    def plan(self, height: int, width: int, n_planes: int = 1) -> tuple[int, int]:
        """Tile size and batch size to use for planes of ``height`` x ``width``."""
        pixels_budget = max(self._budget_bytes() // self._bytes_per_pixel(), 16 * 16)
        if self.tile_size == "auto":
            edge = math.isqrt(pixels_budget) // 8 * 8
            largest = max(MIN_TILE, min(MAX_AUTO_TILE, edge))
            overlap = self._overlap(largest)
            # as few tiles as the budget allows, then the smallest tile giving that count
            tile = max(_balanced_tile(length, largest, overlap) for length in (height, width))
            tile = max(tile, overlap + 8, 16)
        else:
            tile = int(self.tile_size)
        if self.batch_size is not None:
            return tile, self.batch_size
        tile_pixels = _round_up(min(tile, height), 8) * _round_up(min(tile, width), 8)
        tiles_total = n_planes * len(TileGrid.plan(height, width, tile, self._overlap(tile)))
        batch = max(1, min(pixels_budget // tile_pixels, 16, tiles_total))
        if self.device.type == "cpu":
            batch = 1  # on CPU a bigger batch only costs memory
        return tile, batch

    def _overlap(self, tile: int) -> int:
        return self.tile_overlap if self.tile_overlap < tile else tile // 4

    # ------------------------------------------------------------------ running

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    def forward_tiles(self, tiles: np.ndarray, stages: bool) -> list[np.ndarray]:
        """Run a batch ``(B, h, w, c)`` of normalised tiles; return float32 ``(B, h, w, c)``
        outputs: the final image, then (if ``stages``) stage 2 and stage 1."""
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        grey_through_rgb = batch.shape[1] == 1 and self.model.config.in_c == 3
        if grey_through_rgb:
            batch = batch.expand(-1, 3, -1, -1)
        padded, h, w = pad_to_multiple(batch, MPRNet.size_multiple)
        with torch.inference_mode(), self._autocast():
            outputs = self.model(padded)
        wanted = outputs if stages else outputs[:1]
        if grey_through_rgb:
            wanted = [o.float().mean(dim=1, keepdim=True) for o in wanted]
        return [
            o[..., :h, :w].float().permute(0, 2, 3, 1).contiguous().cpu().numpy() for o in wanted
        ]

    def iter_run(
        self, planes: np.ndarray, stages: bool = False
    ) -> Generator[Progress, None, list[np.ndarray]]:
        """Restore normalised planes ``(P, H, W, c)``.

        ``c`` is the model's channel count, or 1 for a 3-channel model: grey planes are
        replicated to three channels and the outputs averaged back to one.

        Yields a :class:`Progress` after every tile batch; returns the outputs (float32,
        same shape): ``[final]`` or ``[final, stage2, stage1]``.
        """
        in_c = self.model.config.in_c
        accepted = (in_c, 1) if in_c == 3 else (in_c,)
        if planes.ndim != 4 or planes.shape[-1] not in accepted:
            raise ValueError(
                f"planes must be (P, H, W, c) with c in {accepted} for this model, "
                f"got {planes.shape}"
            )
        n_planes, height, width, _ = planes.shape
        tile, batch_size = self.plan(height, width, n_planes)
        while True:
            try:
                return (yield from self._run_grid(planes, stages, tile, batch_size))
            except _ShrinkTiles:
                new_tile = max(MIN_TILE, (tile // 2) // 8 * 8)
                if new_tile >= tile or new_tile <= self._overlap(new_tile):
                    raise MemoryError(
                        f"out of memory even with {tile}x{tile} tiles one at a time on "
                        f"{self.device}; use a smaller model, device='cpu', or free memory"
                    ) from None
                log.warning("out of memory with %d px tiles: restarting with %d px tiles",
                            tile, new_tile)
                tile, batch_size = new_tile, 1

    def _run_grid(
        self, planes: np.ndarray, stages: bool, tile: int, batch_size: int
    ) -> Generator[Progress, None, list[np.ndarray]]:
        n_planes, height, width, _ = planes.shape
        grid = TileGrid.plan(height, width, tile, self._overlap(tile))
        work = [(p, t) for p in range(n_planes) for t in grid.tiles()]
        outputs = [np.zeros(planes.shape, np.float32) for _ in range(3 if stages else 1)]
        total = math.ceil(len(work) / batch_size)
        done_batches = 0
        start = 0
        while start < len(work):
            chunk = work[start:start + batch_size]
            try:
                results = self.forward_tiles(_gather(planes, chunk), stages)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self._release_cached_memory()
                if batch_size > 1:
                    batch_size = max(1, batch_size // 2)
                    log.warning("out of memory: retrying with %d tiles per batch", batch_size)
                    total = done_batches + math.ceil((len(work) - start) / batch_size)
                    continue
                raise _ShrinkTiles() from None
            for (p, t), *per_stage in zip(chunk, *results):
                weight = t.weight()[..., None]
                for out, result in zip(outputs, per_stage):
                    out[p][t.slices] += weight * result
            start += len(chunk)
            done_batches += 1
            yield Progress(done_batches, total)
        return outputs

    def _release_cached_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def run(self, planes: np.ndarray, stages: bool = False, progress=None) -> list[np.ndarray]:
        """Run :meth:`iter_run` to completion, calling ``progress(done, total)`` if given."""
        return drive(self.iter_run(planes, stages), progress)


class _ShrinkTiles(Exception):
    """Internal signal: even one tile does not fit; restart with smaller tiles."""


def _balanced_tile(length: int, largest: int, overlap: int) -> int:
    """Smallest tile (multiple of 8) covering ``length`` with as few tiles as ``largest``
    tiles would need."""
    if length <= largest:
        return _round_up(length, 8)
    count = math.ceil((length - overlap) / (largest - overlap))
    return min(largest, _round_up(math.ceil((length + (count - 1) * overlap) / count), 8))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _gather(planes: np.ndarray, chunk: list[tuple[int, Tile]]) -> np.ndarray:
    return np.stack([planes[p][t.slices] for p, t in chunk])


def drive(generator: Iterator, progress=None):
    """Exhaust a progress generator, forwarding ``(done, total)`` to ``progress``;
    return the generator's return value."""
    while True:
        try:
            step = next(generator)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(step.done, step.total)

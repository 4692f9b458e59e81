"""Running a model over stacks of planes, tile batch by tile batch.

The runner takes normalised planes ``(P, H, W, c)``, cuts every plane into the tiles of a
:class:`~napari_mprnet.engine.tiling.TileGrid`, runs the tiles in batches and adds each
result, multiplied by its blending weight, into float32 output buffers the size of the
input. Peak memory is therefore the tile batch's activations plus the output buffers,
whatever the image size.

Each padded tile batch goes through a backend (:mod:`.backends`: eager, torch.compile or
Torch-TensorRT); compiled backends get batches of one fixed shape (a short last batch is
padded with dummy tiles). On CUDA the loop is pipelined: the next batch is gathered on a
background thread into pinned staging buffers while the current one runs, copies are
non-blocking, and tiles are blended on the GPU into one buffer per plane when that fits
(otherwise on the host, one batch behind). The pipelined loop is device-agnostic and can be
forced on CPU (``pipeline=True``, ``accumulate="device"``); the default CPU loop is the
plain one.

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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..model.arch import MPRNet
from .backends import PRECISIONS, Backend, is_out_of_memory, make_backend, resolve_backend
from .devices import device_memory_bytes, resolve_device
from .tiling import Tile, TileGrid, validate_tiling

__all__ = [
    "ACCUMULATE",
    "PRECISIONS",
    "Progress",
    "TiledRunner",
    "default_precision",
    "is_out_of_memory",
    "pad_to_multiple",
]

log = logging.getLogger(__name__)

_PRECISION_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
#: Smallest tile the out-of-memory back-off will shrink to.
MIN_TILE = 64
#: Largest tile "auto" picks: bigger tiles barely reduce the overlap overhead.
MAX_AUTO_TILE = 1024
#: Bytes of live activations per pixel and feature channel during a no-grad forward,
#: measured on CPU for fp32 (benchmarks/bench_restore.py prints the actual peak).
_BYTES_PER_PIXEL_FEATURE = 4 * 14
#: Where blended tiles are summed: "auto" (on the GPU when the output fits), "host", "device".
ACCUMULATE = ("auto", "host", "device")
#: Largest share of free device memory the device-side output buffers may take.
_DEVICE_ACCUMULATE_SHARE = 0.25


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
    backend : {"eager", "compile", "tensorrt", "auto"}
        How tile batches run (see :mod:`napari_mprnet.engine.backends`); compiled backends
        get batches of one fixed shape. "auto": the fastest available on the device.
    backend_options : dict, optional
        Backend settings, e.g. ``{"cuda_graphs": True}`` or ``{"compile_backend": "eager"}``.
    accumulate : {"auto", "host", "device"}
        Where blended tiles are summed: "auto" sums on the GPU when one plane's outputs fit
        there (copied back plane by plane), else in host memory.
    pipeline : bool, optional
        Overlap data movement with compute: tile batches gathered on a background thread
        into (pinned, on CUDA) staging buffers, non-blocking copies. Default: on CUDA, or
        when ``accumulate="device"``.
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
        backend: str = "eager",
        backend_options: dict | None = None,
        accumulate: str = "auto",
        pipeline: bool | None = None,
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
        if accumulate not in ACCUMULATE:
            raise ValueError(f"accumulate must be one of {', '.join(ACCUMULATE)}, "
                             f"got {accumulate!r}")
        backend_name = resolve_backend(backend, self.device)
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.batch_size = batch_size
        self.accumulate = accumulate
        self.pipeline = pipeline
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.backend: Backend = make_backend(backend_name, self.model, self.device,
                                             self.precision, backend_options)

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

    def forward_tiles(self, tiles: np.ndarray, stages: bool) -> list[np.ndarray]:
        """Run a batch ``(B, h, w, c)`` of normalised tiles; return float32 ``(B, h, w, c)``
        outputs: the final image, then (if ``stages``) stage 2 and stage 1."""
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
        batch = batch.to(self.device, non_blocking=True)
        return [o.permute(0, 2, 3, 1).contiguous().cpu().numpy()
                for o in self.forward_batch(batch, stages)]

    def forward_batch(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        """Run a ``(B, c, h, w)`` batch already on the device through the backend; return
        float32 ``(B, c, h, w)`` device tensors (final, then stage 2 and 1 if ``stages``)."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        grey_through_rgb = batch.shape[1] == 1 and self.model.config.in_c == 3
        if grey_through_rgb:
            batch = batch.expand(-1, 3, -1, -1)
        padded, h, w = pad_to_multiple(batch, MPRNet.size_multiple)
        outputs = self.backend(padded, stages)
        if grey_through_rgb:
            outputs = [o.float().mean(dim=1, keepdim=True) for o in outputs]
        return [o[..., :h, :w].float() for o in outputs]

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

    #: Pinned buffers, events and non-blocking copies in the pipelined loop (None: on CUDA).
    _async_copies: bool | None = None

    def _pipelined(self) -> bool:
        if self.pipeline is not None:
            return bool(self.pipeline)
        return self.device.type == "cuda" or self.accumulate == "device"

    def _accumulate_on_device(self, plane_shape: tuple[int, int, int], n_outputs: int) -> bool:
        if self.accumulate != "auto":
            return self.accumulate == "device"
        memory = device_memory_bytes(self.device)
        if memory is None:
            return False
        needed = n_outputs * math.prod(plane_shape) * 4
        return needed <= memory[0] * _DEVICE_ACCUMULATE_SHARE

    def _run_grid(
        self, planes: np.ndarray, stages: bool, tile: int, batch_size: int
    ) -> Generator[Progress, None, list[np.ndarray]]:
        if self._pipelined():
            return (yield from self._run_grid_pipelined(planes, stages, tile, batch_size))
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
                tiles = _gather(planes, chunk)
                if self.backend.fixed_shape and len(chunk) < batch_size:
                    # compiled backends: every batch the same shape (dummy tiles at the end)
                    filler = np.zeros((batch_size - len(chunk), *tiles.shape[1:]), tiles.dtype)
                    tiles = np.concatenate([tiles, filler])
                results = self.forward_tiles(tiles, stages)
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

    def _run_grid_pipelined(
        self, planes: np.ndarray, stages: bool, tile: int, batch_size: int
    ) -> Generator[Progress, None, list[np.ndarray]]:
        """The GPU loop: the next tile batch is gathered on a background thread into a
        (pinned) staging buffer while the current one runs; copies are non-blocking; tiles
        are blended on the device (one plane at a time) or, deferred by one batch, on the
        host. Device-agnostic, so it also runs (and is tested) on CPU."""
        n_planes, height, width, channels = planes.shape
        grid = TileGrid.plan(height, width, tile, self._overlap(tile))
        tiles = grid.tiles()
        work = [(p, t) for p in range(n_planes) for t in tiles]
        n_out = 3 if stages else 1
        outputs = [np.zeros(planes.shape, np.float32) for _ in range(n_out)]
        tile_shape = (tiles[0].height, tiles[0].width, channels)
        asynchronous = self.device.type == "cuda" if self._async_copies is None \
            else self._async_copies
        if self._accumulate_on_device((height, width, channels), n_out):
            sink: _Accumulator = _DeviceAccumulator(outputs, self.device)
        else:
            sink = _HostAccumulator(outputs, self.device, asynchronous)
        staging = _Staging(tile_shape, asynchronous)
        fixed = self.backend.fixed_shape
        total = math.ceil(len(work) / batch_size)
        done_batches = 0
        start = 0
        prefetched: tuple[tuple[int, int], Future] | None = None
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mprnet-tiles")
        try:
            while start < len(work):
                chunk = work[start:start + batch_size]
                if prefetched is not None and prefetched[0] == (start, batch_size):
                    host = prefetched[1].result()
                else:
                    if prefetched is not None:
                        prefetched[1].result()
                    host = staging.fill(planes, chunk, batch_size)
                prefetched = None
                try:
                    rows = host if fixed else host[:len(chunk)]
                    batch = rows.to(self.device, non_blocking=True)
                    staging.copied(host)
                    following = start + len(chunk)
                    if following < len(work):  # gather the next batch while this one runs
                        upcoming = work[following:following + batch_size]
                        prefetched = ((following, batch_size),
                                      pool.submit(staging.fill, planes, upcoming, batch_size))
                    results = self.forward_batch(batch.permute(0, 3, 1, 2), stages)
                except Exception as error:
                    if not is_out_of_memory(error):
                        raise
                    if prefetched is not None:
                        prefetched[1].result()
                        prefetched = None
                    self._release_cached_memory()
                    if batch_size > 1:
                        batch_size = max(1, batch_size // 2)
                        log.warning("out of memory: retrying with %d tiles per batch",
                                    batch_size)
                        total = done_batches + math.ceil((len(work) - start) / batch_size)
                        continue
                    raise _ShrinkTiles() from None
                sink.add(chunk, results)
                del batch, results
                start += len(chunk)
                done_batches += 1
                yield Progress(done_batches, total)
            sink.finish()
        finally:
            if prefetched is not None:
                with contextlib.suppress(Exception):
                    prefetched[1].result()
            pool.shutdown(wait=True)
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


def _host_buffer(shape: tuple[int, ...], pin: bool) -> torch.Tensor:
    """A zeroed float32 host tensor, in page-locked memory if ``pin`` (CUDA only)."""
    return torch.zeros(shape, dtype=torch.float32, pin_memory=pin)


class _Staging:
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

    def fill(self, planes: np.ndarray, chunk: list[tuple[int, Tile]],
             batch_size: int) -> torch.Tensor:
        """Gather ``chunk``'s tiles into the next buffer (rows past the chunk hold dummy
        tiles); return the whole buffer."""
        if batch_size != self._batch:
            self._buffers = [_host_buffer((batch_size, *self.tile_shape), self.pin)
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


class _Accumulator:
    """Blends tile results ``(B, c, h, w)`` (device tensors) into the outputs."""

    def __init__(self, outputs: list[np.ndarray], device: torch.device) -> None:
        self.outputs = outputs
        self.device = device

    def add(self, chunk: list[tuple[int, Tile]], results: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Complete every pending addition."""


class _HostAccumulator(_Accumulator):
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
            buffers[index:index + 1] = [_host_buffer(tuple(shape), pin=True)]
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
        arrays = [tensor.numpy() for tensor in staged]
        for row, (p, t) in enumerate(chunk):
            weight = t.weight()[..., None]
            for out, array in zip(self.outputs, arrays):
                out[p][t.slices] += weight * array[row]

    def finish(self) -> None:
        if self._pending is not None:
            self._blend(*self._pending)
            self._pending = None


class _DeviceAccumulator(_Accumulator):
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

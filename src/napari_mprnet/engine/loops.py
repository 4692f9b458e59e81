"""The tile-batch loops behind :class:`~napari_mprnet.engine.runner.TiledRunner`.

:func:`run_grid` is the plain loop: a chunk of tiles is gathered (:func:`.staging.gather`),
run and blended on the host (:func:`.accumulation.blend`) before the next one.
:func:`run_grid_pipelined` overlaps data movement with compute: the next chunk is gathered
on a background thread into a :class:`.staging.Staging` buffer while the current one runs,
copies are non-blocking, and tiles are blended on the device or, one batch behind, on the
host (:mod:`.accumulation`). Both are generators that yield a :class:`.progress.Progress`
after every tile batch and return the outputs.

On out-of-memory a loop halves its batch size (:func:`back_off`) and carries on from the
first tile not yet blended; when even one tile does not fit it raises :class:`ShrinkTiles`
so that the runner restarts with smaller tiles.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .accumulation import Accumulator, DeviceAccumulator, HostAccumulator, blend
from .backends import is_out_of_memory
from .bands import residual_low_band
from .devices import device_memory_bytes
from .progress import Progress, Tally
from .staging import Staging, gather
from .tiling import TileGrid

__all__ = [
    "ShrinkTiles",
    "accumulate_on_device",
    "back_off",
    "release_cached_memory",
    "run_grid",
    "run_grid_pipelined",
]

log = logging.getLogger(__name__)

#: Largest share of free device memory the device-side output buffers may take.
_DEVICE_ACCUMULATE_SHARE = 0.25

#: Runs a host batch ``(B, h, w, c)`` of tiles; returns float32 host outputs, same layout.
TileForward = Callable[[np.ndarray, bool], list[np.ndarray]]
#: Runs a device batch ``(B, c, h, w)``; returns float32 device outputs, same layout.
BatchForward = Callable[[torch.Tensor, bool], list[torch.Tensor]]


class ShrinkTiles(Exception):
    """Internal signal: even one tile does not fit; restart with smaller tiles."""


def release_cached_memory(device: torch.device) -> None:
    """Return the caching allocator's unused blocks on a CUDA ``device`` (else nothing).

    Parameters
    ----------
    device : torch.device
        The device a batch just failed on.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()


def back_off(error: Exception, batch_size: int, device: torch.device) -> int:
    """The batch size to retry with after ``error`` in a batch of ``batch_size`` tiles.

    Parameters
    ----------
    error : Exception
        What the batch raised; re-raised unless it is out-of-memory.
    batch_size : int
        Tiles in the batch that failed.
    device : torch.device
        The device it ran on (its cached memory is released first).

    Returns
    -------
    int
        ``batch_size`` halved (at least 1).

    Raises
    ------
    ShrinkTiles
        When a single tile did not fit.
    """
    if not is_out_of_memory(error):
        raise error
    release_cached_memory(device)
    if batch_size == 1:
        raise ShrinkTiles() from None
    batch_size = max(1, batch_size // 2)
    log.warning("out of memory: retrying with %d tiles per batch", batch_size)
    return batch_size


def accumulate_on_device(accumulate: str, device: torch.device,
                         plane_shape: tuple[int, int, int], n_outputs: int) -> bool:
    """Whether the pipelined loop blends on ``device`` rather than on the host.

    Parameters
    ----------
    accumulate : {"auto", "host", "device"}
        The runner's setting; "auto" chooses the device when ``n_outputs`` float32 planes
        of ``plane_shape`` take at most a quarter of its free memory.
    device : torch.device
        Where the tiles run.
    plane_shape : tuple of int
        ``(H, W, c)`` of one plane.
    n_outputs : int
        Output planes blended per input plane.

    Returns
    -------
    bool
    """
    if accumulate != "auto":
        return accumulate == "device"
    memory = device_memory_bytes(device)
    if memory is None:
        return False
    needed = n_outputs * math.prod(plane_shape) * 4
    return needed <= memory[0] * _DEVICE_ACCUMULATE_SHARE


def run_grid(
    forward_tiles: TileForward, planes: np.ndarray, grid: TileGrid, stages: bool,
    batch_size: int, low_band: bool, *, device: torch.device, fixed_shape: bool,
) -> Generator[Progress, None, list[np.ndarray]]:
    """The plain loop: gather, run and blend one tile batch at a time on the host.

    Parameters
    ----------
    forward_tiles : callable
        ``forward_tiles(tiles, stages)`` as :meth:`.runner.TiledRunner.forward_tiles`.
    planes : numpy.ndarray
        Normalised planes ``(P, H, W, c)``.
    grid : TileGrid
        The tiles of one plane.
    stages : bool
        Also blend the stage 2 and stage 1 outputs.
    batch_size : int
        Tiles per batch to start with (halved on out-of-memory).
    low_band : bool
        Also blend the low band of the residual (:func:`.bands.residual_low_band`).
    device : torch.device
        Where the tiles run.
    fixed_shape : bool
        Pad a short last batch with dummy tiles (compiled backends).

    Returns
    -------
    list of numpy.ndarray
        float32 outputs shaped like ``planes`` (via ``StopIteration.value``).
    """
    n_planes = planes.shape[0]
    work = [(p, t) for p in range(n_planes) for t in grid.tiles()]
    n_out = (3 if stages else 1) + low_band
    outputs = [np.zeros(planes.shape, np.float32) for _ in range(n_out)]
    tally = Tally(work, batch_size)
    while tally.tiles < len(work):
        chunk = work[tally.tiles:tally.tiles + batch_size]
        try:
            tiles = gather(planes, chunk)
            if fixed_shape and len(chunk) < batch_size:
                # compiled backends: every batch the same shape (dummy tiles at the end)
                filler = np.zeros((batch_size - len(chunk), *tiles.shape[1:]), tiles.dtype)
                tiles = np.concatenate([tiles, filler])
            results = forward_tiles(tiles, stages)
            if low_band:
                results.append(residual_low_band(results[0], tiles))
        except Exception as error:  # noqa: BLE001 - back_off re-raises all but OOM
            batch_size = back_off(error, batch_size, device)
            tally.rebatch(batch_size)
            continue
        blend(outputs, chunk, results)
        yield tally.advance(chunk)
    return outputs


def run_grid_pipelined(
    forward_batch: BatchForward, planes: np.ndarray, grid: TileGrid, stages: bool,
    batch_size: int, low_band: bool, *, device: torch.device, fixed_shape: bool,
    accumulate: str, asynchronous: bool,
) -> Generator[Progress, None, list[np.ndarray]]:
    """The GPU loop: the next tile batch is gathered on a background thread while the
    current one runs; device-agnostic, so it also runs (and is tested) on CPU.

    Parameters
    ----------
    forward_batch : callable
        ``forward_batch(batch, stages)`` as :meth:`.runner.TiledRunner.forward_batch`.
    planes, grid, stages, batch_size, low_band, device, fixed_shape
        As for :func:`run_grid`.
    accumulate : {"auto", "host", "device"}
        Where tiles are blended (:func:`accumulate_on_device`).
    asynchronous : bool
        Pinned staging buffers, copy events and non-blocking copies (CUDA).

    Returns
    -------
    list of numpy.ndarray
        float32 outputs shaped like ``planes`` (via ``StopIteration.value``).
    """
    n_planes, height, width, channels = planes.shape
    tiles = grid.tiles()
    work = [(p, t) for p in range(n_planes) for t in tiles]
    n_out = (3 if stages else 1) + low_band
    outputs = [np.zeros(planes.shape, np.float32) for _ in range(n_out)]
    tile_shape = (tiles[0].height, tiles[0].width, channels)
    if accumulate_on_device(accumulate, device, (height, width, channels), n_out):
        sink: Accumulator = DeviceAccumulator(outputs, device)
    else:
        sink = HostAccumulator(outputs, device, asynchronous)
    staging = Staging(tile_shape, asynchronous)
    tally = Tally(work, batch_size)
    prefetched: tuple[tuple[int, int], Future] | None = None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mprnet-tiles")
    try:
        while tally.tiles < len(work):
            start = tally.tiles
            chunk = work[start:start + batch_size]
            if prefetched is not None and prefetched[0] == (start, batch_size):
                host = prefetched[1].result()
            else:
                if prefetched is not None:
                    prefetched[1].result()
                host = staging.fill(planes, chunk, batch_size)
            prefetched = None
            try:
                rows = host if fixed_shape else host[:len(chunk)]
                batch = rows.to(device, non_blocking=True)
                staging.copied(host)
                following = start + len(chunk)
                if following < len(work):  # gather the next batch while this one runs
                    upcoming = work[following:following + batch_size]
                    prefetched = ((following, batch_size),
                                  pool.submit(staging.fill, planes, upcoming, batch_size))
                inputs = batch.permute(0, 3, 1, 2)
                results = forward_batch(inputs, stages)
                if low_band:
                    results.append(residual_low_band(results[0], inputs))
            except Exception as error:  # noqa: BLE001 - back_off re-raises all but OOM
                if prefetched is not None and is_out_of_memory(error):
                    prefetched[1].result()
                    prefetched = None
                batch_size = back_off(error, batch_size, device)
                tally.rebatch(batch_size)
                continue
            sink.add(chunk, results)
            del batch, results
            yield tally.advance(chunk)
        sink.finish()
    finally:
        if prefetched is not None:
            with contextlib.suppress(Exception):
                prefetched[1].result()
        pool.shutdown(wait=True)
    return outputs

"""How big the units of work are: tile edge and tiles per batch for a plane and a device.

On a GPU the tile is as large as a share of free memory allows (up to
:data:`MAX_AUTO_TILE`) and tiles are batched. On a CPU the eager network's throughput per
pixel is flat from 192 to 384 px tiles and falls beyond, so its tiles are at most
:data:`MAX_CPU_AUTO_TILE` and run one at a time: a 2048x2048 plane becomes 36 units of about
a second each, which gives frequent progress and cancel points at a 16% overlap cost.
OpenVINO's throughput per pixel stays flat up to 768 px tiles, so with it tiles are at most
:data:`MAX_OPENVINO_AUTO_TILE` (a 1024 px plane in 2x2 tiles: 6% overlap cost) and a unit
still takes about a second on two cores. The grid then shrinks the tiles to what the plane
needs (:func:`~napari_mprnet.engine.tiling.axis_tile`).
"""

from __future__ import annotations

import math
import os

import torch

from ..model.arch import MPRNetConfig
from .devices import device_memory_bytes
from .tiling import TileGrid, axis_tile

__all__ = [
    "MAX_AUTO_TILE",
    "MAX_CPU_AUTO_TILE",
    "MAX_OPENVINO_AUTO_TILE",
    "MIN_TILE",
    "bytes_per_pixel",
    "memory_budget",
    "plan_tiles",
    "round_up",
    "tile_overlap_for",
]

#: Smallest tile the out-of-memory back-off will shrink to.
MIN_TILE = 64
#: Largest tile "auto" picks on an accelerator: bigger tiles barely reduce the overlap.
MAX_AUTO_TILE = 1024
#: Largest tile "auto" picks on a CPU (see the module docstring).
MAX_CPU_AUTO_TILE = 384
#: Largest tile "auto" picks on a CPU running OpenVINO (see the module docstring).
MAX_OPENVINO_AUTO_TILE = 544
#: Bytes of live activations per pixel and feature channel during a no-grad forward,
#: measured on CPU for fp32 (benchmarks/bench_restore.py prints the actual peak).
BYTES_PER_PIXEL_FEATURE = 4 * 14
#: Most tiles per batch on an accelerator.
MAX_BATCH = 16


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def tile_overlap_for(tile: int, requested: int) -> int:
    """The overlap used with ``tile``: the requested one, or a quarter of a smaller tile."""
    return requested if requested < tile else tile // 4


def available_host_bytes() -> int:
    """Free host memory in bytes (4 GiB where it cannot be known)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def memory_budget(device: torch.device) -> int:
    """Bytes one tile batch's activations may take: 60% of a GPU's free memory, or half
    the free host memory (at most 4 GiB)."""
    memory = device_memory_bytes(device)
    if memory is not None:
        free, _total = memory
        return int(free * 0.6)
    return int(min(available_host_bytes() * 0.5, 4 * 2**30))


def bytes_per_pixel(config: MPRNetConfig, precision: str, device: torch.device) -> int:
    """Activation bytes per tile pixel for a network of ``config``."""
    width = max(config.n_feat + config.scale_orsnetfeats,
                config.n_feat + 2 * config.scale_unetfeats)
    scale = 0.5 if precision != "fp32" and device.type != "cpu" else 1.0
    return int(BYTES_PER_PIXEL_FEATURE * width * scale)


def plan_tiles(
    height: int,
    width: int,
    n_planes: int,
    *,
    tile_size: int | str,
    tile_overlap: int,
    batch_size: int | None,
    budget_bytes: int,
    pixel_bytes: int,
    device: torch.device,
    cap: int | None = None,
) -> tuple[int, int]:
    """Tile edge and batch size for ``n_planes`` planes of ``height`` x ``width``.

    ``tile_size="auto"`` takes the largest tile the budget allows (at most ``cap``; default
    per device), then the smallest tile giving the same tile count; ``batch_size=None``
    fills the budget on an accelerator and is 1 on a CPU (there a bigger batch only costs
    memory).
    """
    pixels_budget = max(budget_bytes // pixel_bytes, 16 * 16)
    if tile_size == "auto":
        if cap is None:
            cap = MAX_CPU_AUTO_TILE if device.type == "cpu" else MAX_AUTO_TILE
        edge = math.isqrt(pixels_budget) // 8 * 8
        largest = max(MIN_TILE, min(cap, edge))
        overlap = tile_overlap_for(largest, tile_overlap)
        tile = max(round_up(min(length, axis_tile(length, largest, overlap)), 8)
                   for length in (height, width))
        tile = max(tile, overlap + 8, 16)
    else:
        tile = int(tile_size)
    if batch_size is not None:
        return tile, batch_size
    if device.type == "cpu":
        return tile, 1
    tile_pixels = round_up(min(tile, height), 8) * round_up(min(tile, width), 8)
    grid = TileGrid.plan(height, width, tile, tile_overlap_for(tile, tile_overlap))
    batch = max(1, min(pixels_budget // tile_pixels, MAX_BATCH, n_planes * len(grid)))
    return tile, batch

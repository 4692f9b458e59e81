"""Lazy, chunked restoration of dask arrays, seam-free and exact.

How a plane bigger than one chunk is cut
----------------------------------------
The whole plane gets ONE global :class:`~napari_mprnet.engine.tiling.TileGrid` (tile size
resolved once, on the calling process), exactly the grid an in-memory run would use. Y and X
are cut into chunks whose edges are multiples of the tile stride (``tile - overlap``), so
chunk borders fall on tile starts; a last piece shorter than one tile is merged into the
chunk before it. Each chunk is read with a halo (``dask.array.overlap``, boundary "none":
nothing is invented outside the image) just wide enough to hold every global tile that
touches the chunk. The block function runs exactly those tiles and adds their blended
contributions, cropped to the chunk, in the grid's own order. Since a tile's output depends
only on its own input pixels and the blending weights of the global grid sum to one, every
output pixel receives the same values, added in the same order, as in a whole-plane run: the
result is bit-for-bit the in-memory result (with the same tiles, device and batch size).
The price is that a tile straddling a chunk border runs once per chunk it touches, about
``(1 + stride / chunk)`` per axis: ~6% per axis with the default 4096-pixel chunks.

RGB samples are never split; other leading axes (T, Z, C) keep their chunking. The intensity
map is fitted once, from a strided subsample, and shared by every chunk.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from ..engine.axes import PlaneLayout, from_planes, to_planes
from ..engine.normalize import DEFAULT_PERCENTILES, Normalization
from ..engine.tiling import axis_starts, axis_weights
from .models import ModelHandle, effective_device, handle_for

__all__ = ["AUTO_CHUNK", "ChunkPlan", "plan_axis", "restore_block", "restore_dask"]

#: Y/X chunk edge (pixels) aimed at by ``chunk_size="auto"``; smaller planes stay whole.
AUTO_CHUNK = 4096
#: The intensity normalisation is estimated from about this many pixels.
_NORMALIZATION_SAMPLE = 4_000_000


@dataclass(frozen=True)
class ChunkPlan:
    """How one axis (Y or X) of length ``length`` is chunked for tiles ``tile``/``overlap``.

    ``bounds`` are the chunk edges (first 0, last ``length``); ``depth`` the halo read
    before/after each chunk so that every tile touching a chunk lies inside its block.
    """

    length: int
    tile: int
    overlap: int
    bounds: tuple[int, ...]
    depth: tuple[int, int]

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in pairwise(self.bounds))

    @functools.cached_property
    def _grid(self) -> tuple[list[int], list[np.ndarray], int]:
        starts = axis_starts(self.length, self.tile, self.overlap)
        return starts, axis_weights(self.length, starts, self.tile, self.overlap), \
            min(self.tile, self.length)

    def tiles_touching(self, index: int) -> list[tuple[int, np.ndarray]]:
        """``(start, profile)`` of the global tiles that overlap chunk ``index``, in order."""
        a, b = self.bounds[index], self.bounds[index + 1]
        starts, weights, size = self._grid
        return [(s, w) for s, w in zip(starts, weights) if s < b and s + size > a]

    def block_start(self, index: int) -> int:
        """Where the block of chunk ``index`` (chunk plus halo, clipped) starts."""
        return max(0, self.bounds[index] - self.depth[0])

    def block_stop(self, index: int) -> int:
        return min(self.length, self.bounds[index + 1] + self.depth[1])


def plan_axis(length: int, tile: int, overlap: int, chunk_size: int | str | None) -> ChunkPlan:
    """Chunk one axis: edges on multiples of the tile stride, nothing shorter than a tile.

    ``chunk_size``: None keeps the axis whole; "auto" cuts axes longer than
    :data:`AUTO_CHUNK` (plus one tile) into chunks of about that size; an integer is rounded
    to the nearest multiple of the stride (at least one tile).
    """
    size = min(tile, length)
    stride = tile - overlap
    if chunk_size == "auto":
        chunk_size = None if length <= AUTO_CHUNK + tile else AUTO_CHUNK
    elif chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be 'auto', None or a positive integer, "
                         f"got {chunk_size!r}")
    if chunk_size is None or length <= size:
        bounds = [0, length]
    else:
        strides = max(round(int(chunk_size) / stride), math.ceil(tile / stride), 1)
        edge = strides * stride
        bounds = list(range(0, length, edge)) + [length]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < tile:
            del bounds[-2]  # a sliver: merge it into the chunk before
    starts = axis_starts(length, tile, overlap)
    before = after = 0
    for a, b in pairwise(bounds):
        touching = [s for s in starts if s < b and s + size > a]
        before = max(before, a - min(touching))
        after = max(after, max(touching) + size - b)
    return ChunkPlan(length, tile, overlap, tuple(bounds), (before, after))


@dataclass(frozen=True)
class BlockSpec:
    """Everything a block needs besides its pixels (small and picklable)."""

    axes: str
    y: ChunkPlan
    x: ChunkPlan
    handle: ModelHandle
    norm: Normalization
    stages: bool
    out_dtype: np.dtype
    device: Any = "auto"
    precision: str | None = None
    batch_size: int | None = None
    backend: str = "eager"
    backend_options: dict | None = None
    limits: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)

    def __dask_tokenize__(self):
        return (self.axes, self.y, self.x, self.handle.key, self.norm, self.stages,
                str(self.out_dtype), str(self.device), self.precision, self.batch_size,
                self.backend, repr(sorted((self.backend_options or {}).items())), self.limits)


def _cast(data: np.ndarray, dtype: np.dtype, limits: tuple[float, float] | None) -> np.ndarray:
    from ..api import _cast_output

    return np.ascontiguousarray(_cast_output(data, dtype, limits))


def _forward(runner, tiles: list[np.ndarray], stages: bool, batch: int) -> list[np.ndarray]:
    from ..engine.runner import is_out_of_memory

    while True:
        try:
            outs = [runner.forward_tiles(np.stack(tiles[i:i + batch]), stages)
                    for i in range(0, len(tiles), batch)]
            return [np.concatenate(per_stage) for per_stage in zip(*outs)]
        except Exception as error:  # only out-of-memory is handled
            if not is_out_of_memory(error):
                raise
            runner._release_cached_memory()
            if batch == 1:
                raise MemoryError(
                    f"out of memory with one {runner.tile_size} px tile on {runner.device}; "
                    "pass a smaller tile_size (chunked runs cannot shrink tiles on the fly)"
                ) from None
            batch = max(1, batch // 2)


def restore_block(block: np.ndarray, spec: BlockSpec, block_info: dict | None = None
                  ) -> np.ndarray:
    """Restore the chunk whose block (chunk plus halo) is ``block``.

    Returns the chunk's outputs stacked on a new first axis (``[final]`` or
    ``[final, stage2, stage1]``), cast to ``spec.out_dtype``.
    """
    from ..engine.runner import TiledRunner

    location = block_info[0]["chunk-location"]
    ya, xa = spec.axes.index("Y"), spec.axes.index("X")
    iy, ix = location[ya], location[xa]
    y0, x0 = spec.y.block_start(iy), spec.x.block_start(ix)
    expected = (spec.y.block_stop(iy) - y0, spec.x.block_stop(ix) - x0)
    if (block.shape[ya], block.shape[xa]) != expected:
        raise RuntimeError(f"block {location} has Y/X size {block.shape[ya], block.shape[xa]}, "
                           f"expected {expected}")
    cy0, cy1 = spec.y.bounds[iy], spec.y.bounds[iy + 1]
    cx0, cx1 = spec.x.bounds[ix], spec.x.bounds[ix + 1]

    model = spec.handle.get()
    runner = TiledRunner(model, device=effective_device(spec.device), precision=spec.precision,
                         tile_size=spec.y.tile, tile_overlap=spec.y.overlap,
                         batch_size=spec.batch_size, backend=spec.backend,
                         backend_options=spec.backend_options)
    planes, layout = to_planes(np.asarray(block), spec.axes)
    net_c = model.config.in_c
    split_rgb = layout.channels == 3 and net_c == 1
    if split_rgb:
        planes = np.moveaxis(planes, -1, 1).reshape(-1, layout.height, layout.width, 1)
    normalised = spec.norm.apply(planes)
    n_planes = normalised.shape[0]
    _, batch = runner.plan(spec.y.length, spec.x.length, n_planes)

    ty = [(s, w) for s, w in spec.y.tiles_touching(iy)]
    tx = [(s, w) for s, w in spec.x.tiles_touching(ix)]
    th, tw = min(spec.y.tile, spec.y.length), min(spec.x.tile, spec.x.length)
    core_shape = (n_planes, cy1 - cy0, cx1 - cx0, normalised.shape[-1])
    outputs = [np.zeros(core_shape, np.float32) for _ in range(3 if spec.stages else 1)]
    for p in range(n_planes):
        for sy, wy in ty:
            # one row of tiles per forward call keeps the batch small and the order global
            tiles = [normalised[p, sy - y0:sy - y0 + th, sx - x0:sx - x0 + tw] for sx, _ in tx]
            results = _forward(runner, tiles, spec.stages, batch)
            # the part of the tile inside the chunk, in tile and in chunk coordinates
            a, b = max(sy, cy0), min(sy + th, cy1)
            for k, (sx, wx) in enumerate(tx):
                c, d = max(sx, cx0), min(sx + tw, cx1)
                weight = np.outer(wy, wx).astype(np.float32, copy=False)[..., None]
                for out, result in zip(outputs, results):
                    contribution = weight * result[k]
                    out[p, a - cy0:b - cy0, c - cx0:d - cx0] += \
                        contribution[a - sy:b - sy, c - sx:d - sx]

    core_index = tuple(
        slice(cy0 - y0, cy1 - y0) if i == ya else slice(cx0 - x0, cx1 - x0) if i == xa
        else slice(None) for i in range(block.ndim)
    )
    core = np.asarray(block)[core_index]
    core_layout = PlaneLayout.from_axes(spec.axes, core.shape)
    results = []
    for out in outputs:
        if split_rgb:
            out = np.moveaxis(out.reshape(-1, 3, cy1 - cy0, cx1 - cx0), 1, -1)
        restored = from_planes(spec.norm.invert(out), core_layout, alpha_source=core)
        results.append(_cast(restored, spec.out_dtype, spec.limits))
    return np.stack(results)


def is_dask_array(obj: Any) -> bool:
    """Whether ``obj`` is a dask array (without importing dask)."""
    return type(obj).__module__.startswith("dask.array")


def _strided_sample(data: Any, axes: str) -> np.ndarray:
    """A small, evenly strided subsample of ``data`` (computed eagerly)."""
    step = max(1, int(np.ceil(np.sqrt(data.size / _NORMALIZATION_SAMPLE))))
    index = tuple(slice(None, None, step) if a in "YX" else slice(None) for a in axes)
    sample = data[index]
    while sample.size > 4 * _NORMALIZATION_SAMPLE:  # many planes: thin the leading axes too
        lead = next(i for i, a in enumerate(axes) if a not in "YXS" and sample.shape[i] > 1)
        sample = sample[tuple(slice(None, None, 2) if i == lead else slice(None)
                              for i in range(sample.ndim))]
    return np.asarray(sample.compute())


def _check_dtype(data: Any) -> None:
    if data.dtype == bool or not (
        np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)
    ):
        raise TypeError(f"image data must be integer or floating point, got dtype {data.dtype}")
    if data.ndim < 2:
        raise ValueError(f"an image needs at least 2 dimensions (Y, X), got shape {data.shape}")
    if data.size == 0:
        raise ValueError(f"the image is empty (shape {data.shape})")


def restore_dask(
    data: Any,
    *,
    axes: str | None = None,
    rgb: bool | None = None,
    task: str = "denoise",
    model: Any = None,
    stages: bool = False,
    normalize: Any = "auto",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    output_dtype: Any = None,
    clip: bool = True,
    tile_size: int | str = "auto",
    tile_overlap: int = 32,
    batch_size: int | None = None,
    device: Any = "auto",
    precision: str | None = None,
    chunk_size: int | str | None = "auto",
    client: Any = None,
    backend: str = "eager",
    backend_options: dict | None = None,
) -> Any:
    """Restore a dask array lazily; same options and result layout as
    :func:`napari_mprnet.restore`, plus:

    Parameters
    ----------
    chunk_size : int, "auto" or None
        Y/X chunk edge in pixels, rounded to a multiple of the tile stride. "auto": planes
        up to about 4096 px stay whole, larger ones are cut into ~4096 px chunks. None:
        always whole planes. The result equals a whole-plane run exactly either way.
    client : distributed.Client, optional
        Prepare this client's workers (model sent once per worker). By default the current
        distributed client, if one exists, is prepared.

    Returns
    -------
    dask.array.Array or list of them
        Nothing is computed until the caller computes (or stores) the result.
    """
    import dask.array as da

    from ..api import _normalization_for, _resolve_axes, output_limits, prepare_model
    from ..engine.axes import PlaneLayout
    from ..engine.runner import TiledRunner

    _check_dtype(data)
    resolved = _resolve_axes(tuple(data.shape), axes, rgb)
    layout = PlaneLayout.from_axes(resolved, tuple(data.shape))
    net = prepare_model(model, task)
    net_c = net.config.in_c
    if layout.channels not in (net_c, 1) or net_c not in (1, 3):
        raise ValueError(f"this model has {net_c} input channels and cannot restore "
                         f"{layout.channels}-channel planes")
    if isinstance(normalize, Normalization):
        norm = normalize
    else:
        norm = _normalization_for(_strided_sample(data, resolved), normalize, percentiles, net)

    # one global tile grid for the whole plane, exactly as an in-memory run would choose it
    height, width = layout.height, layout.width
    planner = TiledRunner(net, device=device, precision=precision, tile_size=tile_size,
                          tile_overlap=tile_overlap, batch_size=batch_size)
    tile, _ = planner.plan(height, width, layout.n_planes)
    overlap = planner._overlap(tile)
    ya, xa = resolved.index("Y"), resolved.index("X")
    yplan = plan_axis(height, tile, overlap, chunk_size)
    xplan = plan_axis(width, tile, overlap, chunk_size)

    if client is None and "distributed" in sys.modules:  # no import: no client
        from .distributed import current_client

        client = current_client()
    handle = handle_for(net, task if model is None else model, portable=client is not None)
    if client is not None:
        from .distributed import prepare_client

        prepare_client(client, handle)

    chunks = {ya: yplan.chunks, xa: xplan.chunks}
    if "S" in resolved:
        chunks[resolved.index("S")] = -1
    data = data.rechunk(chunks)
    depth = {ya: yplan.depth, xa: xplan.depth}
    depth = {k: v for k, v in depth.items() if v != (0, 0) and len(chunks[k]) > 1}
    blocks = (da.overlap.overlap(data, depth=depth, boundary="none", allow_rechunk=False)
              if depth else data)
    n_out = 3 if stages else 1
    out_dtype = np.dtype(np.float32 if output_dtype is None else output_dtype)
    spec = BlockSpec(resolved, yplan, xplan, handle, norm, stages, out_dtype,
                     device=device, precision=precision, batch_size=batch_size,
                     backend=backend, backend_options=backend_options,
                     limits=output_limits(data.dtype, clip))
    stacked = blocks.map_blocks(
        restore_block, spec=spec, dtype=out_dtype, new_axis=0,
        chunks=((n_out,), *data.chunks), token="mprnet-restore",
        meta=np.empty((0,) * (data.ndim + 1), out_dtype),
    )
    results = [stacked[i] for i in range(n_out)]
    return results if stages else results[0]

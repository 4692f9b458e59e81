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
With ``strength="auto"`` the low band of each tile's residual (see
:mod:`napari_mprnet.engine.bands`) is added in the same way, and the planes' band weights
come from their probe windows (:func:`probe_block`; a given ``noise`` is mapped by the shared
intensity map), computed before their chunks. The price is that a tile straddling a chunk
border runs once per chunk it touches, about ``(1 + stride / chunk)`` per axis: ~6% per axis
with the default 4096-pixel chunks.

RGB samples are never split; other leading axes (T, Z, C) keep their chunking. The intensity
map is fitted once, from a strided subsample, and shared by every chunk. Every step other than
the chunk-wise tile loop is the engine's (:class:`~napari_mprnet.engine.pipeline.Restorer`),
so blocks are validated, normalised, checked and cast exactly as in-memory images are; a
block holding NaN or infinite values fails at compute time with an error naming the block.

The graph computes on any scheduler, including a dask.distributed cluster started after it
was built: see :mod:`.models` for how the network reaches the workers.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from ..engine.axes import PlaneLayout
from ..engine.impulses import neighbour_median
from ..engine.normalize import DEFAULT_PERCENTILES, Normalization
from ..engine.pipeline import Restorer, check_image_type, refuse_masked, refuse_non_finite
from ..engine.strength import PLANE_COLUMNS, probe_window
from ..engine.tiling import axis_starts, axis_tile, axis_weights
from .blocks import checked_block, forward_row
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

    @property
    def edge(self) -> int:
        """The tiles' edge along this axis (as the in-memory grid's: :func:`axis_tile`)."""
        return min(self.length, axis_tile(self.length, self.tile, self.overlap))

    @functools.cached_property
    def _grid(self) -> tuple[list[int], list[np.ndarray], int]:
        size = axis_tile(self.length, self.tile, self.overlap)
        starts = axis_starts(self.length, size, self.overlap)
        return starts, axis_weights(self.length, starts, size, self.overlap), self.edge

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
    layout = axis_tile(length, tile, overlap)  # the grid's tile size along this axis
    size, stride = min(layout, length), layout - overlap
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
        strides = max(round(int(chunk_size) / stride), math.ceil(size / stride), 1)
        edge = strides * stride
        bounds = list(range(0, length, edge)) + [length]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < size:
            del bounds[-2]  # a sliver: merge it into the chunk before
    starts = axis_starts(length, layout, overlap)
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
    task: str
    norm: Normalization
    stages: bool
    out_dtype: np.dtype
    device: Any = "auto"
    precision: str | None = None
    batch_size: int | None = None
    backend: str | None = None
    backend_options: dict | None = None
    clip: bool = True
    strength: float | str = "auto"
    split_patches: bool = False
    noise: tuple[float, float] | None = None  # the checked NoiseLevel, image units
    extra: dict = field(default_factory=dict)

    def __dask_tokenize__(self):
        return (self.axes, self.y, self.x, self.handle.key, self.task, self.norm, self.stages,
                str(self.out_dtype), str(self.device), self.precision, self.batch_size,
                self.backend, repr(sorted((self.backend_options or {}).items())), self.clip,
                self.strength, self.split_patches, self.noise)


def _block_restorer(spec: BlockSpec, weights: bytes | None) -> Restorer:
    return Restorer(spec.handle.get(weights), spec.task, tile_size=spec.y.tile,
                    tile_overlap=spec.y.overlap, batch_size=spec.batch_size,
                    device=effective_device(spec.device), precision=spec.precision,
                    stages=spec.stages, normalize=spec.norm, output_dtype=spec.out_dtype,
                    clip=spec.clip, backend=spec.backend, backend_options=spec.backend_options,
                    strength=spec.strength, split_patches=spec.split_patches, noise=spec.noise)


def probe_block(crop: np.ndarray, spec: BlockSpec, weights: bytes | None = None) -> np.ndarray:
    """The band weights and impulse models of the planes whose probe windows are ``crop``
    (every axis but Y/X/S one block), shaped like ``crop`` with Y and S of size 1 and X of
    size ``PLANE_COLUMNS`` (``w_hi, w_lo`` and the impulse model)."""
    ys, xs = probe_window(spec.y.length, spec.x.length)
    where = (f"the strength probe window of the dask array (Y {ys.start}:{ys.stop}, "
             f"X {xs.start}:{xs.stop})")
    crop = checked_block(crop, where)
    restorer = _block_restorer(spec, weights)
    layout = PlaneLayout.from_axes(spec.axes, crop.shape)
    plane_w = restorer.plane_weights(restorer.planes_in(crop, layout, spec.norm), layout,
                                     spec.norm)
    kept = [i for i, a in enumerate(spec.axes) if a in "YXS"]
    return np.concatenate([np.expand_dims(plane_w[:, k].reshape(layout.lead_shape), kept)
                           for k in range(PLANE_COLUMNS)], axis=spec.axes.index("X"))


def restore_block(block: np.ndarray, *plane_weights: np.ndarray, spec: BlockSpec,
                  block_info: dict | None = None, weights: bytes | None = None) -> np.ndarray:
    """Restore the chunk whose block (chunk plus halo) is ``block``.

    ``plane_weights`` (with ``strength="auto"``): the block of :func:`probe_block`'s result
    for these planes. ``weights`` are the serialised weights of an in-memory model (the
    graph's one shared key), else None. Returns the chunk's outputs stacked on a new first axis (``[final]`` or
    ``[final, stage2, stage1]``), cast to ``spec.out_dtype``.
    """
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
    where = (f"block {tuple(location)} of the dask array (Y {y0}:{y0 + expected[0]}, "
             f"X {x0}:{x0 + expected[1]})")
    block = checked_block(block, where)

    restorer = _block_restorer(spec, weights)
    runner = restorer.runner
    layout = PlaneLayout.from_axes(spec.axes, block.shape)
    normalised = restorer.planes_in(block, layout, spec.norm)
    n_planes = normalised.shape[0]
    _, batch = runner.plan(spec.y.length, spec.x.length, n_planes)

    ty = [(s, w) for s, w in spec.y.tiles_touching(iy)]
    tx = [(s, w) for s, w in spec.x.tiles_touching(ix)]
    th, tw = spec.y.edge, spec.x.edge
    core_shape = (n_planes, cy1 - cy0, cx1 - cx0, normalised.shape[-1])
    low_band = restorer.needs_probe()  # the low band of the residual, accumulated too
    outputs = [np.zeros(core_shape, np.float32) for _ in range(1 + 2 * spec.stages + low_band)]
    for p in range(n_planes):
        for sy, wy in ty:
            # one row of tiles per forward call keeps the batch small and the order global
            tiles = [normalised[p, sy - y0:sy - y0 + th, sx - x0:sx - x0 + tw] for sx, _ in tx]
            results = forward_row(runner, tiles, spec.stages, low_band, batch)
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
    core = block[core_index]
    core_layout = PlaneLayout.from_axes(spec.axes, core.shape)
    plane_w = (np.transpose(plane_weights[0], core_layout.order).reshape(-1, PLANE_COLUMNS)
               if plane_weights else None)
    if low_band and plane_w is None:
        raise RuntimeError("strength='auto' needs the probe weights of the block's planes")
    inside = (slice(None), slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    # impulses are judged against neighbours from the halo too, as in the whole image
    neighbours = neighbour_median(normalised)[inside] if low_band else None
    outputs = restorer.apply_strength(normalised[inside], outputs, core_layout, plane_w,
                                      neighbours=neighbours)
    return np.stack(restorer.planes_out(outputs, core_layout, spec.norm, core))


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


def restore_dask(
    data: Any,
    *,
    axes: str | None = None,
    rgb: bool | None = None,
    task: str | None = None,
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
    backend: str | None = None,
    backend_options: dict | None = None,
    strength: float | str = "auto",
    split_patches: bool = False,
    noise: Any = None,
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
        Pin this client's workers to their devices. By default the current distributed client,
        if one exists, is prepared. Not needed for the result to compute there: the graph
        carries the model (see :mod:`.models`).

    Returns
    -------
    dask.array.Array or list of them
        Nothing is computed until the caller computes (or stores) the result.
    """
    import dask
    import dask.array as da

    check_image_type(data.dtype, tuple(data.shape))
    refuse_masked(getattr(data, "_meta", None), "the dask array")
    restorer = Restorer(model, task, tile_size=tile_size, tile_overlap=tile_overlap,
                        batch_size=batch_size, device=device, precision=precision,
                        stages=stages, normalize=normalize, percentiles=percentiles,
                        output_dtype=output_dtype, clip=clip, backend=backend,
                        backend_options=backend_options, strength=strength,
                        split_patches=split_patches, noise=noise)
    task = restorer.task  # None: the model's own task
    layout = restorer.layout(tuple(data.shape), axes, rgb)
    resolved = layout.axes
    if isinstance(normalize, Normalization):
        norm = normalize
    else:
        sample = _strided_sample(data, resolved)
        refuse_masked(sample, "the dask array")
        refuse_non_finite(sample, "the dask array")
        norm = restorer.normalization(sample)
    restorer.network_noise(norm)  # a given noise level must fit the map: fail before the graph

    # one global tile grid for the whole plane, exactly as an in-memory run would choose it
    height, width = layout.height, layout.width
    planner = restorer.runner
    tile, _ = planner.plan(height, width, layout.n_planes)
    overlap = planner._overlap(tile)
    ya, xa = resolved.index("Y"), resolved.index("X")
    yplan = plan_axis(height, tile, overlap, chunk_size)
    xplan = plan_axis(width, tile, overlap, chunk_size)

    if client is None and "distributed" in sys.modules:  # no import: no client
        from .distributed import current_client

        client = current_client()
    handle = handle_for(restorer.model, task if model is None else model)
    if client is not None:  # optional: pin worker devices (the graph carries the model)
        from .distributed import prepare_client

        prepare_client(client)
    # an in-memory model's weights: one key of the graph, which every task depends on
    shared = {} if handle.payload is None else {
        "weights": dask.delayed(handle.payload, name=f"mprnet-weights-{handle.key}")}

    chunks = {ya: yplan.chunks, xa: xplan.chunks}
    if "S" in resolved:
        chunks[resolved.index("S")] = -1
    data = data.rechunk(chunks)
    depth = {ya: yplan.depth, xa: xplan.depth}
    depth = {k: v for k, v in depth.items() if v != (0, 0) and len(chunks[k]) > 1}
    blocks = (da.overlap.overlap(data, depth=depth, boundary="none", allow_rechunk=False)
              if depth else data)
    n_out = 3 if stages else 1
    out_dtype = restorer.output_dtype or np.dtype(np.float32)
    spec = BlockSpec(resolved, yplan, xplan, handle, task, norm, restorer.stages, out_dtype,
                     device=device, precision=precision, batch_size=batch_size,
                     backend=backend, backend_options=backend_options,
                     clip=restorer.clip, strength=restorer.strength,
                     split_patches=restorer.split_patches, noise=restorer.noise)
    probes = []
    if restorer.needs_probe():  # one probe window per plane, shared by the plane's chunks
        ys, xs = probe_window(height, width)
        crop = data[tuple(ys if a == "Y" else xs if a == "X" else slice(None)
                          for a in resolved)]
        crop = crop.rechunk({i: -1 for i, a in enumerate(resolved) if a in "YXS"})
        probes.append(crop.map_blocks(
            probe_block, spec=spec, **shared, dtype=np.float64, token="mprnet-strength",
            chunks=tuple((PLANE_COLUMNS,) if a == "X" else (1,) if a in "YS" else c
                         for a, c in zip(resolved, crop.chunks)),
            meta=np.empty((0,) * data.ndim, np.float64)))
    stacked = da.map_blocks(
        restore_block, blocks, *probes, spec=spec, **shared, dtype=out_dtype, new_axis=0,
        chunks=((n_out,), *data.chunks), token="mprnet-restore",
        meta=np.empty((0,) * (data.ndim + 1), out_dtype),
    )
    results = [stacked[i] for i in range(n_out)]
    return results if stages else results[0]

"""Running a model over stacks of planes, tile batch by tile batch.

The runner takes normalised planes ``(P, H, W, c)``, cuts every plane into the tiles of a
:class:`~napari_mprnet.engine.tiling.TileGrid` (sizes from :mod:`.planning`), runs the tiles
in batches (gathered by :mod:`.staging`) and adds each result, multiplied by its blending
weight, into float32 output buffers the size of the input (:mod:`.accumulation`). Peak
memory is therefore the tile batch's activations plus the output buffers, whatever the
image size.

Each padded tile batch goes through a backend (:mod:`.backends`: eager, OpenVINO (the CPU
default where it is installed), torch.compile or Torch-TensorRT); compiled backends get batches of one fixed shape (a short last batch is
padded with dummy tiles). On CUDA the loop is pipelined: the next batch is gathered on a
background thread into pinned staging buffers while the current one runs, copies are
non-blocking, and tiles are blended on the GPU into one buffer per plane when that fits
(otherwise on the host, one batch behind). The pipelined loop is device-agnostic and can be
forced on CPU (``pipeline=True``, ``accumulate="device"``); the default CPU loop is the
plain one, one tile at a time, through OpenVINO where it is installed (else eager,
channels-last), in bf16 where the CPU has native bf16 (:mod:`.precision`), with the
physical cores other work leaves free, re-checked between tile batches
(:func:`.devices.cpu_threads`, :func:`.devices.follow_cpu_load`). Both
loops, and the out-of-memory back-off they share, live in :mod:`.loops`.

:meth:`TiledRunner.iter_run` is a generator that yields a :class:`Progress` after every tile
batch, so a caller can show progress and stop the work between batches; its return value
(``StopIteration.value``) holds the outputs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator

import numpy as np
import torch

from ..model.arch import MPRNet
from .backends import Backend, is_out_of_memory, make_backend, resolve_backend
from .devices import follow_cpu_load, resolve_device, using_cpu_threads
from .loops import ShrinkTiles, release_cached_memory, run_grid, run_grid_pipelined
from .models import ready_model
from .planning import (
    MAX_OPENVINO_AUTO_TILE,
    MIN_TILE,
    bytes_per_pixel,
    memory_budget,
    plan_tiles,
    tile_overlap_for,
)
from .precision import PRECISIONS, choose_precision, default_precision, normalize_precision
from .progress import Progress, drive
from .staging import pad_to_multiple
from .tiling import TileGrid, validate_tiling

__all__ = [
    "ACCUMULATE",
    "PRECISIONS",
    "Progress",
    "TiledRunner",
    "default_precision",
    "drive",
    "is_out_of_memory",
    "normalize_precision",
    "pad_to_multiple",
]

log = logging.getLogger(__name__)

#: Where blended tiles are summed: "auto" (on the GPU when the output fits), "host", "device".
ACCUMULATE = ("auto", "host", "device")


class TiledRunner:
    """Run an MPRNet tile by tile with blended overlaps.

    Parameters
    ----------
    model : MPRNet
        The network (moved to ``device``; put in eval mode).
    device : str or torch.device
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    precision : {"auto", "fp32", "fp16", "bf16"}, optional
        Autocast precision. "auto"/None: fp16 on CUDA; on a CPU bf16 where it computes bf16
        natively and the model agrees with its fp32 self in bf16
        (:func:`~napari_mprnet.engine.precision.choose_precision`), else fp32.
    tile_size : int or "auto"
        Largest tile edge in pixels (>= 16; the grid uses the smallest edges that need no
        more tiles, :class:`~napari_mprnet.engine.tiling.TileGrid`); "auto" chooses from the
        device and its free memory (on a CPU at most 384 px, 544 px with OpenVINO, so that
        progress and cancelling come every second or so).
    tile_overlap : int
        Overlap between neighbouring tiles in pixels.
    batch_size : int, optional
        Tiles per forward pass; default chosen from free memory (1 on a CPU).
    channels_last : bool, optional
        Use the channels-last memory format (default: on GPUs and CPUs).
    backend : {None, "eager", "compile", "tensorrt", "openvino", "auto"}
        How tile batches run (see :mod:`napari_mprnet.engine.backends`); compiled backends
        get batches of one fixed shape. None: openvino on a CPU where OpenVINO is installed,
        eager elsewhere; "auto": the fastest available on the device.
    backend_options : dict, optional
        Backend settings, e.g. ``{"cuda_graphs": True}`` or ``{"compile_backend": "eager"}``.
    accumulate : {"auto", "host", "device"}
        Where blended tiles are summed: "auto" sums on the GPU when one plane's outputs fit
        there (copied back plane by plane), else in host memory.
    pipeline : bool, optional
        Overlap data movement with compute: tile batches gathered on a background thread
        into (pinned, on CUDA) staging buffers, non-blocking copies. Default: on CUDA, or
        when ``accumulate="device"``.
    threads : int, optional
        torch CPU threads during a CPU run (restored afterwards); default
        :func:`~napari_mprnet.engine.devices.cpu_threads` (the physical cores other work
        leaves free unless the caller chose a count, re-checked between tile batches).
    split_patches : bool
        False (default): every stage sees the whole tile, so tiles agree with the whole
        image; True: the paper's quarter/half patch split inside every tile.
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
        backend: str | None = None,
        backend_options: dict | None = None,
        accumulate: str = "auto",
        pipeline: bool | None = None,
        threads: int | None = None,
        split_patches: bool = False,
    ) -> None:
        if not isinstance(model, MPRNet):
            raise TypeError(f"model must be an MPRNet, got {type(model).__name__}")
        self.device = resolve_device(device)
        normalize_precision(precision, self.device)  # a wrong name fails before any work
        if tile_size != "auto":
            validate_tiling(tile_size, tile_overlap)
        elif not isinstance(tile_overlap, int) or isinstance(tile_overlap, bool):
            raise TypeError(f"tile_overlap must be an integer, got {tile_overlap!r}")
        elif tile_overlap < 0:
            raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")
        for name, value in (("batch_size", batch_size), ("threads", threads)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if accumulate not in ACCUMULATE:
            raise ValueError(f"accumulate must be one of {', '.join(ACCUMULATE)}, "
                             f"got {accumulate!r}")
        backend_name = resolve_backend(backend, self.device)
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.batch_size = batch_size
        self.accumulate = accumulate
        self.pipeline = pipeline
        self.threads = threads
        if channels_last is None:
            channels_last = self.device.type in ("cuda", "cpu")
        self.channels_last = channels_last
        # converted once and then only read: other threads may be running the same network
        self.model = ready_model(model, self.device, self.channels_last)
        with self._threads():  # the bf16 check runs the model on the CPU
            self.precision = choose_precision(precision, self.device, self.model)
        self._window_backend: Backend | None = None
        self.backend: Backend = make_backend(backend_name, self.model, self.device,
                                             self.precision, backend_options,
                                             split_patches=bool(split_patches))

    def _threads(self) -> contextlib.AbstractContextManager:
        """The run's CPU thread count for the block (nothing to do on other devices)."""
        if self.device.type != "cpu":
            return contextlib.nullcontext()
        return using_cpu_threads(self.threads)

    # ------------------------------------------------------------------ sizing

    def _budget_bytes(self) -> int:
        return memory_budget(self.device)

    def _bytes_per_pixel(self) -> int:
        return bytes_per_pixel(self.model.config, self.precision, self.device)

    def plan(self, height: int, width: int, n_planes: int = 1) -> tuple[int, int]:
        """Tile size and batch size to use for planes of ``height`` x ``width``."""
        cap = MAX_OPENVINO_AUTO_TILE if self.backend.current.name == "openvino" else None
        return plan_tiles(height, width, n_planes, tile_size=self.tile_size,
                          tile_overlap=self.tile_overlap, batch_size=self.batch_size,
                          budget_bytes=self._budget_bytes(),
                          pixel_bytes=self._bytes_per_pixel(), device=self.device, cap=cap)

    def _overlap(self, tile: int) -> int:
        return tile_overlap_for(tile, self.tile_overlap)

    # ------------------------------------------------------------------ running

    def forward_tiles(self, tiles: np.ndarray, stages: bool) -> list[np.ndarray]:
        """Run a batch ``(B, h, w, c)`` of normalised tiles; return float32 ``(B, h, w, c)``
        outputs: the final image, then (if ``stages``) stage 2 and stage 1."""
        return self._tiles_through(tiles, stages, None)

    def _tiles_through(self, tiles: np.ndarray, stages: bool,
                       backend: Backend | None) -> list[np.ndarray]:
        """:meth:`forward_tiles` through ``backend`` (None: :meth:`forward_batch`)."""
        if self.device.type == "cpu" and self.threads is None:
            follow_cpu_load()  # the automatic thread count follows the machine's load
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
        batch = batch.to(self.device, non_blocking=True)
        outputs = (self.forward_batch(batch, stages) if backend is None
                   else self._batch_through(batch, stages, backend))
        return [o.permute(0, 2, 3, 1).contiguous().cpu().numpy() for o in outputs]

    def forward_window(self, windows: np.ndarray) -> np.ndarray:
        """Final outputs of a batch ``(B, h, w, c)`` of normalised windows run whole (not
        tiled), on the run's threads; a backend compiled for the tile shape is bypassed by
        an eager one with the same settings (the runner's own backend is left as it is, so
        that other threads running tiles meanwhile keep using it)."""
        with self._threads():
            if not self.backend.fixed_shape:
                return self.forward_tiles(windows, False)[0]
            eager = self._window_backend
            if eager is None:
                from .backends.eager import EagerBackend

                eager = EagerBackend(self.model, self.device, self.precision,
                                     split_patches=self.backend.split_patches)
                self._window_backend = eager
            return self._tiles_through(windows, False, eager)[0]

    def forward_batch(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        """Run a ``(B, c, h, w)`` batch already on the device through the backend; return
        float32 ``(B, c, h, w)`` device tensors (final, then stage 2 and 1 if ``stages``)."""
        return self._batch_through(batch, stages, self.backend)

    def _batch_through(self, batch: torch.Tensor, stages: bool,
                       backend: Backend) -> list[torch.Tensor]:
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        grey_through_rgb = batch.shape[1] == 1 and self.model.config.in_c == 3
        if grey_through_rgb:
            batch = batch.expand(-1, 3, -1, -1)
        padded, h, w = pad_to_multiple(batch, MPRNet.size_multiple)
        outputs = backend(padded, stages)
        if grey_through_rgb:
            outputs = [o.float().mean(dim=1, keepdim=True) for o in outputs]
        return [o[..., :h, :w].float() for o in outputs]

    def iter_run(
        self, planes: np.ndarray, stages: bool = False, low_band: bool = False
    ) -> Generator[Progress, None, list[np.ndarray]]:
        """Restore normalised planes ``(P, H, W, c)``.

        ``c`` is the model's channel count, or 1 for a 3-channel model: grey planes are
        replicated to three channels and the outputs averaged back to one.

        Yields a :class:`Progress` after every tile batch; returns the outputs (float32,
        same shape): ``[final]`` or ``[final, stage2, stage1]``, then (if ``low_band``) the
        low band of the residual ``final - planes``, filtered tile by tile
        (:func:`~.bands.residual_low_band`) and blended like the outputs.
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
        with self._threads():
            yield from self._prepare_backend()
            while True:
                try:
                    return (yield from self._run_grid(planes, stages, tile, batch_size,
                                                      low_band))
                except ShrinkTiles:
                    new_tile = max(MIN_TILE, (tile // 2) // 8 * 8)
                    if new_tile >= tile or new_tile <= self._overlap(new_tile):
                        raise MemoryError(
                            f"out of memory even with {tile}x{tile} tiles one at a time on "
                            f"{self.device}; use a smaller model, device='cpu', or free memory"
                        ) from None
                    log.warning("out of memory with %d px tiles: restarting with %d px tiles",
                                tile, new_tile)
                    tile, batch_size = new_tile, 1

    def _prepare_backend(self) -> Generator[Progress, None, None]:
        """Convert the network now if the backend must (OpenVINO's first use of a model),
        after a step whose ``note`` says so, so that a front end can show it."""
        pending = getattr(self.backend.current, "pending_work", None)
        if pending is None or pending() != "convert":
            return
        # (no ", " in the note: the command line shows what follows the first one)
        yield Progress(0, 0, note="Converting the network for OpenVINO (once per model; "
                       "kept on disk)…")
        self.backend.current.prepare()

    #: Pinned buffers, events and non-blocking copies in the pipelined loop (None: on CUDA).
    _async_copies: bool | None = None

    def _pipelined(self) -> bool:
        if self.pipeline is not None:
            return bool(self.pipeline)
        return self.device.type == "cuda" or self.accumulate == "device"

    def _run_grid(
        self, planes: np.ndarray, stages: bool, tile: int, batch_size: int, low_band: bool
    ) -> Generator[Progress, None, list[np.ndarray]]:
        """One attempt at the whole grid with ``tile`` px tiles (:mod:`.loops`)."""
        grid = TileGrid.plan(planes.shape[1], planes.shape[2], tile, self._overlap(tile))
        fixed = self.backend.fixed_shape
        if not self._pipelined():
            return (yield from run_grid(self.forward_tiles, planes, grid, stages, batch_size,
                                        low_band, device=self.device, fixed_shape=fixed))
        asynchronous = (self.device.type == "cuda" if self._async_copies is None
                        else self._async_copies)
        return (yield from run_grid_pipelined(
            self.forward_batch, planes, grid, stages, batch_size, low_band,
            device=self.device, fixed_shape=fixed, accumulate=self.accumulate,
            asynchronous=asynchronous))

    def _release_cached_memory(self) -> None:
        """Free the CUDA allocator's cache after out-of-memory (also used by the dask blocks)."""
        release_cached_memory(self.device)

    def run(self, planes: np.ndarray, stages: bool = False,
            progress: Callable | None = None, low_band: bool = False) -> list[np.ndarray]:
        """Run :meth:`iter_run` to completion, calling ``progress(done, total)`` if given."""
        return drive(self.iter_run(planes, stages, low_band), progress)


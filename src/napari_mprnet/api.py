"""``restore()``: the one call that restores numpy arrays, napari layers and dask arrays."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from .engine.axes import from_planes, infer_axes, parse_axes, to_planes
from .engine.normalize import DEFAULT_PERCENTILES, Normalization, choose_normalization
from .engine.runner import Progress, TiledRunner, drive
from .model.arch import MPRNet
from .model.presets import TASKS
from .weights import load_model

__all__ = ["TASK_SUFFIX", "iter_restore", "prepare_model", "restore"]

#: How each task is named in output layer and file names.
TASK_SUFFIX = {"denoise": "denoised", "deblur": "deblurred", "derain": "derained"}
ProgressCallback = Callable[[int, int], Any]

_model_cache: dict[tuple[str, str], MPRNet] = {}


def prepare_model(
    model: str | os.PathLike | MPRNet | None, task: str, device: torch.device | str = "cpu"
) -> MPRNet:
    """Resolve ``model`` (None: the bundled default for ``task``; a task name; a file; an
    MPRNet) to a loaded network. Loaded files are cached per path and device."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if isinstance(model, MPRNet):
        return model
    source = task if model is None else model
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"model must be a task name, a model file path or an MPRNet, "
            f"got {type(source).__name__}"
        )
    key = (os.fspath(source), str(device))
    if key not in _model_cache:
        _model_cache[key] = load_model(source, device=device)
    return _model_cache[key]


def _validate_array(data: Any) -> np.ndarray:
    if isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(
            "restore() takes image data, not a path; read the file first "
            "(e.g. tifffile.imread) or use the command line: napari-mprnet restore FILE"
        )
    try:
        array = np.asarray(data)
    except Exception as err:  # noqa: BLE001 - report what was given
        raise TypeError(f"cannot read {type(data).__name__} as an array: {err}") from None
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(
            f"image data must be integer or floating point, got dtype {array.dtype}; "
            "convert it first (e.g. data.astype(np.float32))"
        )
    if array.ndim < 2:
        raise ValueError(
            f"an image needs at least 2 dimensions (Y, X), got shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"the image is empty (shape {array.shape})")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError(
            "the image contains NaN or infinite values; replace them first "
            "(e.g. np.nan_to_num(data))"
        )
    return array


def _resolve_axes(shape: tuple[int, ...], axes: str | None, rgb: bool | None) -> str:
    return infer_axes(shape, rgb=rgb) if axes is None else parse_axes(axes, shape)


def _normalization_for(
    data: np.ndarray, normalize: Any, percentiles: tuple[float, float], model: MPRNet
) -> Normalization:
    stored = (model.metadata or {}).get("normalization") or {}
    if normalize == "auto" and stored.get("mode") == "percentile":
        # the model was trained on percentile-normalised data: normalise the same way
        stored_percentiles = tuple(stored.get("percentiles") or percentiles)
        return choose_normalization(data, "percentile", stored_percentiles)
    return choose_normalization(data, normalize, percentiles)


def output_limits(input_dtype: Any, clip: bool) -> tuple[float, float] | None:
    """The range results are clipped to: an integer input dtype's range (``clip``), else none."""
    dtype = np.dtype(input_dtype)
    if not clip or not np.issubdtype(dtype, np.integer) or dtype == bool:
        return None
    info = np.iinfo(dtype)
    return float(info.min), float(info.max)


def _cast_output(data: np.ndarray, output_dtype: Any,
                 limits: tuple[float, float] | None = None) -> np.ndarray:
    if limits is not None:
        data = np.clip(data, *limits)
    if output_dtype is None:
        return data.astype(np.float32, copy=False)
    dtype = np.dtype(output_dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return data.astype(dtype)
    raise TypeError(f"output_dtype must be an integer or float dtype, got {dtype}")


def iter_restore(
    image: Any,
    task: str = "denoise",
    model: str | os.PathLike | MPRNet | None = None,
    *,
    tile_size: int | str = "auto",
    tile_overlap: int = 32,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    precision: str | None = None,
    stages: bool = False,
    axes: str | None = None,
    rgb: bool | None = None,
    normalize: str | Normalization = "auto",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    output_dtype: Any = None,
    clip: bool = True,
    backend: str = "eager",
    backend_options: dict | None = None,
) -> Generator[Progress, None, list[np.ndarray]]:
    """Restore an array step by step: a generator of :class:`Progress` after every tile batch.

    Takes the same arguments as :func:`restore` (array-likes only). Its return value
    (``StopIteration.value``, or ``result = yield from iter_restore(...)``) is the list
    ``[final]``, or ``[final, stage2, stage1]`` with ``stages=True``. Closing the generator
    early cancels the run: nothing partial is returned and the input is never modified.
    """
    data = _validate_array(image)
    limits = output_limits(data.dtype, clip)
    resolved_axes = _resolve_axes(data.shape, axes, rgb)
    runner = TiledRunner(
        prepare_model(model, task),
        device=device,
        precision=precision,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        batch_size=batch_size,
        backend=backend,
        backend_options=backend_options,
    )
    net_channels = runner.model.config.in_c
    planes, layout = to_planes(data, resolved_axes)
    if layout.channels == 3 and net_channels == 1:
        # RGB through a one-channel network: each colour channel as its own plane
        planes = np.moveaxis(planes, -1, 1).reshape(-1, layout.height, layout.width, 1)
    elif layout.channels not in (net_channels, 1) or net_channels not in (1, 3):
        raise ValueError(
            f"this model has {net_channels} input channels and cannot restore "
            f"{layout.channels}-channel planes"
        )
    norm = _normalization_for(data, normalize, percentiles, runner.model)
    normalised = norm.apply(planes)
    outputs = yield from runner.iter_run(normalised, stages=stages)
    del normalised
    results = []
    for out in outputs:
        if layout.channels == 3 and net_channels == 1:
            out = np.moveaxis(out.reshape(-1, 3, layout.height, layout.width), 1, -1)
        restored = from_planes(norm.invert(out), layout, alpha_source=data)
        results.append(np.ascontiguousarray(_cast_output(restored, output_dtype, limits)))
    return results


def restore(
    image: Any,
    task: str = "denoise",
    model: str | os.PathLike | MPRNet | None = None,
    *,
    tile_size: int | str = "auto",
    tile_overlap: int = 32,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    precision: str | None = None,
    stages: bool = False,
    axes: str | None = None,
    rgb: bool | None = None,
    normalize: str | Normalization = "auto",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    output_dtype: Any = None,
    clip: bool = True,
    progress: ProgressCallback | None = None,
    chunk_size: int | str | None = "auto",
    backend: str = "eager",
    backend_options: dict | None = None,
) -> Any:
    """Restore an image with MPRNet.

    Parameters
    ----------
    image : array-like, napari Image layer or dask array
        2-D grey, RGB(A) (last axis 3/4), stacks (ZYX, TYX, ...) and multi-channel data
        (CYX, processed channel by channel).
    task : {"denoise", "deblur", "derain"}
        Picks the bundled default model when ``model`` is not given.
    model : str, path or MPRNet, optional
        A task name, a model file (official checkpoint, safetensors...) or a loaded model.
    tile_size : int or "auto"
        Tile edge in pixels (>= 16); "auto" picks it from free device memory.
    tile_overlap : int
        Overlap of neighbouring tiles, blended smoothly (no seams).
    batch_size : int, optional
        Tiles per forward pass; default from free memory.
    device : str
        "auto" (CUDA, then Apple MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    precision : {"fp32", "fp16", "bf16"}, optional
        Default fp16 autocast on CUDA, fp32 elsewhere.
    stages : bool
        Also return the stage-2 and stage-1 images.
    axes : str, optional
        Axes such as "TCYX" or "YXS" (S: RGB samples) instead of the guess.
    rgb : bool, optional
        Force (True) or forbid (False) treating a last axis of 3/4 as RGB(A).
    normalize : {"auto", "percentile", "range", "none"} or Normalization
        "auto": uint8 / 255, floats in [0, 1] as they are, anything else percentile-normalised
        and mapped back to the input's intensity scale afterwards.
    percentiles : (float, float)
        Percentiles mapped to 0 and 1 by percentile normalisation.
    output_dtype : dtype, optional
        Cast the result (with clipping for integers); default float32.
    clip : bool
        Integer inputs (uint8, uint16, ...): clip the result to the input dtype's range
        (default), so that a restored uint8 image stays within 0..255 even as float32.
        False keeps values outside it (useful with float output only).
    progress : callable, optional
        Called as ``progress(done, total)`` after every tile batch.
    chunk_size : int, "auto" or None
        Dask input only: Y/X chunk edge of the lazy result, rounded to a multiple of the tile
        stride ("auto": planes above ~4096 px are chunked; None: whole planes). Chunked
        results equal whole-plane results exactly (see :mod:`napari_mprnet.scale.lazy`).
    backend : {"eager", "compile", "tensorrt", "auto"}
        How tile batches run (:mod:`napari_mprnet.engine.backends`): "compile"
        (``torch.compile``) and "tensorrt" (Torch-TensorRT, engines cached on disk) compile
        once per tile shape, worth it for large jobs on a GPU; a backend that fails warns and
        falls back (tensorrt -> compile -> eager). "auto": the fastest on the device.
    backend_options : dict, optional
        Backend settings, e.g. ``{"cuda_graphs": True}``.

    Returns
    -------
    numpy.ndarray, napari.layers.Image, dask.array.Array, or a list of them
        Same type as the input: a new layer named e.g. "cells (denoised)" for a layer, a lazy
        dask array for a dask array. With ``stages=True``: ``[final, stage2, stage1]``.
    """
    options = {
        "task": task, "model": model, "tile_size": tile_size, "tile_overlap": tile_overlap,
        "batch_size": batch_size, "device": device, "precision": precision, "stages": stages,
        "normalize": normalize, "percentiles": percentiles, "output_dtype": output_dtype,
        "clip": clip, "backend": backend, "backend_options": backend_options,
    }
    from . import _layers, _lazy

    if _layers.is_napari_layer(image):
        return _layers.restore_layer(image, axes=axes, progress=progress, **options)
    if _lazy.is_dask_array(image):
        return _lazy.restore_dask(image, axes=axes, rgb=rgb, chunk_size=chunk_size, **options)
    results = drive(iter_restore(image, axes=axes, rgb=rgb, **options), progress)
    return results if stages else results[0]

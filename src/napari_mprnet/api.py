"""``restore()``: the one call that restores numpy arrays, napari layers and dask arrays.

It only dispatches by input kind: arrays go to :class:`~napari_mprnet.engine.pipeline.Restorer`
(the whole pipeline), napari layers to :mod:`._layers`, dask arrays to :mod:`.scale.lazy`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from .engine.models import prepare_model
from .engine.normalize import DEFAULT_PERCENTILES, Normalization
from .engine.pipeline import TASK_SUFFIX, ProgressCallback, Restorer, check_progress
from .engine.removed import check_return_removed, refuse_lazy_removed, removed_part
from .engine.runner import Progress
from .model.arch import MPRNet

__all__ = ["TASK_SUFFIX", "iter_restore", "prepare_model", "removed_part", "restore"]


def iter_restore(
    image: Any,
    task: str | None = None,
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
    backend: str | None = None,
    backend_options: dict | None = None,
    strength: float | str = "auto",
    split_patches: bool = False,
    noise: float | tuple[float, float] | str | None = None,
) -> Generator[Progress, None, list[np.ndarray]]:
    """Restore an array step by step: a generator of :class:`Progress` after every tile batch.

    Takes the same arguments as :func:`restore` (array-likes only). Its return value
    (``StopIteration.value``, or ``result = yield from iter_restore(...)``) is the list
    ``[final]``, or ``[final, stage2, stage1]`` with ``stages=True``. Closing the generator
    early cancels the run: nothing partial is returned and the input is never modified.
    What a run removed, with its noise check: :func:`~napari_mprnet.engine.removed.removed_part`
    ``(image, result)``.
    """
    restorer = Restorer(
        model, task, tile_size=tile_size, tile_overlap=tile_overlap, batch_size=batch_size,
        device=device, precision=precision, stages=stages, normalize=normalize,
        percentiles=percentiles, output_dtype=output_dtype, clip=clip, backend=backend,
        backend_options=backend_options, strength=strength, split_patches=split_patches,
        noise=noise,
    )
    return (yield from restorer.iter_run(image, axes, rgb))


def restore(
    image: Any,
    task: str | None = None,
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
    backend: str | None = None,
    backend_options: dict | None = None,
    strength: float | str = "auto",
    split_patches: bool = False,
    noise: float | tuple[float, float] | str | None = None,
    return_removed: bool = False,
) -> Any:
    """Restore an image with MPRNet.

    Parameters
    ----------
    image : array-like, napari Image layer or dask array
        2-D grey, RGB(A) (last axis 3/4), stacks (ZYX, TYX, ...) and multi-channel data
        (CYX, processed channel by channel).
    task : {"denoise", "deblur", "derain"}, optional
        Picks the bundled default model when ``model`` is not given. None (default): the
        task ``model`` declares (its metadata's ``"task"``; a bundled task name is its own
        task), else "denoise", so a deblurring model passed alone is never run as a denoiser.
    model : str, path or MPRNet, optional
        A task name (always the bundled model; a local file of such a name only as a path,
        e.g. "./denoise"), a model file (official checkpoint, safetensors...) or a loaded
        model.
    tile_size : int or "auto"
        Tile edge in pixels (>= 16); "auto" picks it from free device memory.
    tile_overlap : int
        Overlap of neighbouring tiles, blended smoothly (no seams).
    batch_size : int, optional
        Tiles per forward pass; default from free memory.
    device : str
        "auto" (CUDA, then Apple MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    precision : {"auto", "fp32", "fp16", "bf16"}, optional
        "auto"/None: fp16 autocast on CUDA; on a CPU bf16 autocast where it computes bf16
        natively and the model keeps its accuracy in it, fp32 elsewhere.
    stages : bool
        Also return the stage-2 and stage-1 images.
    axes : str, optional
        Axes such as "TCYX" or "YXS" (S: RGB samples) instead of the guess.
    rgb : bool, optional
        Force (True) or forbid (False) treating a last axis of 3/4 as RGB(A); for a napari
        layer it overrides the layer's own ``rgb`` (the result layer carries the one used).
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
    backend : {None, "eager", "openvino", "compile", "tensorrt", "auto"}
        How tile batches run (:mod:`napari_mprnet.engine.backends`). None (default):
        "openvino" on a CPU where OpenVINO is installed (the network converted once per
        model, cached on disk; several times faster than eager on most CPUs), "eager"
        elsewhere (``$NAPARI_MPRNET_BACKEND`` overrides this default). "compile"
        (``torch.compile``) and "tensorrt" (Torch-TensorRT, engines cached on disk) compile
        once per tile shape, worth it for large jobs on a GPU; a backend that fails warns and
        falls back (tensorrt -> compile -> eager, openvino -> eager). "auto": the fastest on
        the device.
    backend_options : dict, optional
        Backend settings, e.g. ``{"cuda_graphs": True}``.
    strength : "auto" or float
        How far the final image moves from the input towards the network output. A number
        ``s`` gives ``input + s * (output - input)`` (1.0: the network output, 0: the input).
        "auto" (denoising; 1.0 for the other tasks) weighs the change's fine part and its
        smooth part (a 2 px Gaussian) apart, two weights per 2-D plane chosen by Stein's
        unbiased risk estimate from a noise level measured on the image itself, so that
        nearly clean images keep their detail and their smooth intensities; they are
        measured on the central 256 x 256 window (two extra forwards of that window), so the
        result does not depend on tiling or chunking. See docs/strength.md.
    noise : None, "auto", float or (float, float)
        The noise level "auto" strength assumes when denoising, in the image's own
        intensity units (those of the pixel values passed in: 0-255 for uint8, ADU for a
        camera's uint16 image). None/"auto" (default): estimated from the image. A number
        ``sd > 0``: Gaussian noise of that standard deviation. A pair ``(gain,
        offset_variance)``: variance ``gain * I + offset_variance`` at intensity ``I``
        (Poisson-Gaussian: ``gain >= 0`` per photo-electron, ``offset_variance`` the read
        noise variance minus ``gain`` times the camera offset, which must leave the variance
        positive at the bright end of the image). Helps where the estimate is off: fine
        texture at low noise, or an image whose noise is known from the camera. Refused
        (ValueError) with other tasks or a fixed strength.
    split_patches : bool
        False (default): every stage of the network sees the whole tile, so a tiled run
        agrees with a whole-image run to a fraction of a percent. True: the paper's
        multi-patch inference (stage 1 on the tile's four quarters, stage 2 on its halves),
        which leaves faint lines at every tile's centre lines; same quality on average.
    return_removed : bool
        Also give what the restoration removed (input minus result, float32) with a check,
        plane by plane, that what a denoiser removed looks like noise
        (:func:`~napari_mprnet.engine.removed.removed_part`, docs/removed.md). Arrays: returns
        ``(result, removed)``, ``removed`` a :class:`~napari_mprnet.engine.removed.RemovedPart`
        (``.data``, ``.planes``, ``.message()``), and warns (``UserWarning``) when structure
        was removed. Layers: the result layers plus a layer "cells (removed)"; the check goes
        into every layer's ``metadata["napari_mprnet"]["removed_check"]`` and a napari
        notification names the planes. Not for dask arrays (compute them first).

    Returns
    -------
    numpy.ndarray, napari.layers.Image, dask.array.Array, or a list of them
        Same type as the input: a new layer named e.g. "cells (denoised)" for a layer, a lazy
        dask array for a dask array. With ``stages=True``: ``[final, stage2, stage1]``. See
        ``return_removed`` for what it adds.

    Raises
    ------
    ValueError, TypeError
        One-line messages saying what to change: unusable settings, data that is not an
        image (booleans, complex, dates, fewer than 2 dimensions, empty), NaN or infinite
        pixels (dask: at compute time, naming the block), masked arrays (TypeError), model
        files that cannot be used, a model producing NaN from a finite image.
    """
    check_progress(progress)
    return_removed = check_return_removed(return_removed)
    options = {
        "task": task, "model": model, "tile_size": tile_size, "tile_overlap": tile_overlap,
        "batch_size": batch_size, "device": device, "precision": precision, "stages": stages,
        "normalize": normalize, "percentiles": percentiles, "output_dtype": output_dtype,
        "clip": clip, "backend": backend, "backend_options": backend_options,
        "strength": strength,
        "split_patches": split_patches,
        "noise": noise,
    }
    from . import _layers
    from .scale import lazy

    if _layers.is_napari_layer(image):
        return _layers.restore_layer(image, axes=axes, rgb=rgb, progress=progress,
                                     return_removed=return_removed, **options)
    if lazy.is_dask_array(image):
        refuse_lazy_removed(return_removed)
        return lazy.restore_dask(image, axes=axes, rgb=rgb, chunk_size=chunk_size, **options)
    task, model = options.pop("task"), options.pop("model")
    restorer = Restorer(model, task, **options)
    results = restorer.run(image, axes, rgb, progress)
    restored = results if stages else results[0]
    if not return_removed:
        return restored
    removed = removed_part(image, results[0], task=restorer.task, axes=axes, rgb=rgb)
    if removed.message():
        warnings.warn(removed.message(), UserWarning, stacklevel=2)
    return restored, removed

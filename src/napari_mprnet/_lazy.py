"""Lazy restoration of dask arrays: planes are restored chunk by chunk on compute."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_dask_array", "restore_dask"]

#: The intensity normalisation is estimated from about this many pixels.
_NORMALIZATION_SAMPLE = 4_000_000


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
    task: str = "denoise",
    model: Any = None,
    stages: bool = False,
    normalize: Any = "auto",
    percentiles: tuple[float, float] = (0.5, 99.8),
    output_dtype: Any = None,
    **runner_options: Any,
) -> Any:
    """Restore a dask array lazily; same options and result layout as
    :func:`napari_mprnet.restore`.

    Every chunk spans whole planes (Y, X and RGB samples are never split, other axes keep
    their chunking), so the result has no seams at chunk borders. The intensity map is
    fitted once, from a strided subsample, so that every chunk is normalised the same way.
    """
    from .api import _normalization_for, _resolve_axes, iter_restore, prepare_model
    from .engine.runner import drive

    if data.dtype == bool or not (
        np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)
    ):
        raise TypeError(f"image data must be integer or floating point, got dtype {data.dtype}")
    if data.ndim < 2:
        raise ValueError(f"an image needs at least 2 dimensions (Y, X), got shape {data.shape}")
    if data.size == 0:
        raise ValueError(f"the image is empty (shape {data.shape})")
    resolved = _resolve_axes(tuple(data.shape), axes, rgb)
    net = prepare_model(model, task)
    norm = _normalization_for(_strided_sample(data, resolved), normalize, percentiles, net)
    data = data.rechunk({i: -1 for i, a in enumerate(resolved) if a in "YXS"})
    n_out = 3 if stages else 1
    out_dtype = np.dtype(np.float32 if output_dtype is None else output_dtype)

    def restore_block(block: np.ndarray) -> np.ndarray:
        outputs = drive(iter_restore(block, task=task, model=net, axes=resolved, stages=stages,
                                     normalize=norm, output_dtype=out_dtype, **runner_options))
        return np.stack(outputs)

    stacked = data.map_blocks(
        restore_block, dtype=out_dtype, new_axis=0, chunks=((n_out,), *data.chunks)
    )
    results = [stacked[i] for i in range(n_out)]
    return results if stages else results[0]

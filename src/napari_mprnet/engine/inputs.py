"""Input checks shared by in-memory and lazy restoration: is the data an image, finite,
unmasked, dense? (Re-exported by :mod:`.pipeline`.)"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

__all__ = ["as_image_array", "check_image_type", "refuse_masked", "refuse_non_finite"]


def check_image_type(dtype: Any, shape: tuple[int, ...]) -> None:
    """Refuse dtypes and shapes that are not images (shared by in-memory and lazy input).

    Raises
    ------
    TypeError
        If the data is not integer or floating point (booleans, complex, dates and times...).
    ValueError
        If it has fewer than 2 dimensions or no pixels.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "mM":
        raise TypeError(f"image data must be integer or floating point, got dtype {dtype} "
                        "(dates or time spans); convert it to numbers first")
    if dtype == bool or not (np.issubdtype(dtype, np.integer)
                             or np.issubdtype(dtype, np.floating)):
        raise TypeError(
            f"image data must be integer or floating point, got dtype {dtype}; "
            "convert it first (e.g. data.astype(np.float32))"
        )
    if len(shape) < 2:
        raise ValueError(f"an image needs at least 2 dimensions (Y, X), got shape {shape}")
    if int(np.prod(shape, dtype=np.int64)) == 0:
        raise ValueError(f"the image is empty (shape {shape})")


def refuse_non_finite(data: np.ndarray, where: str = "the image") -> None:
    """Raise ``ValueError`` if floating-point ``data`` holds NaN or infinite values."""
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        count = int(np.count_nonzero(~np.isfinite(data)))
        raise ValueError(
            f"{where} contains NaN or infinite values ({count} pixel(s)); replace them first "
            "(e.g. np.nan_to_num(data))"
        )


def refuse_masked(data: Any, where: str = "the image") -> None:
    """Raise ``TypeError`` for masked arrays: their mask would be silently ignored."""
    if isinstance(data, np.ma.MaskedArray):
        raise TypeError(
            f"{where} is a masked array, which restore() does not support (the mask would be "
            "ignored); fill the masked pixels first, e.g. data.filled(np.ma.median(data))"
        )


def _refuse_sparse_or_meta(data: Any) -> None:
    """Refuse tensors without pixels to read: sparse layouts (torch, scipy) and meta tensors."""
    if isinstance(data, torch.Tensor):
        if data.is_meta:
            raise TypeError("the image is a meta tensor, which has a shape but no pixel "
                            "values; pass a tensor with real data (e.g. created on 'cpu')")
        if data.layout != torch.strided:
            layout = str(data.layout).replace("torch.", "")
            raise TypeError(f"the image is a sparse tensor ({layout}); pass a dense one, "
                            "e.g. tensor.to_dense()")
    elif type(data).__module__.startswith("scipy.sparse"):
        raise TypeError(f"the image is a scipy sparse {type(data).__name__}; pass a dense "
                        "array, e.g. matrix.toarray()")


def as_image_array(data: Any) -> np.ndarray:
    """``data`` (array-like, torch tensor) as a validated, finite numpy image (not copied
    where possible)."""
    if isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(
            "restore() takes image data, not a path; read the file first "
            "(e.g. tifffile.imread) or use the command line: napari-mprnet restore FILE"
        )
    refuse_masked(data)
    _refuse_sparse_or_meta(data)
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu()
        if data.dtype == torch.bfloat16:
            data = data.float()
    try:
        array = np.asarray(data)
    except Exception as err:  # noqa: BLE001 - report what was given
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise TypeError(f"cannot read {type(data).__name__} as an array: {reason}") from None
    check_image_type(array.dtype, array.shape)
    refuse_non_finite(array)
    return array

"""The output dtype of a restoration (re-exported by :mod:`.pipeline`).

:func:`cast_output` casts a restored float image to the requested dtype. Integers are
rounded and saturated exactly at the dtype's limits, also for 64-bit types whose limits
float64 cannot hold (``2**63 - 1`` rounds up to ``2**63`` there, which a plain cast wraps to
the other end of the range); pixels beyond the range say so in one warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["cast_output", "check_output_dtype", "output_limits"]


def check_output_dtype(output_dtype: Any) -> np.dtype | None:
    """``output_dtype`` as a numpy dtype (None stays None).

    Raises
    ------
    TypeError
        If it is not an integer or float dtype of at most 64 bits (``np.longdouble`` adds
        nothing to results computed in float64 at most, and napari cannot display it).
    """
    if output_dtype is None:
        return None
    try:
        dtype = np.dtype(output_dtype)
    except TypeError:
        raise TypeError(f"output_dtype must be an integer or float dtype such as "
                        f"np.uint16 or np.float32, got {output_dtype!r}") from None
    if dtype == bool or not (np.issubdtype(dtype, np.integer)
                             or np.issubdtype(dtype, np.floating)):
        raise TypeError(f"output_dtype must be an integer or float dtype, got {dtype}")
    if dtype.kind == "f" and dtype.itemsize > 8:
        raise TypeError(f"output_dtype {dtype} (long double) is not supported: results are "
                        "computed in float64 at most; use np.float64")
    return dtype


def output_limits(input_dtype: Any, clip: bool) -> tuple[float, float] | None:
    """The range results are clipped to: an integer input dtype's range (``clip``), else none."""
    dtype = np.dtype(input_dtype)
    if not clip or not np.issubdtype(dtype, np.integer) or dtype == bool:
        return None
    info = np.iinfo(dtype)
    return float(info.min), float(info.max)


def _to_integer(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and saturate exactly to ``dtype``'s limits (see the module docstring)."""
    info = np.iinfo(dtype)
    # 32/64-bit limits are not exact in float32: round and compare those in float64
    work = np.float64 if dtype.itemsize >= 4 else data.dtype
    rounded = np.rint(data.astype(work, copy=False))
    low, high = float(info.min), float(info.max)  # high is 2**63 / 2**64 for 64-bit types
    too_low = rounded < low
    too_high = rounded >= high if int(high) > info.max else rounded > high
    beyond = int(np.count_nonzero(too_low)) + int(np.count_nonzero(rounded > high))
    if beyond:
        warnings.warn(f"{beyond} pixel(s) of the result lie outside the range of {dtype} and "
                      f"were saturated to {info.min}..{info.max}; pass a wider output_dtype "
                      "(e.g. np.float32) to keep them", UserWarning, stacklevel=4)
    out = np.where(too_low | too_high, 0, rounded).astype(dtype)
    out[too_high] = info.max
    out[too_low] = info.min
    return out


def cast_output(data: np.ndarray, output_dtype: Any,
                limits: tuple[float, float] | None = None) -> np.ndarray:
    """Cast a restored image (float32 default; integers rounded and saturated exactly),
    after clipping it to ``limits`` (see :func:`output_limits`) if given.

    Raises
    ------
    ValueError
        If the values do not fit a floating-point ``output_dtype``.
    """
    if limits is not None:
        data = np.clip(data, *limits)
    dtype = check_output_dtype(output_dtype) or np.dtype(np.float32)
    if np.issubdtype(dtype, np.integer):
        return _to_integer(data, dtype)
    with np.errstate(over="ignore"):
        out = data.astype(dtype, copy=False)
    if not np.isfinite(out).all():
        raise ValueError(f"the restored intensities exceed the range of {dtype}; "
                         "pass output_dtype=np.float64")
    return out

"""Lazy restoration of dask arrays (kept for its import path; see :mod:`.scale.lazy`)."""

from __future__ import annotations

from .scale.lazy import is_dask_array, restore_dask

__all__ = ["is_dask_array", "restore_dask"]

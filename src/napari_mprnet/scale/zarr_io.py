"""zarr / OME-Zarr in, zarr out: images larger than memory stream through chunk by chunk.

Reading returns a lazy dask array (``dask.array.from_zarr``) and the axes if the store
records them: OME-Zarr ``multiscales`` metadata (the full-resolution level is used), an
``axes`` attribute (as written here) or xarray's ``_ARRAY_DIMENSIONS``. Writing stores lazy
results with one :func:`dask.array.store` call, so every block is computed once and written
as soon as it is ready (on the workers when a distributed client is active), into a
temporary folder renamed into place at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["is_zarr_path", "open_zarr", "write_zarr"]

_MARKERS = ("zarr.json", ".zarray", ".zgroup")
_KNOWN = "TZCYXS"


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr store folder (v2 or v3, array or group)."""
    path = Path(path)
    return path.is_dir() and (
        path.suffix.lower() == ".zarr" or any((path / m).exists() for m in _MARKERS)
    )


def _axes_from_names(names: list[Any]) -> str | None:
    letters = "".join(str(n.get("name", "") if isinstance(n, dict) else n)[:1].upper()
                      for n in names)
    letters = letters.replace("I", "Z").replace("Q", "Z")
    return letters if len(set(letters)) == len(letters) and set(letters) <= set(_KNOWN) \
        else None


def open_zarr(path: str | os.PathLike) -> tuple[Any, str | None]:
    """Open a zarr array or OME-Zarr image lazily; return ``(dask array, axes or None)``."""
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    axes = None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
        if not multiscales:
            raise ValueError(f"{path}: a zarr group without OME-Zarr 'multiscales' metadata; "
                             "give the path of the array inside it")
        first = multiscales[0]
        node = node[first["datasets"][0]["path"]]
        if first.get("axes"):
            axes = _axes_from_names(first["axes"])
    attrs = dict(node.attrs)
    if axes is None and isinstance(attrs.get("axes"), str):
        axes = attrs["axes"].upper()
    if axes is None and attrs.get("_ARRAY_DIMENSIONS"):
        axes = _axes_from_names(attrs["_ARRAY_DIMENSIONS"])
    if axes is not None and len(axes) != node.ndim:
        axes = None
    return da.from_zarr(node), axes


def _regular(array: Any) -> Any:
    """Rechunk to regular chunks (all equal, the last may be smaller), as zarr stores them."""
    def regular(chunks: tuple[int, ...]) -> bool:
        return len(set(chunks[:-1])) <= 1 and chunks[-1] <= chunks[0]

    if all(regular(c) for c in array.chunks):
        return array
    return array.rechunk(tuple(c[0] for c in array.chunks))


def write_zarr(
    arrays: list[Any], paths: list[str | os.PathLike], axes: str | None = None,
    overwrite: bool = False, attrs: dict | None = None, compute_kwargs: dict | None = None,
) -> list[Path]:
    """Compute lazy ``arrays`` and write each to the zarr array at the matching path.

    All arrays are stored in one pass, so outputs that share work (the stages of one run)
    compute each block once. Existing paths are replaced only with ``overwrite``.
    """
    import dask.array as da
    import zarr

    paths = [Path(p) for p in paths]
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite to replace it")
    temporaries, targets, sources = [], [], []
    try:
        for array, path in zip(arrays, paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            temporaries.append(tmp)
            array = _regular(array)
            target = zarr.open_array(str(tmp), mode="w", shape=array.shape,
                                     chunks=tuple(int(c[0]) for c in array.chunks),
                                     dtype=np.dtype(array.dtype))
            meta = dict(attrs or {})
            if axes:
                meta["axes"] = axes
            if meta:
                target.attrs.update(meta)
            sources.append(array)
            targets.append(target)
        da.store(sources, targets, lock=False, **(compute_kwargs or {}))
        for tmp, path in zip(temporaries, paths):
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
    finally:
        for tmp in temporaries:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return paths

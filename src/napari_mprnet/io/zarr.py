"""zarr / OME-Zarr in and out: images larger than memory stream through chunk by chunk.

Reading returns a lazy dask array (``dask.array.from_zarr``) and what the store says about
its axes: OME-Zarr ``multiscales`` metadata (v0.4 on zarr v2, v0.5 under ``ome`` on zarr v3;
the full-resolution level is used, with its scale), an ``axes`` attribute (as written here),
zarr v3 ``dimension_names`` or xarray's ``_ARRAY_DIMENSIONS``.

Writing stores lazy results with one :func:`dask.array.store` call, so every block is
computed once and written as soon as it is ready (on the workers when a distributed client is
active), each into a temporary folder committed by :mod:`.atomic` at the end. An OME-Zarr
input gives an OME-Zarr output (same OME version, axes and the scale of the level restored);
zarr v3 outputs carry ``dimension_names``.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_output

__all__ = ["ZarrImage", "is_zarr_path", "open_zarr", "read_zarr", "write_zarr"]

_MARKERS = ("zarr.json", ".zarray", ".zgroup")
_KNOWN = "TZCYXS"


@dataclass
class ZarrImage:
    """A zarr array (lazy) and its description.

    ``ome`` is the input's OME-Zarr description (``version``, ``axes``, ``name`` and the
    ``coordinateTransformations`` of the level read) or None for a plain array;
    ``dimension_names`` are the array's own names (zarr v3) or None.
    """

    data: Any
    axes: str | None
    zarr_format: int = 3
    ome: dict[str, Any] | None = None
    dimension_names: tuple[str, ...] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr store folder (v2 or v3, array or group)."""
    path = Path(path)
    return path.is_dir() and (
        path.suffix.lower() == ".zarr" or any((path / m).exists() for m in _MARKERS)
    )


def _axes_from_names(names: list[Any] | tuple[Any, ...]) -> str | None:
    letters = "".join(str(n.get("name", "") if isinstance(n, dict) else n)[:1].upper()
                      for n in names)
    letters = letters.replace("I", "Z").replace("Q", "Z")
    return letters if len(set(letters)) == len(letters) and set(letters) <= set(_KNOWN) \
        else None


def _format_of(node: Any) -> int:
    return int(getattr(getattr(node, "metadata", None), "zarr_format", 2) or 2)


def read_zarr(path: str | os.PathLike) -> ZarrImage:
    """Open a zarr array or OME-Zarr image lazily (the full-resolution level of a group)."""
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    axes = None
    ome = None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        wrapper = attrs.get("ome") or {}
        multiscales = attrs.get("multiscales") or wrapper.get("multiscales")
        if not multiscales:
            raise ValueError(f"{path}: a zarr group without OME-Zarr 'multiscales' metadata; "
                             "give the path of the array inside it")
        first = multiscales[0]
        level = first["datasets"][0]
        ome = {
            "version": wrapper.get("version") or first.get("version") or "0.4",
            "axes": copy.deepcopy(first.get("axes") or []),
            "name": first.get("name"),
            "coordinateTransformations": copy.deepcopy(
                level.get("coordinateTransformations") or []),
        }
        node = node[level["path"]]
        if ome["axes"]:
            axes = _axes_from_names(ome["axes"])
    attrs = dict(node.attrs)
    names = getattr(node.metadata, "dimension_names", None)
    names = tuple(str(n) for n in names) if names and all(n is not None for n in names) \
        else None
    if axes is None and isinstance(attrs.get("axes"), str):
        axes = attrs["axes"].upper()
    if axes is None and names:
        axes = _axes_from_names(names)
    if axes is None and attrs.get("_ARRAY_DIMENSIONS"):
        axes = _axes_from_names(attrs["_ARRAY_DIMENSIONS"])
    if axes is not None and len(axes) != node.ndim:
        axes = None
    return ZarrImage(da.from_zarr(node), axes, _format_of(node), ome, names, attrs)


def open_zarr(path: str | os.PathLike) -> tuple[Any, str | None]:
    """Open a zarr array or OME-Zarr image lazily; return ``(dask array, axes or None)``."""
    image = read_zarr(path)
    return image.data, image.axes


def _regular(array: Any) -> Any:
    """Rechunk to regular chunks (all equal, the last may be smaller), as zarr stores them."""
    def regular(chunks: tuple[int, ...]) -> bool:
        return len(set(chunks[:-1])) <= 1 and chunks[-1] <= chunks[0]

    if all(regular(c) for c in array.chunks):
        return array
    return array.rechunk(tuple(c[0] for c in array.chunks))


_OME_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def _ome_axes(axes: str, like: ZarrImage | None) -> list[dict[str, Any]]:
    if like is not None and like.ome and like.ome.get("axes") and like.axes == axes:
        return copy.deepcopy(like.ome["axes"])
    return [{"name": a.lower(), "type": _OME_TYPES[a]} for a in axes]


def _open_output(tmp: Path, array: Any, axes: str | None, like: ZarrImage | None,
                 attrs: dict[str, Any]) -> Any:
    """Create the (empty) output store in ``tmp``; return the zarr array to fill."""
    import zarr

    zarr_format = like.zarr_format if like is not None else 3
    ome = like.ome if like is not None else None
    if axes and len(axes) != array.ndim:
        axes = None
    names = None
    if zarr_format >= 3 and axes:
        names = (list(like.dimension_names) if like is not None and like.dimension_names
                 and len(like.dimension_names) == array.ndim else [a.lower() for a in axes])
    spec = {"shape": array.shape, "chunks": tuple(int(c[0]) for c in array.chunks),
            "dtype": np.dtype(array.dtype)}
    if names:
        spec["dimension_names"] = names
    meta = dict(attrs)
    if axes:
        meta["axes"] = axes
    if ome is None or not axes:
        target = zarr.open_array(str(tmp), mode="w", zarr_format=zarr_format, **spec)
        if zarr_format == 2 and axes:
            meta["_ARRAY_DIMENSIONS"] = [a.lower() for a in axes]
        target.attrs.update(meta)
        return target
    group = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
    level = {"path": "0"}
    if ome.get("coordinateTransformations"):
        level["coordinateTransformations"] = copy.deepcopy(ome["coordinateTransformations"])
    multiscale = {"axes": _ome_axes(axes, like), "datasets": [level]}
    if ome.get("name"):
        multiscale["name"] = ome["name"]
    if zarr_format >= 3:
        group.attrs.update({"ome": {"version": ome["version"], "multiscales": [multiscale]},
                            **meta})
    else:
        group.attrs.update({"multiscales": [{"version": ome["version"], **multiscale}], **meta})
    return group.create_array("0", **spec)


def write_zarr(
    arrays: list[Any], paths: list[str | os.PathLike], axes: str | None = None,
    overwrite: bool = False, attrs: dict | None = None, compute_kwargs: dict | None = None,
    like: ZarrImage | None = None,
) -> list[Path]:
    """Compute lazy ``arrays`` and write each to a zarr store at the matching path.

    All arrays are stored in one pass, so outputs that share work (the stages of one run)
    compute each block once. Existing paths are replaced only with ``overwrite``; a path that
    appears while computing is kept (:class:`~.atomic.OutputExistsError`). With ``like``
    (the input, from :func:`read_zarr`) the outputs take its zarr format and, for an
    OME-Zarr input, are OME-Zarr images with its axes and scale.
    """
    import dask.array as da

    paths = [Path(p) for p in paths]
    with contextlib.ExitStack() as stack:
        sources, targets = [], []
        for array, path in zip(arrays, paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(atomic_output(path, overwrite=overwrite, directory=True,
                                                    fsync=False))
            array = _regular(array)
            targets.append(_open_output(tmp, array, axes, like, dict(attrs or {})))
            sources.append(array)
        da.store(sources, targets, lock=False, **(compute_kwargs or {}))
    return paths

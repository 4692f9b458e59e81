"""Paired (degraded, clean) training data: loading and splitting (patches: ``sampling``).

Every image is cut into 2-D planes shaped (H, W, c) with c = 1 (grey) or 3 (RGB), and all
planes, inputs and targets alike, go through ONE intensity map fitted on the inputs
(:func:`napari_mprnet.engine.normalize.choose_normalization`), so the network learns the
target's intensities in the same scale it sees the input in; the map is stored with the model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_mprnet.engine.normalize import Normalization, choose_normalization

__all__ = ["PairSet", "fingerprint", "load_pairs", "split_pairs"]

TIFF_SUFFIXES = (".tif", ".tiff")
#: Above this many input values, the normalisation is fitted on a strided sample
#: (plus every image's minimum and maximum).
_FIT_MAX_VALUES = 16_000_000


@dataclass
class PairSet:
    """Paired training planes, normalised to the network's range.

    Parameters
    ----------
    inputs : list of numpy.ndarray
        Degraded planes, each (H, W, c) float32 with c = 1 or 3.
    targets : list of numpy.ndarray
        Clean planes, shaped like the matching input.
    names : list of str
        One name per plane, e.g. ``"img01.tif[z=3]"``.
    normalization : Normalization
        The map applied to inputs and targets (fitted on the inputs).
    """

    inputs: list[np.ndarray] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    normalization: Normalization = field(default_factory=Normalization)

    def __post_init__(self) -> None:
        if not len(self.inputs) == len(self.targets) == len(self.names):
            raise ValueError(
                f"PairSet needs one target and one name per input, got {len(self.inputs)} "
                f"inputs, {len(self.targets)} targets and {len(self.names)} names"
            )

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: Sequence[int]) -> PairSet:
        """Return the planes at ``indices`` (arrays shared, not copied)."""
        return PairSet(
            [self.inputs[i] for i in indices],
            [self.targets[i] for i in indices],
            [self.names[i] for i in indices],
            self.normalization,
        )


# --------------------------------------------------------------------------- loading


def _is_pathlike(obj: Any) -> bool:
    return isinstance(obj, (str, Path))


def _tiff_files(folder: Path) -> dict[str, Path]:
    if not folder.exists():
        raise FileNotFoundError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"expected a folder of TIFF files, got a file: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)
    if not files:
        raise ValueError(f"no TIFF files (*.tif, *.tiff) in folder {folder}")
    by_name: dict[str, Path] = {}
    for path in files:
        if path.name in by_name:  # pragma: no cover - only on case-insensitive names
            raise ValueError(f"two files named {path.name!r} in {folder}")
        by_name[path.name] = path
    return by_name


def _folder_pairs(inputs: Path, targets: Path) -> list[tuple[str, Any, Any, Any]]:
    in_files = _tiff_files(inputs)
    tgt_files = _tiff_files(targets)
    lonely_in = sorted(set(in_files) - set(tgt_files))
    lonely_tgt = sorted(set(tgt_files) - set(in_files))
    if lonely_in or lonely_tgt:
        parts = []
        if lonely_in:
            parts.append(f"inputs without a target in {targets}: {', '.join(lonely_in)}")
        if lonely_tgt:
            parts.append(f"targets without an input in {inputs}: {', '.join(lonely_tgt)}")
        raise ValueError("unpaired files (matched by file name): " + "; ".join(parts))
    return [
        (name, tifffile.imread(in_files[name]), tifffile.imread(tgt_files[name]), None)
        for name in sorted(in_files)
    ]


def _unwrap(obj: Any) -> tuple[Any, bool | None, str | None]:
    """Return (array-like, rgb hint, name) for an array or a layer-like object."""
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        return obj, None, None
    if hasattr(obj, "data"):
        data = obj.data
        if getattr(obj, "multiscale", False) and isinstance(data, (list, tuple)):
            data = data[0]  # the full-resolution level
        rgb = getattr(obj, "rgb", None)
        name = getattr(obj, "name", None)
        return data, rgb if isinstance(rgb, (bool, np.bool_)) else None, name
    raise TypeError(
        "training data must be numpy arrays, lists of arrays, folder paths or napari Image "
        f"layers, got {type(obj).__name__}"
    )


def _object_pairs(inputs: Any, targets: Any) -> list[tuple[str, Any, Any, Any]]:
    def as_list(obj: Any) -> list:
        if isinstance(obj, (list, tuple)):
            return list(obj)
        return [obj]

    in_list, tgt_list = as_list(inputs), as_list(targets)
    if not in_list:
        raise ValueError("no training images given")
    if len(in_list) != len(tgt_list):
        raise ValueError(f"got {len(in_list)} input images but {len(tgt_list)} target images")
    single = len(in_list) == 1 and not isinstance(inputs, (list, tuple))
    pairs = []
    for index, (inp, tgt) in enumerate(zip(in_list, tgt_list)):
        in_data, rgb, name = _unwrap(inp)
        tgt_data, _, _ = _unwrap(tgt)
        if not name:
            name = "image" if single else f"image{index}"
        pairs.append((str(name), in_data, tgt_data, rgb))
    return pairs


def _as_numeric(data: Any, what: str) -> np.ndarray:
    array = np.asarray(data)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(
            f"{what} has a non-numeric dtype ({array.dtype}); expected integers or floats"
        )
    if array.size == 0:
        raise ValueError(f"{what} is empty (shape {array.shape})")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return array


def _planes(array: np.ndarray, rgb: bool, name: str) -> tuple[np.ndarray, list[str]]:
    """Reshape an image to (n, H, W, c) with names per plane (alpha dropped)."""
    if rgb:
        if array.ndim < 3 or array.shape[-1] not in (3, 4):
            raise ValueError(
                f"{name!r} is marked RGB but its last axis is not 3 or 4 (shape {array.shape})"
            )
        array = array[..., :3]
        lead = array.shape[:-3]
        planes = array.reshape((-1,) + array.shape[-3:])
    else:
        if array.ndim < 2:
            raise ValueError(f"{name!r} must be at least 2-D, got shape {array.shape}")
        lead = array.shape[:-2]
        planes = array.reshape((-1,) + array.shape[-2:] + (1,))
    if not lead:
        names = [name]
    elif len(lead) == 1:
        names = [f"{name}[z={i}]" for i in range(lead[0])]
    else:
        names = [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*lead)]
    return planes, names


def _fit_sample(arrays: list[np.ndarray]) -> np.ndarray:
    """All input values, or a strided sample with every array's extremes when too many."""
    total = sum(a.size for a in arrays)
    if total <= _FIT_MAX_VALUES:
        return np.concatenate([a.reshape(-1) for a in arrays])
    step = math.ceil(total / _FIT_MAX_VALUES)
    parts = []
    for a in arrays:
        flat = a.reshape(-1)
        parts.append(flat[::step])
        parts.append(np.array([flat.min(), flat.max()], dtype=a.dtype))
    return np.concatenate(parts)


def load_pairs(
    inputs: Any,
    targets: Any,
    *,
    normalize: str | Normalization = "auto",
    rgb: bool | None = None,
) -> PairSet:
    """Load paired degraded/clean images as normalised float32 planes.

    Parameters
    ----------
    inputs, targets : array, list of arrays, folder path or napari Image layer(s)
        Degraded and clean images: two arrays of identical shape, two equally long lists,
        two folders of TIFFs (``*.tif``, ``*.tiff``) matched by file name, or layer-like
        objects (a ``.data`` attribute and optional ``.rgb``). Images are 2-D, RGB (last
        axis 3 or 4; alpha is dropped) or stacks (every plane becomes a sample).
    normalize : {"auto", "percentile", "range", "none"} or Normalization
        Passed to :func:`choose_normalization`, fitted on all inputs together; the same
        map is applied to the targets.
    rgb : bool, optional
        Whether the last axis holds colour channels. Default: a layer's ``rgb`` flag, else
        ``True`` when the image has 3+ dimensions and its last axis is 3 or 4.

    Returns
    -------
    PairSet

    Raises
    ------
    ValueError
        Mismatched shapes, unpaired or missing files, non-numeric data, NaN/inf.
    TypeError
        Unsupported input types.
    """
    if _is_pathlike(inputs) or _is_pathlike(targets):
        if not (_is_pathlike(inputs) and _is_pathlike(targets)):
            raise TypeError("give both inputs and targets as folder paths, or neither")
        raw = _folder_pairs(Path(inputs), Path(targets))
    else:
        raw = _object_pairs(inputs, targets)

    in_planes: list[np.ndarray] = []
    tgt_planes: list[np.ndarray] = []
    names: list[str] = []
    for name, in_data, tgt_data, layer_rgb in raw:
        inp = _as_numeric(in_data, f"input {name!r}")
        tgt = _as_numeric(tgt_data, f"target {name!r}")
        if inp.shape != tgt.shape:
            raise ValueError(
                f"input and target {name!r} differ in shape: input {inp.shape}, target {tgt.shape}"
            )
        is_rgb = rgb if rgb is not None else layer_rgb
        if is_rgb is None:
            is_rgb = inp.ndim >= 3 and inp.shape[-1] in (3, 4)
        inp_p, plane_names = _planes(inp, bool(is_rgb), name)
        tgt_p, _ = _planes(tgt, bool(is_rgb), name)
        in_planes.append(inp_p)
        tgt_planes.append(tgt_p)
        names.extend(plane_names)

    norm = choose_normalization(_fit_sample(in_planes), normalize)
    inputs_out = [np.ascontiguousarray(norm.apply(p)) for a in in_planes for p in a]
    targets_out = [np.ascontiguousarray(norm.apply(p)) for a in tgt_planes for p in a]
    return PairSet(inputs_out, targets_out, names, norm)


# --------------------------------------------------------------------------- splitting


def split_pairs(pairs: PairSet, val_fraction: float, seed: int = 0) -> tuple[PairSet, PairSet]:
    """Split into training and validation sets by whole plane (never by patch).

    Parameters
    ----------
    pairs : PairSet
        All planes.
    val_fraction : float
        Fraction of planes held out, in [0, 1). With a positive fraction and at least two
        planes, at least one is held out; at least one always stays for training.
    seed : int
        Seed of the random assignment.

    Returns
    -------
    (PairSet, PairSet)
        Training and validation planes (in their original order), sharing the normalisation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = len(pairs)
    if n == 0:
        raise ValueError("cannot split an empty PairSet")
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val_idx = sorted(int(i) for i in order[:n_val])
    train_idx = sorted(int(i) for i in order[n_val:])
    return pairs.subset(train_idx), pairs.subset(val_idx)


#: The held-out band of a single plane is at least this many pixels across (8-aligned).
MIN_VAL_BAND = 32


def split_region(pairs: PairSet, val_fraction: float, min_train: int = 0
                 ) -> tuple[PairSet, PairSet]:
    """Split ONE plane into a training part and a held-out band for validation.

    With a single plane, :func:`split_pairs` can hold out nothing; this holds out a region
    instead: the last ``val_fraction`` of the plane along its longer side (the bottom rows,
    or the right-hand columns of a wide plane), at least :data:`MIN_VAL_BAND` pixels and a
    multiple of 8, so that fine-tuning on one image still reports its quality on pixels it
    never trained on. The training part keeps at least ``min_train`` pixels (the patch
    size) along that side; a plane too small for both is returned whole, with no validation.

    Returns
    -------
    (PairSet, PairSet)
        The training part and the band, each one plane (named e.g. ``"cells[rows 0-343]"``
        and ``"cells[rows 344-383]"``), sharing the normalisation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if len(pairs) != 1:
        raise ValueError(f"split_region splits one plane, got {len(pairs)}")
    inp, tgt, name = pairs.inputs[0], pairs.targets[0], pairs.names[0]
    axis = 0 if inp.shape[0] >= inp.shape[1] else 1
    length = inp.shape[axis]
    band = max(MIN_VAL_BAND, -(-round(val_fraction * length) // 8) * 8)
    if val_fraction == 0 or length - band < max(int(min_train), MIN_VAL_BAND):
        return pairs, pairs.subset([])
    cut = length - band
    what = "rows" if axis == 0 else "columns"

    def part(lo: int, hi: int) -> PairSet:
        index = (slice(lo, hi), slice(None)) if axis == 0 else (slice(None), slice(lo, hi))
        return PairSet([np.ascontiguousarray(inp[index])], [np.ascontiguousarray(tgt[index])],
                       [f"{name}[{what} {lo}-{hi - 1}]"], pairs.normalization)

    return part(0, cut), part(cut, length)


def fingerprint(train: PairSet, val: PairSet) -> dict:
    """What identifies the training data: plane counts, shapes and a SHA-256 of every plane.

    Stored in fine-tuning checkpoints, so that a resumed run can refuse other data. The hash
    covers the normalised inputs and targets of both sets, in order.
    """
    digest = hashlib.sha256()
    shapes: dict[str, int] = {}
    for planes in (train.inputs, train.targets, val.inputs, val.targets):
        digest.update(b"|")
        for plane in planes:
            plane = np.ascontiguousarray(plane)
            digest.update(f"{plane.dtype}{plane.shape}".encode())
            digest.update(plane.reshape(-1).view(np.uint8))
    for plane in train.inputs + val.inputs:
        key = "x".join(map(str, plane.shape))
        shapes[key] = shapes.get(key, 0) + 1
    return {"train_planes": len(train), "val_planes": len(val),
            "shapes": [[shape, count] for shape, count in sorted(shapes.items())],
            "sha256": digest.hexdigest()}

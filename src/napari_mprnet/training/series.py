"""Noise2Noise pairs from a time series (or any stack of repeated acquisitions).

Two neighbouring frames ``t`` and ``t + 1`` of a static (or slowly changing) sample show the
same scene with independent noise; training a network to map one onto the other teaches it
the clean image (Noise2Noise), and, unlike a blind spot, it also works for noise that is
correlated between neighbouring pixels, as long as it is independent between frames.

Validation is split by **blocks of whole frames**, never by patch: a frame belongs either to
training or to validation, and a pair whose frames fall on both sides of a block boundary is
dropped, so no validation frame is ever seen in training (neighbouring frames are nearly
identical, so a random split of pairs would leak).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_mprnet.engine.normalize import Normalization

from .data import TIFF_SUFFIXES, PairSet, load_pairs

__all__ = ["frame_block_split", "series_pairs"]


def frame_block_split(
    n_frames: int, val_fraction: float, *, block: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Assign whole blocks of consecutive frames to training or validation.

    Parameters
    ----------
    n_frames : int
        Frames in the series.
    val_fraction : float
        Share of frames held out, in [0, 1); at least one block when positive.
    block : int, optional
        Frames per block (>= 2); default ``max(2, n_frames // 20)``.
    seed : int
        Seed of the choice of validation blocks.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Boolean masks over the frames: training, validation (never both).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    block = max(2, n_frames // 20) if block is None else int(block)
    if block < 2:
        raise ValueError(f"block must be >= 2 frames (a pair needs two), got {block}")
    n_blocks = math.ceil(n_frames / block)
    train = np.ones(n_frames, dtype=bool)
    val = np.zeros(n_frames, dtype=bool)
    if val_fraction == 0 or n_blocks < 2:
        return train, val
    n_val = min(n_blocks - 1, max(1, round(val_fraction * n_blocks)))
    chosen = np.random.default_rng(seed).choice(n_blocks, size=n_val, replace=False)
    for index in chosen:
        val[index * block : (index + 1) * block] = True
    return ~val, val


def _series_list(stacks: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(stacks, (str, Path)):
        folder = Path(stacks)
        if not folder.is_dir():
            raise ValueError(f"expected a folder of TIFF stacks, got {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
        if not files:
            raise ValueError(f"no TIFF files (*.tif, *.tiff) in folder {folder}")
        return [(p.name, tifffile.imread(p)) for p in files]
    items = list(stacks) if isinstance(stacks, (list, tuple)) else [stacks]
    out = []
    for index, item in enumerate(items):
        data = getattr(item, "data", item) if not isinstance(item, np.ndarray) else item
        name = getattr(item, "name", None) or (
            "series" if len(items) == 1 else f"series{index}"
        )
        out.append((str(name), np.asarray(data)))
    return out


def series_pairs(
    stacks: Any,
    *,
    val_fraction: float = 0.1,
    block: int | None = None,
    seed: int = 0,
    normalize: str | Normalization = "auto",
    rgb: bool | None = None,
    both_directions: bool = True,
) -> tuple[PairSet, PairSet]:
    """Noise2Noise pairs ``(frame t, frame t + 1)`` from stacks, split by frame blocks.

    Parameters
    ----------
    stacks : array, list of arrays, napari layer(s) or folder of TIFF stacks
        Each a series along its first axis (T, H, W), (T, H, W, 3) or (T, Z, H, W) (every
        plane of a frame pairs with the same plane of the next frame).
    val_fraction : float
        Share of every series' frames held out for validation (whole blocks of frames).
    block : int, optional
        Frames per block, see :func:`frame_block_split`.
    seed : int
        Seed of the choice of validation blocks.
    normalize : str or Normalization
        Intensity map, fitted on all frames (as :func:`load_pairs` does).
    rgb : bool, optional
        Whether the last axis holds colours (default: guessed as :func:`load_pairs` does).
    both_directions : bool
        Also add the reversed pairs ``(t + 1, t)``.

    Returns
    -------
    (PairSet, PairSet)
        Training and validation pairs, sharing the normalisation.
    """
    series = _series_list(stacks)
    if not series:
        raise ValueError("no series given")
    pair_inputs, pair_targets, layout = [], [], []
    for name, array in series:
        if array.ndim < 3 or array.shape[0] < 2:
            raise ValueError(
                f"{name!r} (shape {array.shape}) is not a series: pairs from a series need "
                "a stack with at least 2 frames along the first axis"
            )
        pair_inputs.append(array[:-1])
        pair_targets.append(array[1:])
        layout.append((name, array.shape[0]))
    pairs = load_pairs(pair_inputs, pair_targets, normalize=normalize, rgb=rgb)

    per_frame = [_planes_per_frame(array, rgb) for _, array in series]
    if sum(p * (n - 1) for p, (_, n) in zip(per_frame, layout)) != len(pairs):
        raise ValueError("the series' planes do not divide into frames; pass rgb= explicitly")
    train_idx, val_idx, names = [], [], []
    start = 0
    for k, ((name, n_frames), per_pair) in enumerate(zip(layout, per_frame)):
        train_f, val_f = frame_block_split(n_frames, val_fraction, block=block,
                                           seed=seed + k)
        for t in range(n_frames - 1):
            for p in range(per_pair):
                suffix = f"[t={t}->{t + 1}]" if per_pair == 1 else f"[t={t}->{t + 1},{p}]"
                names.append(f"{name}{suffix}")
                index = start + t * per_pair + p
                if train_f[t] and train_f[t + 1]:
                    train_idx.append(index)
                elif val_f[t] and val_f[t + 1]:
                    val_idx.append(index)
        start += (n_frames - 1) * per_pair
    pairs = PairSet(pairs.inputs, pairs.targets, names, pairs.normalization)
    train, val = pairs.subset(train_idx), pairs.subset(val_idx)
    if len(train) == 0:
        raise ValueError("no training pairs left after holding out validation frames; "
                         "lower val_fraction or give a longer series")
    if both_directions:
        train = _with_reversed(train)
    return train, val


def _planes_per_frame(array: np.ndarray, rgb: bool | None) -> int:
    """Planes one frame of a series contributes (the guess of :func:`load_pairs`)."""
    is_rgb = rgb if rgb is not None else array.shape[-1] in (3, 4)
    return int(np.prod(array.shape[1:-3] if is_rgb else array.shape[1:-2], dtype=np.int64))


def _with_reversed(pairs: PairSet) -> PairSet:
    return PairSet(
        pairs.inputs + pairs.targets,
        pairs.targets + pairs.inputs,
        pairs.names + [f"{n}(reversed)" for n in pairs.names],
        pairs.normalization,
    )

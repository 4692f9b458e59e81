"""Overlapping tiles over a 2-D plane and the weights that blend them without seams.

Tiles are laid out independently along each axis. The tile size asked for is the largest
allowed: along each axis the grid uses the smallest edge (a multiple of 8, the network's
size multiple) that covers the axis with as few tiles as the largest edge would need
(:func:`axis_tile`), so the overlaps are no wider than needed and little is computed twice
(a 1024 px axis on 384 px tiles takes 3 tiles of 368 px: 1.16x the plane's pixels instead
of 1.27x). Tiles start every ``edge - overlap`` pixels, the last one aligned to the end
(:func:`axis_starts`), and every tile gets
a separable weight ``outer(weight_y, weight_x)``. Along each axis the 1-D profiles of the
tiles covering a position sum to one (:func:`axis_weights`), so the 2-D weights of all
tiles sum to one at every pixel and tile results can be accumulated in place::

    out = np.zeros((height, width, channels), np.float32)
    for tile in TileGrid.plan(height, width, 256, 32).tiles():
        out[tile.slices] += tile.weight()[..., None] * run(image[tile.slices])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from numbers import Integral

import numpy as np

__all__ = [
    "MIN_TILE_SIZE",
    "SIZE_MULTIPLE",
    "Tile",
    "TileGrid",
    "axis_starts",
    "axis_tile",
    "axis_weights",
    "validate_tiling",
]

#: Smallest tile edge accepted by :func:`validate_tiling`.
MIN_TILE_SIZE = 16
#: Tile edges are rounded up to this (the network pads its input to a multiple of it).
SIZE_MULTIPLE = 8


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def validate_tiling(tile_size: int, tile_overlap: int) -> None:
    """Check tile size and overlap, raising a helpful error if they are unusable.

    Raises
    ------
    TypeError
        If either value is not an integer (booleans are rejected too).
    ValueError
        If ``tile_size < 16``, ``tile_overlap < 0`` or ``tile_overlap >= tile_size``.
    """
    for name, value in (("tile_size", tile_size), ("tile_overlap", tile_overlap)):
        if not _is_int(value):
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if tile_size < MIN_TILE_SIZE:
        raise ValueError(
            f"tile_size must be at least {MIN_TILE_SIZE} pixels, got {tile_size}; "
            "use a larger tile (e.g. 256)"
        )
    if tile_overlap < 0:
        raise ValueError(f"tile_overlap must be 0 or positive, got {tile_overlap}")
    if tile_overlap >= tile_size:
        raise ValueError(
            f"tile_overlap ({tile_overlap}) must be smaller than tile_size ({tile_size}); "
            "reduce the overlap or increase the tile size"
        )


def _check_axis(length: int, tile: int, overlap: int) -> None:
    if length < 1:
        raise ValueError(f"axis length must be at least 1, got {length}")
    if tile < 1:
        raise ValueError(f"tile must be at least 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile ({tile}), got {overlap}")


def axis_tile(length: int, tile: int, overlap: int) -> int:
    """The tile size to lay out an axis of ``length`` with (:func:`axis_starts`,
    :func:`axis_weights`): ``tile`` when the axis fits in one tile (its size is then the
    axis); else, of the edges up to ``tile`` (multiples of :data:`SIZE_MULTIPLE`, and
    ``tile`` itself), the one whose tiles compute the fewest pixels (each padded to a
    multiple of :data:`SIZE_MULTIPLE`, as the network does), with overlaps of at least
    ``overlap``; ties go to fewer tiles.

    Returns
    -------
    int
        A size ``overlap < size <= tile``; tiles are ``min(size, length)`` long.
    """
    _check_axis(length, tile, overlap)
    if length <= tile:
        return tile

    def cost(edge: int) -> tuple[int, int]:
        count = math.ceil((length - edge) / (edge - overlap)) + 1
        return count * -(-edge // SIZE_MULTIPLE) * SIZE_MULTIPLE, count

    candidates = [e for e in range(SIZE_MULTIPLE, tile, SIZE_MULTIPLE) if e > overlap]
    return min([*candidates, tile], key=cost)


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)`` along one axis.

    Tiles have size ``min(tile, length)`` and follow each other with stride
    ``tile - overlap``; the last one is aligned to the end, so every tile is full size and
    inside the image (it may overlap its neighbour by more than ``overlap``).

    Returns
    -------
    list of int
        Strictly increasing start offsets, the first 0 and the last ``length - size``.
    """
    _check_axis(length, tile, overlap)
    if length <= tile:
        return [0]
    last = length - tile
    starts = list(range(0, last, tile - overlap))
    starts.append(last)
    return starts


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp rising from near 0 to near 1 over ``n`` samples (all in (0, 1)).

    ``_ramp(n) + _ramp(n)[::-1] == 1``, so two opposite ramps partition unity.
    """
    k = np.arange(n, dtype=np.float64) + 0.5
    return 0.5 - 0.5 * np.cos(np.pi * k / n)


def axis_weights(length: int, starts: list[int], tile: int, overlap: int) -> list[np.ndarray]:
    """Blending profiles for the tiles at ``starts`` along one axis.

    Each tile's raw window is flat, with a raised-cosine ramp over the region it shares with
    the previous tile (rising) and with the next tile (falling); there is no ramp towards the
    image edges. The windows are then divided by their sum over tiles, so at every position
    the profiles of the tiles covering it sum to one.

    Parameters
    ----------
    length : int
        Axis length.
    starts : list of int
        Tile starts, as returned by :func:`axis_starts`.
    tile, overlap : int
        Requested tile size and overlap; the size used is ``min(tile, length)``.

    Returns
    -------
    list of numpy.ndarray
        One float32 profile of length ``min(tile, length)`` per tile.
    """
    _check_axis(length, tile, overlap)
    size = min(tile, length)
    starts = [int(s) for s in starts]
    if not starts:
        raise ValueError("starts must contain at least one tile start")
    if any(s < 0 or s + size > length for s in starts):
        raise ValueError(f"every tile [start, start + {size}) must lie inside [0, {length})")
    if any(b <= a for a, b in pairwise(starts)):
        raise ValueError(f"starts must be strictly increasing, got {starts}")

    windows = []
    for i, start in enumerate(starts):
        window = np.ones(size, dtype=np.float64)
        if i > 0:
            shared = starts[i - 1] + size - start
            if shared > 0:
                window[:shared] *= _ramp(shared)
        if i + 1 < len(starts):
            shared = start + size - starts[i + 1]
            if shared > 0:
                window[size - shared :] *= _ramp(shared)[::-1]
        windows.append(window)

    total = np.zeros(length, dtype=np.float64)
    for start, window in zip(starts, windows):
        total[start : start + size] += window
    if np.any(total <= 0):
        raise ValueError(f"tiles at {starts} (size {size}) do not cover [0, {length})")
    return [
        (window / total[start : start + size]).astype(np.float32)
        for start, window in zip(starts, windows)
    ]


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`: its place in the plane and its blending profiles."""

    y: int
    x: int
    height: int
    width: int
    weight_y: np.ndarray = field(repr=False, compare=False)
    weight_x: np.ndarray = field(repr=False, compare=False)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices selecting this tile in the plane."""
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    def weight(self) -> np.ndarray:
        """2-D blending weight, float32 of shape ``(height, width)``."""
        return np.outer(self.weight_y, self.weight_x).astype(np.float32, copy=False)


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles covering a ``height`` x ``width`` plane; build with :meth:`plan`."""

    height: int
    width: int
    tile_size: int
    tile_overlap: int

    @classmethod
    def plan(cls, height: int, width: int, tile_size: int, tile_overlap: int) -> TileGrid:
        """Validate the settings and return the grid for a ``height`` x ``width`` plane."""
        validate_tiling(tile_size, tile_overlap)
        for name, value in (("height", height), ("width", width)):
            if not _is_int(value):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        return cls(int(height), int(width), int(tile_size), int(tile_overlap))

    @property
    def tile_height(self) -> int:
        """Height of every tile (from :func:`axis_tile` of the plane's height)."""
        return min(self.height, axis_tile(self.height, self.tile_size, self.tile_overlap))

    @property
    def tile_width(self) -> int:
        """Width of every tile (from :func:`axis_tile` of the plane's width)."""
        return min(self.width, axis_tile(self.width, self.tile_size, self.tile_overlap))

    def _axis(self, length: int) -> tuple[list[int], list[np.ndarray]]:
        size = axis_tile(length, self.tile_size, self.tile_overlap)
        starts = axis_starts(length, size, self.tile_overlap)
        return starts, axis_weights(length, starts, size, self.tile_overlap)

    def tiles(self) -> list[Tile]:
        """All tiles in row-major order."""
        ys, wys = self._axis(self.height)
        xs, wxs = self._axis(self.width)
        th, tw = self.tile_height, self.tile_width
        return [Tile(y, x, th, tw, wy, wx) for y, wy in zip(ys, wys) for x, wx in zip(xs, wxs)]

    def __len__(self) -> int:
        return len(self._axis(self.height)[0]) * len(self._axis(self.width)[0])

    def work_ratio(self) -> float:
        """Pixels the network computes (every tile, padded to a multiple of
        :data:`SIZE_MULTIPLE`) per pixel of the plane: 1.0 without overlap or padding."""
        def padded(edge: int) -> int:
            return -(-edge // SIZE_MULTIPLE) * SIZE_MULTIPLE

        return len(self) * padded(self.tile_height) * padded(self.tile_width) / (
            self.height * self.width)

"""Tests for the tile layout and blending weights."""

from itertools import pairwise

import numpy as np
import pytest

from napari_mprnet.engine.tiling import (
    Tile,
    TileGrid,
    axis_starts,
    axis_tile,
    axis_weights,
    validate_tiling,
)

AXIS_CASES = [
    (length, tile, overlap)
    for length in (1, 7, 15, 16, 17, 31, 32, 33, 64, 65, 100, 129, 257)
    for tile in (16, 17, 32, 64)
    for overlap in (0, 1, 4, 8, tile // 2, tile - 1)
    if overlap < tile
]


@pytest.mark.parametrize(
    "tile_size, tile_overlap, error",
    [
        (15, 0, ValueError),
        (0, 0, ValueError),
        (-32, 0, ValueError),
        (32, -1, ValueError),
        (32, 32, ValueError),
        (32, 40, ValueError),
        (32.0, 8, TypeError),
        (32, 8.0, TypeError),
        ("32", 8, TypeError),
        (True, 0, TypeError),
        (32, False, TypeError),
        (None, 8, TypeError),
    ],
)
def test_validate_tiling_rejects(tile_size, tile_overlap, error):
    with pytest.raises(error, match="tile_"):
        validate_tiling(tile_size, tile_overlap)


@pytest.mark.parametrize(
    "tile_size, tile_overlap", [(16, 0), (16, 15), (256, 32), (np.int64(64), 8)]
)
def test_validate_tiling_accepts(tile_size, tile_overlap):
    validate_tiling(tile_size, tile_overlap)


def test_validation_messages_say_what_to_do():
    with pytest.raises(ValueError, match="at least 16"):
        validate_tiling(8, 0)
    with pytest.raises(ValueError, match="smaller than tile_size"):
        validate_tiling(32, 32)


@pytest.mark.parametrize("length, tile, overlap", AXIS_CASES)
def test_axis_starts_cover_axis(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0
    assert starts[-1] == length - size
    assert all(b > a for a, b in pairwise(starts))
    # consecutive tiles touch or overlap by at least the requested overlap
    assert all(b - a <= tile - overlap for a, b in pairwise(starts))
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all()
    if length <= tile:
        expected = 1
    else:
        expected = 1 + int(np.ceil((length - tile) / (tile - overlap)))
    assert len(starts) == expected


def test_axis_starts_examples():
    assert axis_starts(10, 16, 4) == [0]
    assert axis_starts(16, 16, 4) == [0]
    assert axis_starts(28, 16, 4) == [0, 12]
    assert axis_starts(30, 16, 4) == [0, 12, 14]
    assert axis_starts(32, 16, 0) == [0, 16]


@pytest.mark.parametrize(
    "length, tile, overlap", [(0, 16, 0), (10, 0, 0), (10, 16, 16), (10, 16, -1)]
)
def test_axis_starts_rejects(length, tile, overlap):
    with pytest.raises(ValueError):
        axis_starts(length, tile, overlap)


@pytest.mark.parametrize("length, tile, overlap", AXIS_CASES)
def test_axis_weights_partition_unity_and_are_smooth(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    profiles = axis_weights(length, starts, tile, overlap)
    size = min(tile, length)
    assert len(profiles) == len(starts)
    total = np.zeros(length, np.float64)
    count = np.zeros(length, int)
    for s, p in zip(starts, profiles):
        assert p.dtype == np.float32
        assert p.shape == (size,)
        assert np.all(p >= 0)
        total[s : s + size] += p
        count[s : s + size] += 1
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if overlap > 0 and size > 1:
        for p in profiles:
            assert np.abs(np.diff(p.astype(np.float64))).max() <= 4.0 / overlap
    # positions covered by a single tile (e.g. at the image borders) get full weight
    for s, p in zip(starts, profiles):
        single = count[s : s + size] == 1
        np.testing.assert_array_equal(p[single], 1.0)


def test_axis_weights_flat_at_borders():
    starts = axis_starts(100, 32, 8)
    profiles = axis_weights(100, starts, 32, 8)
    assert profiles[0][0] == 1.0 and profiles[-1][-1] == 1.0
    # the raised-cosine ramps are monotonic inside the overlap
    first = profiles[0]
    assert np.all(np.diff(first[-8:]) < 0)
    assert np.all(np.diff(profiles[1][:8]) > 0)


def test_axis_weights_rejects_bad_starts():
    with pytest.raises(ValueError):
        axis_weights(50, [0, 40], 16, 4)  # tile sticks out of the axis
    with pytest.raises(ValueError):
        axis_weights(50, [0, 34, 20], 16, 4)  # not increasing
    with pytest.raises(ValueError):
        axis_weights(50, [0, 34], 16, 4)  # gap between tiles
    with pytest.raises(ValueError):
        axis_weights(50, [], 16, 4)


GRID_CASES = [
    (5, 7, 16, 4),
    (16, 16, 16, 0),
    (40, 23, 16, 4),
    (64, 64, 32, 8),
    (100, 37, 32, 16),
    (81, 130, 48, 12),
    (90, 90, 32, 31),
    (20, 24, 40, 32),  # a plane smaller than the overlap: one tile
]


@pytest.mark.parametrize("height, width, tile_size, overlap", GRID_CASES)
def test_grid_weights_sum_to_one(height, width, tile_size, overlap):
    grid = TileGrid.plan(height, width, tile_size, overlap)
    tiles = grid.tiles()
    assert len(tiles) == len(grid)
    acc = np.zeros((height, width), np.float64)
    for t in tiles:
        w = t.weight()
        assert w.dtype == np.float32
        assert w.shape == (t.height, t.width) == (grid.tile_height, grid.tile_width)
        assert t.height <= min(tile_size, height) and t.width <= min(tile_size, width)
        assert 0 <= t.y and t.y + t.height <= height
        assert 0 <= t.x and t.x + t.width <= width
        acc[t.slices] += w
    np.testing.assert_allclose(acc, np.ones_like(acc), atol=1e-6)
    # in-place float32 accumulation (as the runner does) only adds rounding error
    acc32 = np.zeros((height, width), np.float32)
    for t in tiles:
        acc32[t.slices] += t.weight()
    np.testing.assert_allclose(acc32, np.ones_like(acc32), atol=1e-5)


def test_grid_tiles_row_major_and_count():
    grid = TileGrid.plan(40, 70, 32, 8)
    tiles = grid.tiles()
    # balanced: 40 px in two 24 px tiles (not two of 32), 70 px in three of 32
    assert (grid.tile_height, grid.tile_width) == (24, 32)
    ys, xs = axis_starts(40, 24, 8), axis_starts(70, 32, 8)
    assert len(grid) == len(ys) * len(xs) == 6
    assert [(t.y, t.x) for t in tiles] == [(y, x) for y in ys for x in xs]
    assert tiles[0].slices == (slice(0, 24), slice(0, 32))
    assert tiles[-1].slices == (slice(16, 40), slice(38, 70))


@pytest.mark.parametrize("height, width, tile_size, overlap", GRID_CASES)
def test_reassembly_reproduces_image(height, width, tile_size, overlap):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([np.full((height, width), 0.7, np.float32), 0.5 * yy - 0.25 * xx + 3], -1)
    out = np.zeros_like(image)
    for t in TileGrid.plan(height, width, tile_size, overlap).tiles():
        out[t.slices] += t.weight()[..., None] * image[t.slices]
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-4)


def test_plan_validates():
    with pytest.raises(ValueError):
        TileGrid.plan(64, 64, 8, 0)
    with pytest.raises(ValueError):
        TileGrid.plan(0, 64, 32, 8)
    with pytest.raises(TypeError):
        TileGrid.plan(64.0, 64, 32, 8)


def test_tile_equality_ignores_weight_arrays():
    w = np.ones(4, np.float32)
    assert Tile(0, 0, 4, 4, w, w) == Tile(0, 0, 4, 4, w.copy(), w.copy())
    assert Tile(0, 0, 4, 4, w, w).weight().shape == (4, 4)


# ---------------------------------------------------------------- balanced tiles


def _axis_work(length, edge, overlap):
    """Pixels computed along one axis with tiles of ``edge`` (padded to a multiple of 8)."""
    size = min(edge, length)
    return len(axis_starts(length, edge, overlap)) * (-(-size // 8) * 8)


@pytest.mark.parametrize("length", [5, 20, 40, 100, 257, 500, 768, 1000, 1024, 2048, 3001])
@pytest.mark.parametrize("tile, overlap", [(64, 8), (256, 32), (384, 32), (544, 32), (100, 20)])
def test_axis_tile_computes_as_little_as_any_edge_allowed(length, tile, overlap):
    edge = axis_tile(length, tile, overlap)
    assert overlap < edge <= tile
    best = min(_axis_work(length, e, overlap) for e in range(1, tile + 1) if e > overlap)
    assert _axis_work(length, edge, overlap) <= best
    starts = axis_starts(length, edge, overlap)
    assert starts[-1] + min(edge, length) == length
    assert all(b - a <= edge - overlap for a, b in pairwise(starts))  # overlaps kept


@pytest.mark.parametrize("size, tile, before, most", [
    (1024, 384, (3 * 384 / 1024) ** 2, 1.17),   # was 1.27x
    (768, 256, (4 * 256 / 768) ** 2, 1.27),     # was 1.78x
    (2048, 384, (6 * 384 / 2048) ** 2, 1.17),
])
def test_balanced_grid_wastes_less_than_full_tiles(size, tile, before, most):
    grid = TileGrid.plan(size, size, tile, 32)
    assert len(grid) == len(axis_starts(size, tile, 32)) ** 2  # no more tiles than before
    assert grid.work_ratio() <= most < before


def test_work_ratio_counts_padding_to_multiples_of_8():
    assert TileGrid.plan(64, 64, 64, 8).work_ratio() == 1.0
    assert TileGrid.plan(60, 60, 64, 8).work_ratio() == (64 / 60) ** 2


def test_tiled_identity_network_returns_its_input_exactly():
    """An identity network through the runner's grid and blending gives back the input, for
    balanced tiles of every shape (tiled == whole)."""
    import torch

    from napari_mprnet.engine.runner import TiledRunner
    from napari_mprnet.model import MPRNet, MPRNetConfig

    class Identity(MPRNet):
        def forward(self, x, split_patches=None):
            return [x, x, x]

    net = Identity(MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1))
    planes = np.random.default_rng(0).random((2, 100, 130, 3), dtype=np.float32)
    for tile, overlap in [(48, 8), (64, 20), (40, 16)]:
        runner = TiledRunner(net, "cpu", precision="fp32", tile_size=tile,
                             tile_overlap=overlap, backend="eager")
        for out in runner.run(planes, stages=True):
            np.testing.assert_allclose(out, planes, rtol=0, atol=2e-6)
    assert torch.get_num_threads() >= 1

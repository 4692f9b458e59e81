"""Lazy restoration of dask / zarr arrays: laziness, seam-free Y/X chunking, zarr streaming."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mprnet import restore
from napari_mprnet.engine.runner import TiledRunner
from napari_mprnet.engine.tiling import axis_starts, axis_tile
from napari_mprnet.scale import lazy
from napari_mprnet.scale.lazy import plan_axis, restore_dask

da = pytest.importorskip("dask.array")

FAST = {"tile_size": 32, "tile_overlap": 8, "device": "cpu"}


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.standard_normal(shape), axis=-1), axis=-2)
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    return (0.8 * smooth + 0.2 * rng.random(shape)).astype(np.float32)


@pytest.fixture
def count_forwards(monkeypatch):
    calls = []
    original = TiledRunner.forward_tiles

    def counting(self, tiles, stages):
        calls.append(len(tiles))
        return original(self, tiles, stages)

    monkeypatch.setattr(TiledRunner, "forward_tiles", counting)
    return calls


@pytest.mark.parametrize("length", [1, 7, 32, 33, 56, 100, 150, 257, 1000])
@pytest.mark.parametrize("chunk", [None, 1, 40, 64, 100])
def test_chunk_plan_aligns_to_tiles_and_covers_them(length, chunk):
    tile, overlap = 32, 8
    plan = plan_axis(length, tile, overlap, chunk)
    layout = axis_tile(length, tile, overlap)  # the in-memory grid's (balanced) tiles
    stride = layout - overlap
    assert plan.edge == min(layout, length)
    assert plan.bounds[0] == 0 and plan.bounds[-1] == length
    assert all(b % stride == 0 for b in plan.bounds[1:-1])  # chunk edges on tile starts
    assert all(c >= plan.edge for c in plan.chunks)  # no sliver chunks
    assert all(c >= max(plan.depth) for c in plan.chunks) or len(plan.chunks) == 1
    size = plan.edge
    seen = []
    for i in range(len(plan.chunks)):
        touching = plan.tiles_touching(i)
        assert touching
        for start, _ in touching:  # every touching tile lies inside the chunk's block
            assert plan.block_start(i) <= start and start + size <= plan.block_stop(i)
        seen += [s for s, _ in touching]
    assert set(seen) == set(axis_starts(length, layout, overlap))


def test_auto_chunking_keeps_small_planes_whole_and_cuts_big_ones():
    assert plan_axis(3000, 256, 32, "auto").chunks == (3000,)
    big = plan_axis(16384, 256, 32, "auto")
    assert big.chunks[:4] == (18 * 224,) * 4 and big.chunks[-1] >= 256
    assert big.depth == (224, 32)  # one stride before, one overlap after
    with pytest.raises(ValueError, match="chunk_size"):
        plan_axis(100, 32, 8, 0)


def test_lazy_in_lazy_out_nothing_runs_before_compute(tiny_model, count_forwards):
    data = da.from_array(_image((2, 60, 70)), chunks=(1, 30, 35))
    out = restore(data, model=tiny_model, chunk_size=24, **FAST)
    stages = restore(data, model=tiny_model, chunk_size=24, stages=True, **FAST)
    assert isinstance(out, da.Array) and out.shape == data.shape and out.dtype == np.float32
    assert len(stages) == 3 and all(isinstance(s, da.Array) for s in stages)
    assert count_forwards == []
    out[0, :10, :10].compute()
    assert 0 < len(count_forwards) < 2 * 9  # only the blocks needed for the corner ran


@pytest.mark.parametrize("chunk_size", [24, 50, None])
def test_chunked_result_equals_whole_plane_result_exactly(tiny_model, chunk_size):
    image = _image((2, 90, 101), seed=1)
    expected = restore(image, model=tiny_model, **FAST)
    lazy_out = restore(da.from_array(image, chunks=(1, 37, 41)), model=tiny_model,
                       chunk_size=chunk_size, **FAST)
    if chunk_size is not None:
        assert len(lazy_out.chunks[1]) > 1 and len(lazy_out.chunks[2]) > 1
    np.testing.assert_array_equal(lazy_out.compute(), expected)


def test_chunked_two_band_blend_equals_whole_plane_exactly(tiny_model, monkeypatch):
    # the untrained network gets weights 0 and 0: chosen ones instead, with an impulse model
    # (a camera's: variance 1e-6 I + 1e-4; robust 1e-4) that finds the hot pixels planted
    # on chunk borders too
    plane = [0.9, 0.1, 1e-6, 1e-4, 0.0, 0.0, 1e-4]

    def chosen(forward, crops, group=1, bands=True, noise=None, with_impulses=False):
        yield 0
        return np.tile(plane, (len(crops) // group, 1))

    monkeypatch.setattr("napari_mprnet.engine.pipeline.iter_probe_weights", chosen)
    image = _image((2, 90, 101), seed=4)
    hot = (np.array([0, 1, 1, 0]), np.array([23, 24, 47, 60]), np.array([24, 40, 23, 81]))
    image[hot] += 0.8  # next to the 24-px chunk edges, and away from them
    expected = restore(image, model=tiny_model, **FAST)
    lazy_out = restore(da.from_array(image, chunks=(1, 37, 41)), model=tiny_model,
                       chunk_size=24, **FAST)
    np.testing.assert_array_equal(lazy_out.compute(), expected)
    network = restore(image, model=tiny_model, strength=1.0, **FAST)
    plane[2:] = [np.nan] * 5  # no impulse model: the blend alone
    blend_only = restore(image, model=tiny_model, **FAST)
    assert np.all(blend_only[hot] != network[hot])
    # the hot pixels the network moved (by over 5 sd) take its output, chunked or not
    assert np.count_nonzero(expected[hot] == network[hot]) >= 2
    one_weight = restore(image, model=tiny_model, strength=0.9, **FAST)  # w_hi alone
    assert np.abs(expected[0] - one_weight[0]).max() > 1e-3  # the low band weighs apart


def test_rgba_uint8_stages_chunked_equal_whole_plane(tiny_model):
    rng = np.random.default_rng(2)
    image = (rng.random((70, 66, 4)) * 255).astype(np.uint8)
    kwargs = {"model": tiny_model, "stages": True, "output_dtype": np.uint8, **FAST}
    expected = restore(image, **kwargs)
    lazy_out = restore(da.from_array(image, chunks=(20, 20, 2)), chunk_size=24, **kwargs)
    assert lazy_out[0].chunks[2] == (4,)  # RGB samples are never split
    for got, want in zip(lazy_out, expected):
        np.testing.assert_array_equal(got.compute(), want)


def test_single_block_sees_at_most_chunk_plus_halo(tiny_model, monkeypatch):
    seen = []
    original = lazy.restore_block

    def recording(block, *arrays, spec, block_info=None, **shared):
        seen.append(block.shape)
        return original(block, *arrays, spec=spec, block_info=block_info, **shared)

    monkeypatch.setattr(lazy, "restore_block", recording)
    image = _image((150, 170), seed=3)
    out = restore_dask(da.from_array(image, chunks=(50, 50)), model=tiny_model,
                       chunk_size=48, normalize="none", **FAST)
    result = out.compute(scheduler="sync")
    yplan, xplan = plan_axis(150, 32, 8, 48), plan_axis(170, 32, 8, 48)
    bound = (max(yplan.chunks) + sum(yplan.depth)) * (max(xplan.chunks) + sum(xplan.depth))
    assert len(seen) == len(yplan.chunks) * len(xplan.chunks) > 4
    assert max(h * w for h, w in seen) <= bound < image.size / 2
    np.testing.assert_array_equal(result, restore(image, model=tiny_model, normalize="none",
                                                  **FAST))


def test_normalisation_is_fitted_once_and_shared(tiny_model):
    image = (_image((64, 80), seed=4) * 4000 + 100).astype(np.uint16)
    image[:, :40] //= 4  # dark left half: per-chunk fits would disagree
    expected = restore(image, model=tiny_model, **FAST)
    got = restore(da.from_array(image, chunks=(32, 40)), model=tiny_model, chunk_size=24,
                  **FAST).compute()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_zarr_round_trip_streams_chunk_by_chunk(tiny_model, tmp_path):
    zarr = pytest.importorskip("zarr")
    from napari_mprnet.io.zarr import is_zarr_path, open_zarr, write_zarr

    image = _image((2, 100, 90), seed=5)
    source = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape,
                             chunks=(1, 32, 32), dtype="f4")
    source[:] = image
    source.attrs["axes"] = "ZYX"
    assert is_zarr_path(tmp_path / "in.zarr") and not is_zarr_path(tmp_path)
    data, axes = open_zarr(tmp_path / "in.zarr")
    assert axes == "ZYX" and isinstance(data, da.Array)
    outputs = restore(data, model=tiny_model, chunk_size=24, stages=True, **FAST)
    target = tmp_path / "out.zarr"
    write_zarr(outputs, [target, tmp_path / "s2.zarr", tmp_path / "s1.zarr"], axes,
               compute_kwargs={"scheduler": "sync"})
    written = zarr.open_array(str(target), mode="r")
    assert written.attrs["axes"] == "ZYX"
    assert written.chunks[1:] == (outputs[0].chunks[1][0], outputs[0].chunks[2][0])
    expected = restore(image, model=tiny_model, **FAST)
    np.testing.assert_array_equal(written[:], expected)
    with pytest.raises(FileExistsError):
        write_zarr([outputs[0]], [target])


def test_ome_zarr_group_is_read_with_its_axes(tmp_path):
    zarr = pytest.importorskip("zarr")
    from napari_mprnet.io.zarr import open_zarr

    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}],
                                   "axes": [{"name": "c", "type": "channel"},
                                            {"name": "y"}, {"name": "x"}]}]
    group.create_array("0", shape=(2, 20, 30), chunks=(1, 10, 10), dtype="u2")
    data, axes = open_zarr(tmp_path / "img.ome.zarr")
    assert axes == "CYX" and data.shape == (2, 20, 30)


def test_dask_backed_napari_layer_goes_through_the_lazy_path(tiny_model, monkeypatch):
    pytest.importorskip("napari")
    from napari.layers import Image

    from napari_mprnet.scale import lazy

    calls = []
    original = lazy.restore_dask

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(lazy, "restore_dask", spy)
    layer = Image(da.from_array(_image((40, 48)), chunks=(20, 24)), name="big")
    out = restore(layer, model=tiny_model, **FAST)
    assert len(calls) == 1 and isinstance(out.data, da.Array)  # napari computes only views


@pytest.mark.parametrize("noise", [15.0, (0.2, 60.0)])
def test_chunked_result_with_a_given_noise_equals_whole_plane_exactly(tiny_model, monkeypatch,
                                                                      noise):
    from scipy import ndimage

    def smoother(self, batch):  # the probe window through a smoother: weights inside (0, 1)
        return ndimage.gaussian_filter(batch, (0, 1.2, 1.2, 0)).astype(np.float32)

    monkeypatch.setattr(TiledRunner, "forward_window", smoother)
    image = _image((2, 90, 101), seed=5) * 1000 + 50
    kwargs = {"model": tiny_model, "normalize": "percentile", **FAST}
    expected = restore(image, noise=noise, **kwargs)
    lazy_out = restore(da.from_array(image, chunks=(1, 37, 41)), chunk_size=24, noise=noise,
                       **kwargs)
    np.testing.assert_array_equal(lazy_out.compute(), expected)
    # the given level reached the blocks: the estimated run differs
    assert np.abs(restore(image, **kwargs) - expected).max() > 1.0

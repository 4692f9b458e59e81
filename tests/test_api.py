"""restore() and iter_restore(): axes, dtypes, tiling, stages, cancel and bad input."""

import numpy as np
import pytest
import torch

from napari_mprnet import iter_restore, restore
from napari_mprnet.model import MPRNet, MPRNetConfig

FAST = {"device": "cpu", "tile_overlap": 8}


@pytest.fixture
def identity_model(tiny_model):
    """A network whose final output equals its input exactly (stage-3 residual zeroed)."""
    with torch.no_grad():
        tiny_model.tail.weight.zero_()
    return tiny_model


def _smooth(shape, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]] / max(shape)
    img = 0.5 + 0.3 * np.sin(6 * x + rng.uniform(0, 3)) * np.cos(4 * y)
    return img.astype(np.float32)


def test_identity_network_reproduces_input_exactly_through_tiles(identity_model):
    image = np.random.default_rng(0).random((150, 110), dtype=np.float32)
    out = restore(image, model=identity_model, tile_size=48, **FAST)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, image, atol=2e-6)  # blend weights sum to one everywhere


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64])
def test_intensities_are_mapped_back_to_the_input_scale(identity_model, dtype):
    rng = np.random.default_rng(1)
    top = 255 if dtype == np.uint8 else 4000
    image = (rng.random((40, 56)) * top).astype(dtype)
    out = restore(image, model=identity_model, tile_size=32, **FAST)
    np.testing.assert_allclose(out, image.astype(np.float32), rtol=3e-5, atol=1e-3)
    back = restore(image, model=identity_model, tile_size=32, output_dtype=image.dtype, **FAST)
    assert back.dtype == image.dtype
    if np.issubdtype(dtype, np.integer):
        np.testing.assert_array_equal(back, image)


def test_output_dtype_clips(identity_model, tiny_model):
    image = np.full((24, 24), 250, np.uint8)
    image[0, 0] = 0
    out = restore(image, model=identity_model, output_dtype="uint8", tile_size=32, **FAST)
    assert out.dtype == np.uint8 and out.max() <= 255


def test_float_in_unit_range_is_not_rescaled(tiny_model):
    image = _smooth((48, 48)) * 0.2  # values in [0.04, 0.16]: must not be stretched
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(image)[None, None].expand(1, 3, -1, -1),
                              split_patches=False)[0]  # restore() runs its tiles unsplit
    out = restore(image, model=tiny_model, tile_size=64, precision="fp32", strength=1.0, **FAST)
    np.testing.assert_allclose(out, expected.mean(1)[0].numpy(), atol=1e-5)


def _box_filter_tiles(self, tiles, stages):
    """A local stand-in for the network: a 3x3 mean with edge padding, per tile."""
    padded = np.pad(tiles, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = tiles.shape[1:3]
    out = sum(padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9
    return [out.astype(np.float32)] * (3 if stages else 1)


def test_blending_leaves_no_seams_for_a_local_operator(monkeypatch, tiny_model):
    from napari_mprnet.engine.runner import TiledRunner

    monkeypatch.setattr(TiledRunner, "forward_tiles", _box_filter_tiles)
    image = np.random.default_rng(5).random((150, 130), dtype=np.float32)
    whole = restore(image, model=tiny_model, tile_size=160, **FAST)
    tiled = restore(image, model=tiny_model, tile_size=48, tile_overlap=16, device="cpu")
    # tile borders inside the image fall in ramps whose weight there is ~0: no seam
    assert np.abs(tiled - whole).max() < 2e-3


def test_tiled_mprnet_stays_close_to_a_single_tile(tiny_model):
    image = _smooth((192, 192))
    single = restore(image, model=tiny_model, tile_size=192, **FAST)
    tiled = restore(image, model=tiny_model, tile_size=64, tile_overlap=24, device="cpu")
    # channel attention pools over the whole input, so tiles cannot match exactly; an
    # untrained network also differs near its own patch splits, but most pixels agree
    assert np.median(np.abs(tiled - single)) < 0.01


def test_grey_runs_through_rgb_network_by_replication(tiny_model):
    image = _smooth((32, 40))
    rgb = np.repeat(image[..., None], 3, axis=-1)
    grey_out = restore(image, model=tiny_model, tile_size=64, **FAST)
    rgb_out = restore(rgb, model=tiny_model, tile_size=64, **FAST)
    assert rgb_out.shape == (32, 40, 3)
    np.testing.assert_allclose(grey_out, rgb_out.mean(-1), atol=1e-5)


def test_rgba_keeps_alpha_untouched(tiny_model):
    rng = np.random.default_rng(2)
    image = (rng.random((32, 32, 4)) * 255).astype(np.uint8)
    out = restore(image, model=tiny_model, tile_size=32, **FAST)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[..., 3], image[..., 3].astype(np.float32))


def test_stack_is_restored_plane_by_plane(tiny_model):
    planes = [_smooth((32, 32), seed=s) for s in range(3)]
    stack = np.stack(planes)
    out = restore(stack, model=tiny_model, tile_size=32, **FAST)
    for plane, result in zip(planes, out):
        np.testing.assert_allclose(result, restore(plane, model=tiny_model, tile_size=32, **FAST),
                                   atol=1e-6)


def test_channels_are_restored_one_by_one_and_axes_override(tiny_model):
    cyx = np.stack([_smooth((32, 32), seed=s) for s in range(2)])
    out = restore(cyx, model=tiny_model, axes="CYX", tile_size=32, **FAST)
    yxc = np.moveaxis(cyx, 0, -1)  # channels last, 2 of them: not RGB
    out2 = restore(yxc, model=tiny_model, axes="YXC", tile_size=32, **FAST)
    np.testing.assert_allclose(np.moveaxis(out2, -1, 0), out, atol=1e-6)
    tcyx = np.stack([cyx, cyx])
    out4 = restore(tcyx, model=tiny_model, axes="TCYX", tile_size=32, **FAST)
    np.testing.assert_allclose(out4[1], out, atol=1e-6)


def test_rgb_through_one_channel_network():
    torch.manual_seed(0)
    grey_net = MPRNet(MPRNetConfig(in_c=1, out_c=1, n_feat=8, scale_unetfeats=4,
                                   scale_orsnetfeats=4, num_cab=1)).eval()
    rgb = np.stack([_smooth((32, 32), seed=s) for s in range(3)], axis=-1)
    out = restore(rgb, model=grey_net, tile_size=32, **FAST)
    red = restore(rgb[..., 0], model=grey_net, tile_size=32, **FAST)
    np.testing.assert_allclose(out[..., 0], red, atol=1e-6)


def test_stages_returns_three_images(tiny_model):
    image = _smooth((40, 40))
    final, stage2, stage1 = restore(image, model=tiny_model, stages=True, tile_size=64, **FAST)
    assert final.shape == stage2.shape == stage1.shape == image.shape
    assert not np.allclose(stage1, final)
    np.testing.assert_allclose(final, restore(image, model=tiny_model, tile_size=64, **FAST))


def test_odd_and_tiny_sizes_are_padded(tiny_model):
    for shape in [(17, 23), (5, 9), (100, 3)]:
        out = restore(np.random.rand(*shape).astype(np.float32), model=tiny_model, **FAST)
        assert out.shape == shape and np.isfinite(out).all()


def test_progress_callback_and_generator_cancel(tiny_model):
    image = np.random.default_rng(3).random((96, 96), dtype=np.float32)
    before = image.copy()
    calls = []
    restore(image, model=tiny_model, tile_size=32, progress=lambda d, t: calls.append((d, t)),
            **FAST)
    assert calls[-1][0] == calls[-1][1] and len(calls) == calls[-1][1] > 1
    gen = iter_restore(image, model=tiny_model, tile_size=32, **FAST)
    first = next(gen)
    assert first.done == 1 and first.total > 1
    gen.close()  # cancelled: nothing is returned, the input untouched
    np.testing.assert_array_equal(image, before)


def test_bundled_default_is_used_without_model():
    out = restore(np.random.rand(24, 24).astype(np.float32), task="derain", device="cpu")
    assert out.shape == (24, 24)


@pytest.mark.parametrize(
    "data, error, match",
    [
        (np.zeros((0, 10)), ValueError, "empty"),
        (np.zeros(10), ValueError, "at least 2 dimensions"),
        (np.zeros((4, 4), dtype=object), TypeError, "dtype"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "dtype"),
        (np.zeros((8, 8), dtype=bool), TypeError, "dtype"),
        (np.zeros((8, 8), dtype=complex), TypeError, "dtype"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), ValueError, "NaN"),
        (np.array([[np.inf, 1.0], [0.0, 1.0]]), ValueError, "infinite"),
        ("image.tif", TypeError, "not a path"),
    ],
)
def test_bad_input_is_refused_clearly(tiny_model, data, error, match):
    with pytest.raises(error, match=match):
        restore(data, model=tiny_model, **FAST)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"axes": "QYX"}, ValueError, "unknown letter"),
        ({"axes": "YX"}, ValueError, "length|dimensions"),
        ({"tile_size": 8}, ValueError, "16"),
        ({"tile_size": 32, "tile_overlap": 32}, ValueError, "smaller than"),
        ({"tile_overlap": -1}, ValueError, ">= 0"),
        ({"precision": "fp8"}, ValueError, "precision"),
        ({"device": "tpu"}, ValueError, "device"),
        ({"task": "sharpen"}, ValueError, "unknown task"),
        ({"normalize": "zscore"}, ValueError, "normalize"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_options_are_refused_clearly(tiny_model, kwargs, error, match):
    options = {"model": tiny_model, "device": "cpu", **kwargs}
    with pytest.raises(error, match=match):
        restore(np.zeros((3, 16, 16), np.float32), **options)


def test_bad_model_argument(tmp_path):
    with pytest.raises(TypeError, match="model"):
        restore(np.zeros((16, 16), np.float32), model=3.5)
    with pytest.raises(FileNotFoundError):
        restore(np.zeros((16, 16), np.float32), model=tmp_path / "missing.pth")


def test_cpu_bf16_precision_is_close_to_fp32(tiny_model):
    image = _smooth((32, 32))
    fp32 = restore(image, model=tiny_model, tile_size=32, **FAST)
    bf16 = restore(image, model=tiny_model, tile_size=32, precision="bf16", **FAST)
    assert np.abs(bf16 - fp32).max() < 0.05


def test_dask_input_is_lazy_and_matches_numpy(tiny_model):
    da = pytest.importorskip("dask.array")
    stack = np.stack([_smooth((40, 48), seed=s) for s in range(3)])
    lazy_in = da.from_array(stack, chunks=(1, 20, 24))
    calls = []
    out = restore(lazy_in, model=tiny_model, tile_size=32,
                  progress=lambda d, t: calls.append(d), **FAST)
    assert isinstance(out, da.Array) and out.shape == stack.shape and not calls
    expected = restore(stack, model=tiny_model, tile_size=32, **FAST)
    np.testing.assert_allclose(out.compute(), expected, atol=1e-6)
    stages = restore(lazy_in, model=tiny_model, tile_size=32, stages=True, **FAST)
    assert len(stages) == 3 and all(isinstance(s, da.Array) for s in stages)


def test_napari_layer_in_layer_out(tiny_model):
    from napari.layers import Image, Points

    data = (np.random.default_rng(4).random((40, 40)) * 255).astype(np.uint8)
    layer = Image(data.copy(), name="cells", scale=(0.5, 0.25), translate=(3, 4))
    out = restore(layer, model=tiny_model, tile_size=32, **FAST)
    assert isinstance(out, Image) and out.name == "cells (denoised)"
    np.testing.assert_array_equal(out.scale, layer.scale)
    np.testing.assert_array_equal(out.translate, layer.translate)
    np.testing.assert_array_equal(layer.data, data)  # input untouched
    staged = restore(layer, task="deblur", model=tiny_model, stages=True, tile_size=32, **FAST)
    assert [s.name for s in staged] == ["cells (deblurred)", "cells (deblurred, stage 2)",
                                        "cells (deblurred, stage 1)"]
    with pytest.raises(TypeError, match="Image layer"):
        restore(Points(np.zeros((2, 2))), model=tiny_model, **FAST)


def test_result_layers_are_displayed_like_the_input(tiny_model):
    """Results are on the input's intensity scale: they get its contrast limits, colormap
    and gamma (not limits fitted to their own, possibly overshooting, values)."""
    from napari.layers import Image

    rng = np.random.default_rng(5)
    grey = Image((rng.random((40, 40)) * 255).astype(np.uint8), name="g", colormap="magma",
                 contrast_limits=(10, 200), gamma=0.8)
    for out in restore(grey, model=tiny_model, tile_size=32, stages=True, **FAST):
        assert tuple(out.contrast_limits) == (10, 200) and out.gamma == pytest.approx(0.8)
        assert out.colormap.name == "magma"
    rgb = Image((rng.random((40, 40, 3)) * 255).astype(np.uint8), name="c", rgb=True,
                contrast_limits=(0, 255))
    out = restore(rgb, model=tiny_model, tile_size=32, **FAST)
    assert out.rgb and tuple(out.contrast_limits) == (0, 255)

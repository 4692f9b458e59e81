"""bioimage.io's own tools on our packages: bioimageio.spec validation, bioimageio.core's
test and predict (whole image and blockwise) against restore(), and the packaged per-image
percentiles against the engine's."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from bioimageio_support import PERCENTILE, npy, read_rdf, tiny
from bioimageio_support import percentile_package as make_percentile_package
from napari_mprnet import bioimageio as bio
from napari_mprnet.bioimageio import export_bioimageio
from napari_mprnet.model import MPRNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def percentile_package(tmp_path_factory):
    return make_percentile_package(tmp_path_factory.mktemp("bio") / "tiny.zip")


def test_spec_validation(percentile_package):
    spec = pytest.importorskip("bioimageio.spec")
    from bioimageio.spec.model.v0_5 import ModelDescr

    descr = spec.load_description(percentile_package)
    if not isinstance(descr, ModelDescr):
        summary = descr.validation_summary
        print(summary.format() if hasattr(summary, "format") else summary)
    assert isinstance(descr, ModelDescr), type(descr).__name__
    assert descr.validation_summary.status in ("passed", "valid-format")


def test_core_reproduces_test_outputs(percentile_package):
    """bioimageio.core builds the model from the package and checks the test tensors."""
    pytest.importorskip("bioimageio.core")
    from bioimageio.core import test_model

    summary = test_model(percentile_package, weight_format="pytorch_state_dict",
                         stop_early=True)
    if summary.status != "passed":
        print(summary.format())
    assert summary.status == "passed"


def _core_predict(package, image, blocks=None) -> np.ndarray:
    from bioimageio.core import predict

    sample = predict(model=str(package), inputs=image[None, None],
                     **({} if blocks is None else {"blocksize_parameter": blocks}))
    return np.asarray(sample.members["output0"].data)[0, 0]


def test_core_predict_gives_restores_result_for_any_intensity_range(percentile_package):
    """bioimage.io's own predictor on raw uint16 input gives restore()'s result within 1% of
    the output range (edges included: the halo's mirror padding is taken off inside), also
    for an image of a very different range than the test input (x4+500): the packaged
    network normalises each image by its own percentiles."""
    pytest.importorskip("bioimageio.core")
    from napari_mprnet import restore

    with zipfile.ZipFile(percentile_package) as archive:
        x = npy(archive, "test_input.npy")[0, 0]
    image = np.tile(x, (2, 2))[:, :-16]  # larger, not square
    shifted = (image.astype(np.float64) * 4 + 500).astype(np.uint16)
    model = tiny(PERCENTILE)
    wholes = {}
    for label, raw in (("test input", x), ("larger", image), ("x4+500", shifted)):
        # the network's output itself: the package does not apply strength="auto"'s blend
        ours = restore(raw, "denoise", model, device="cpu", strength=1.0)
        wholes[label] = whole = _core_predict(percentile_package, raw)
        assert whole.shape == raw.shape, label
        span = float(ours.max() - ours.min())
        assert np.abs(whole - ours).max() <= 0.01 * span, label
    # the map follows the image: x4+500 in gives the same result x4+500 out
    span = float(np.ptp(wholes["x4+500"]))
    assert np.abs(wholes["x4+500"] - (wholes["larger"] * 4 + 500)).max() <= 1e-4 * span


def test_core_blockwise_prediction(percentile_package):
    """Blockwise prediction with bioimage.io's smallest blocks (the declared minimum, its
    halo included): each block is normalised by its own percentiles, so it too follows the
    image's range exactly; it differs from whole-image prediction only by the network's own
    block effects (MPRNet splits each block in quarters and halves and its channel attention
    averages over the block): small on average, larger along the blocks' centre lines (the
    bundled models' numbers: benchmarks/bench_bioimageio_blocks.py, docs/bioimageio.md)."""
    pytest.importorskip("bioimageio.core")
    with zipfile.ZipFile(percentile_package) as archive:
        x = npy(archive, "test_input.npy")[0, 0]
    image = np.tile(x, (2, 2))[:, :-16]
    shifted = (image.astype(np.float64) * 4 + 500).astype(np.uint16)
    whole = _core_predict(percentile_package, image)
    blockwise = _core_predict(percentile_package, image, blocks=0)
    assert blockwise.shape == image.shape and np.all(np.isfinite(blockwise))
    span = float(np.ptp(whole))
    assert np.abs(blockwise - whole).mean() <= 0.005 * span
    assert np.abs(blockwise - whole).max() > 0  # really cut into blocks
    shifted_blocks = _core_predict(percentile_package, shifted, blocks=0)
    assert np.abs(shifted_blocks - (blockwise * 4 + 500)).max() <= 1e-4 * 4 * span


def _smooth_uint16(shape: tuple[int, int], seed: int = 5) -> np.ndarray:
    """A noisy uint16 image of smooth structure (cells-like intensities)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((shape[0] // 16 + 2, shape[1] // 16 + 2))
    smooth = np.kron(coarse, np.ones((16, 16)))[:shape[0], :shape[1]]
    return np.clip(300 + 2500 * smooth + 120 * rng.standard_normal(shape), 0,
                   65535).astype(np.uint16)


def _blocks(package, image, block) -> np.ndarray:
    from bioimageio.core import predict

    shape = {"input0": {"batch": 1, "channel": 1, "y": block, "x": block}}
    sample = predict(model=str(package), inputs=image[None, None], input_block_shape=shape)
    return np.asarray(sample.members["output0"].data, dtype=np.float64)[0, 0]


def _local_tiny(normalization=None) -> MPRNet:
    """The tiny network with every channel attention a constant gate: strictly local (a
    pixel's output depends on the pixels ~25 px around it), as the trained models are in
    effect (their channel attention barely depends on the image)."""
    from napari_mprnet.model.arch import ChannelAttention

    model = tiny(normalization)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ChannelAttention):
                module.conv_du[0].weight.zero_()
    return model


@pytest.fixture(scope="module")
def local_package(tmp_path_factory):
    path = tmp_path_factory.mktemp("bio") / "local.zip"
    export_bioimageio(_local_tiny(PERCENTILE), path, name="Tiny local denoiser",
                      description="A tiny MPRNet for tests", min_size=128)
    return path


def test_core_blockwise_off_any_grid_equals_whole_image(local_package):
    """The packaged network runs without MPRNet's patch split, so a block restores like the
    same pixels inside the whole image: blockwise prediction with bioimage.io's default
    blocks (blocksize_parameter 0 and 1 of a package whose smallest side is 128 px: 208 and
    216 px blocks, the last block shifted back to end at the image edge) and with 160 px blocks is within 0.5% of
    the range of whole-image prediction at the worst pixel (the network split by each
    block, before, was 9% off), for two intensity ranges (each block by its own
    percentiles)."""
    pytest.importorskip("bioimageio.core")
    kwargs = read_rdf(local_package)["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["tile"] == bio.TILE and kwargs["halo"] == bio.HALO
    image = _smooth_uint16((288, 264))
    shifted = (image.astype(np.float64) * 4 + 500).astype(np.uint16)
    for raw in (image, shifted):
        whole = _core_predict(local_package, raw)
        span = float(np.ptp(whole))
        for blocks in (0, 1):
            error = np.abs(_core_predict(local_package, raw, blocks=blocks) - whole)
            assert 0 < error.max() <= 0.005 * span, blocks  # cut into blocks, yet close
        error = np.abs(_blocks(local_package, raw, 160) - whole)
        assert error.max() <= 0.005 * span


def test_core_whole_image_matches_a_tiled_restore(local_package):
    """Whole-image prediction against restore() where restore() runs in tiles (96 px with
    32 px overlap, blended): within 1% of the range at the worst pixel, as both run the
    network without its patch split (split, each tile's centre lines showed)."""
    pytest.importorskip("bioimageio.core")
    from napari_mprnet import restore

    image = _smooth_uint16((256, 200))
    whole = _core_predict(local_package, image)
    model = _local_tiny(PERCENTILE)
    tiled = restore(image, "denoise", model, device="cpu", tile_size=96, tile_overlap=32,
                    precision="fp32", strength=1.0)
    assert np.abs(whole - tiled).max() <= 0.01 * float(np.ptp(tiled))


def test_packaged_percentiles_are_restores(tiny_model):
    """The packaged network's percentile range is the engine's (NaN ignored, subsampled
    beyond 4 million values, constant images)."""
    from napari_mprnet.engine.normalize import choose_normalization

    net = bio.content.packaged_network(tiny_model, 0, percentiles=[0.5, 99.8])
    percentile_range = type(net)._restore.__globals__["_percentile_range"]
    rng = np.random.default_rng(4)
    noisy = rng.gamma(2.0, 300.0, (97, 131)).astype(np.float32)
    noisy[3, 4] = np.nan
    cases = [rng.integers(0, 4000, (64, 80)).astype(np.uint16), noisy,
             np.full((16, 16), 7.0, np.float32), np.full((8, 8), 3e7, np.float32),
             rng.random((2100, 2000)).astype(np.float32)]
    for data in cases:
        norm = choose_normalization(data, "percentile")
        low, high = percentile_range(torch.from_numpy(data)[None, None], (0.5, 99.8))
        np.testing.assert_allclose([low, high], [norm.low, norm.high], rtol=1e-9,
                                   err_msg=str(data.shape))


def test_core_predict_uint8_grey_matches_restore(tmp_path):
    pytest.importorskip("bioimageio.core")
    from napari_mprnet import restore

    model = tiny()  # no stored normalisation: restore() divides uint8 by 255
    image = np.random.default_rng(3).integers(0, 256, (192, 200)).astype(np.uint8)
    path = export_bioimageio(model, tmp_path / "u8.zip", name="uint8 model", description="d",
                             test_input=image)
    rdf = read_rdf(path)
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["intensity"]
    assert "preprocessing" not in rdf["inputs"][0]  # /255 inside: any dtype is accepted
    kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["intensity"] == "auto"
    ours = restore(image, "denoise", model, device="cpu", strength=1.0)  # no blend packaged
    whole = _core_predict(path, image)
    assert np.abs(whole - ours).max() <= 0.01 * 255
    assert whole.min() >= 0 and whole.max() <= 255  # clipped like restore()



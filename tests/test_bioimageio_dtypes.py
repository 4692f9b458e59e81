"""A package exported with the defaults (no test input, no range) takes uint8, uint16 and
float32 images of any range: bioimage.io's own predictor (bioimageio.core, whole image and
blockwise) gives restore(strength=1.0)'s result for each, as restore() maps each type."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
import yaml

from napari_mprnet import restore
from napari_mprnet.bioimageio import export_bioimageio
from napari_mprnet.model import MPRNet, MPRNetConfig

pytest.importorskip("bioimageio.core")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
#: As the bundled models store it: trained on 0..1 data, no fixed range.
BUNDLED_LIKE = {"mode": "identity", "low": 0.0, "high": 1.0, "requested": "none"}


def _model() -> MPRNet:
    """The tiny network, its final convolution scaled by 0.1: untrained, it changes an image
    by 27% of its range on average (no restoration network does); scaled, by 2.7%, like a
    denoiser removing noise of that size. Blockwise prediction maps each block on its own,
    and its difference from the whole image's map grows with how far the network departs
    from f(a x + b) = a f(x) + b, i.e. with that change (the untrained one: 0.83% of the
    range on the 12-bit case, measured)."""
    torch.manual_seed(3)
    model = MPRNet(TINY).eval()
    with torch.no_grad():
        model.tail.weight.mul_(0.1)
    model.metadata = {"task": "denoise", "trained": True, "normalization": BUNDLED_LIKE}
    return model


@pytest.fixture(scope="module")
def default_package(tmp_path_factory):
    path = tmp_path_factory.mktemp("dtypes") / "default.zip"
    export_bioimageio(_model(), path, name="Tiny denoiser", description="any dtype",
                      min_size=128)
    return path


def _field(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth structure plus noise, 0..1 (a stand-in for a noisy fluorescence field)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((shape[0] // 24 + 2, shape[1] // 24 + 2))
    smooth = np.kron(coarse, np.ones((24, 24)))[:shape[0], :shape[1]]
    return np.clip(0.15 + 0.7 * smooth + 0.06 * rng.standard_normal(shape), 0, 1)


def _as(field: np.ndarray, dtype: str, low: float, high: float) -> np.ndarray:
    values = low + (high - low) * field
    return (np.rint(values) if np.dtype(dtype).kind == "u" else values).astype(dtype)


#: (label, dtype, low, high): each type at two or three intensity ranges.
CASES = [
    ("uint8 full", "uint8", 0, 255),
    ("uint8 dim", "uint8", 3, 60),
    ("uint16 12-bit", "uint16", 100, 4000),
    ("uint16 wide", "uint16", 500, 60000),
    ("float32 0..1", "float32", 0.05, 0.95),
    ("float32 offset", "float32", -3.0, 47.0),
    ("float32 photons", "float32", 0.0, 5000.0),
]


def _predict(package, image, blocks=None) -> np.ndarray:
    from bioimageio.core import predict

    sample = predict(model=str(package), inputs=image[None, None],
                     **({} if blocks is None else {"blocksize_parameter": blocks}))
    return np.asarray(sample.members["output0"].data, dtype=np.float64)[0, 0]


@pytest.mark.parametrize(("label", "dtype", "low", "high"), CASES,
                         ids=[case[0] for case in CASES])
def test_core_predict_matches_restore_for_each_dtype(default_package, label, dtype, low, high):
    """Whole image within 1% and blockwise (bioimage.io's smallest blocks, 208 px with the
    halo) within 0.5% of the range of restore(strength=1.0) (fp32, one tile: the same
    network computation; restore()'s bf16 CPU autocast alone moves this random tiny network
    by about 1.5%), at the worst pixel; clipped like restore() for integer types."""
    image = _as(_field((288, 264), seed=len(label)), dtype, low, high)
    model = _model()
    ours = restore(image, "denoise", model, device="cpu", strength=1.0, precision="fp32",
                   tile_size=512).astype(np.float64)
    span = float(np.ptp(ours))
    whole = _predict(default_package, image)
    blocks = _predict(default_package, image, blocks=0)
    whole_error = 100 * np.abs(whole - ours).max() / span
    block_error = 100 * np.abs(blocks - ours).max() / span
    print(f"{label}: whole {whole_error:.5f}% blockwise {block_error:.4f}% "
          f"(mean {100 * np.abs(blocks - ours).mean() / span:.5f}%) of the range")
    assert whole.shape == blocks.shape == image.shape
    assert np.abs(ours - image).mean() > 0.005 * span  # the network changes the image
    assert whole_error <= 1.0 and block_error <= 0.5
    assert np.abs(blocks - whole).max() > 0  # really cut into blocks
    if dtype != "float32":
        limit = np.iinfo(dtype).max
        assert whole.min() >= 0 and whole.max() <= limit


def test_a_uint8_only_map_would_be_far_off(default_package):
    """What the issue saw: a uint16 image through a uint8 /255 map is far off restore();
    the default package is not (so the comparison above can fail)."""
    image = _as(_field((256, 256), seed=2), "uint16", 100, 4000)
    ours = restore(image, "denoise", _model(), device="cpu", strength=1.0, precision="fp32",
                   tile_size=512)
    span = float(np.ptp(ours))
    with torch.no_grad():
        as_uint8 = _model()(torch.from_numpy(image[None, None].repeat(3, 1) / 255.0).float(),
                            split_patches=False)[0].mean(1)[0].numpy() * 255.0
    assert np.abs(np.clip(as_uint8, 0, 255) - ours).max() > 0.5 * span
    assert np.abs(_predict(default_package, image) - ours).max() <= 0.01 * span


def test_default_package_declares_any_dtype(default_package):
    with zipfile.ZipFile(default_package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        readme = archive.read("README.md").decode()
        x = np.load(io.BytesIO(archive.read("test_input.npy")), allow_pickle=False)
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert inp["data"] == {"type": "float32"}
    assert "preprocessing" not in inp and "postprocessing" not in out
    kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["intensity"] == "auto" and kwargs["percentiles"] == [0.5, 99.8]
    assert x.dtype == np.uint16  # the synthetic example: a 16-bit image
    assert "uint8, uint16 and float32 images of any intensity range" in readme
    assert "8-bit images are divided by 255" in readme


def test_core_test_model_passes_on_the_default_package(default_package):
    from bioimageio.core import test_model

    summary = test_model(default_package, weight_format="pytorch_state_dict", stop_early=True)
    if summary.status != "passed":
        print(summary.format())
    assert summary.status == "passed"
    # FAIR checks: sample images and a Validation section in the README are there
    warned = {".".join(map(str, w.loc)) for detail in summary.details
              for w in detail.warnings}
    assert not [loc for loc in warned if "sample_tensor" in loc or "documentation" in loc], \
        warned


def test_fixed_range_models_and_given_ranges_declare_one_map(tmp_path):
    """A fixed map only when asked for or trained on one: a model trained with
    normalize="range" declares it; a uint8 model trained with "auto" gets the per-image map
    (it divides 8-bit images by 255 too, and maps 16-bit images as restore() does)."""
    def kwargs_of(path):
        with zipfile.ZipFile(path) as archive:
            rdf = yaml.safe_load(archive.read("rdf.yaml"))
        return rdf["inputs"][0].get("preprocessing"), \
            rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["intensity"]

    model = _model()
    model.metadata["normalization"] = {"mode": "range", "low": 0.0, "high": 4095.0,
                                       "requested": "range"}
    path = export_bioimageio(model, tmp_path / "r.zip", name="Range model", description="d",
                             min_size=128)
    pre, intensity = kwargs_of(path)
    assert pre[0]["id"] == "scale_linear" and intensity is None
    assert pre[0]["kwargs"]["gain"] == pytest.approx(1 / 4095)
    model.metadata["normalization"] = {"mode": "uint8", "low": 0.0, "high": 255.0,
                                       "requested": "auto"}
    path = export_bioimageio(model, tmp_path / "u.zip", name="uint8 model", description="d",
                             min_size=128)
    assert kwargs_of(path) == (None, "auto")
    path = export_bioimageio(model, tmp_path / "g.zip", name="Given range", description="d",
                             min_size=128, input_range=(10, 1010))
    pre, intensity = kwargs_of(path)
    assert pre[0]["kwargs"]["offset"] == pytest.approx(-0.01) and intensity is None

"""bioimage.io export: package contents, rdf fields, reproducible test tensors from the packaged
architecture, argument checks, CLI (bioimage.io's own tools on packages:
test_bioimageio_core.py)."""

from __future__ import annotations

import importlib.util
import sys
import zipfile

import numpy as np
import pytest
import torch

from bioimageio_support import PERCENTILE, TINY, npy, read_rdf, tiny
from bioimageio_support import percentile_package as make_percentile_package
from napari_mprnet import bioimageio as bio
from napari_mprnet.bioimageio import export_bioimageio
from napari_mprnet.cli import main
from napari_mprnet.weights import load_model, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def percentile_package(tmp_path_factory):
    return make_percentile_package(tmp_path_factory.mktemp("bio") / "tiny.zip")


def apply_steps(x: np.ndarray, steps: list[dict]) -> np.ndarray:
    """The bioimage.io processing steps used by the export, written from the spec."""
    x = x.astype(np.float64)
    for step in steps:
        kwargs = step["kwargs"]
        if step["id"] == "scale_linear":
            x = x * kwargs["gain"] + kwargs["offset"]
        elif step["id"] == "clip":
            x = np.clip(x, kwargs["min"], kwargs["max"])
        elif step["id"] == "ensure_dtype":
            x = x.astype(kwargs["dtype"])
        else:  # pragma: no cover
            raise AssertionError(f"unexpected step {step['id']}")
    return x.astype(np.float32)


def run_packaged(path, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """Build the network from the package's own source and weights; return (output, expected)."""
    rdf = read_rdf(path)
    weights = rdf["weights"]["pytorch_state_dict"]
    arch = weights["architecture"]
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
        x = npy(archive, rdf["inputs"][0]["test_tensor"]["source"])
        expected = npy(archive, rdf["outputs"][0]["test_tensor"]["source"])
    name = f"_packaged_arch_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, folder / arch["source"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        net = getattr(module, arch["callable"])(**arch["kwargs"]).eval()
    finally:
        del sys.modules[name]
    state = torch.load(folder / weights["source"], map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    with torch.no_grad():  # as bioimageio.core's test runs it: no padding, no cropping
        out = net(torch.from_numpy(apply_steps(x, rdf["inputs"][0].get("preprocessing", []))))
    out = apply_steps(out.numpy(), rdf["outputs"][0].get("postprocessing", []))
    return out, expected


def test_package_contents_and_rdf(percentile_package):
    with zipfile.ZipFile(percentile_package) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
        cover = archive.read("cover.png")
        source = archive.read("mprnet_arch.py").decode()
        x = npy(archive, "test_input.npy")
    assert {"rdf.yaml", "mprnet_arch.py", "weights.pt", "test_input.npy", "test_output.npy",
            "cover.png", "README.md", "napari_mprnet.safetensors", "sample_input.tif",
            "sample_output.tif"} <= names
    assert cover[:8] == b"\x89PNG\r\n\x1a\n"
    assert "class MPRNetFinal(MPRNet)" in source and "from ." not in source
    assert "Multi-Stage Progressive Image Restoration" in readme
    assert "best_val_psnr | 31.5" in readme  # provenance from the metadata
    assert x.dtype == np.uint16 and x.shape == (1, 1, 192, 192)  # grey: one channel

    rdf = read_rdf(percentile_package)
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5.")
    assert rdf["name"] == "Tiny denoiser" and rdf["license"] == "BSD-3-Clause"
    assert rdf["authors"] == [{"name": "Ada"}, {"name": "Bob"}]
    assert rdf["documentation"] == "README.md" and rdf["covers"] == ["cover.png"]
    assert "2102.02808" in rdf["cite"][0]["url"]
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert inp["axes"][1]["channel_names"] == ["intensity"]
    assert [a.get("id") for a in inp["axes"][2:]] == ["y", "x"]
    assert inp["axes"][2]["size"] == {"min": bio.MIN_BLOCK, "step": 8}
    assert out["axes"][3]["size"] == {"tensor_id": "input0", "axis_id": "x"}
    assert out["axes"][2]["halo"] == out["axes"][3]["halo"] == bio.HALO
    assert inp["data"] == {"type": "float32"}  # uint8, uint16 and float32 cast exactly
    # per-image percentiles: the packaged network normalises, inverts and clips itself
    assert "preprocessing" not in inp and "postprocessing" not in out
    assert "by its own 0.5 and 99.8 percentiles" in readme
    assert "restore(strength=1.0)" in readme  # a denoiser: the package is the network alone
    weights = rdf["weights"]["pytorch_state_dict"]
    assert weights["architecture"]["callable"] == "MPRNetFinal"
    assert weights["architecture"]["source"] == "mprnet_arch.py"
    assert weights["architecture"]["kwargs"] == {**TINY.to_dict(), "halo": bio.HALO,
                                                 "tile": bio.TILE, "percentiles": [0.5, 99.8],
                                                 "intensity": "percentile"}


def test_packaged_architecture_reproduces_test_output(percentile_package, tmp_path):
    out, expected = run_packaged(percentile_package, tmp_path)
    assert out.shape == expected.shape == (1, 1, 192, 192)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-2)


def test_no_local_paths_in_the_package(tmp_path):
    model = tiny()
    model.metadata["base_model"] = str(tmp_path / "secret" / "base.safetensors")
    model.metadata["provenance"]["data"] = "/home/ada/data/noisy"
    path = export_bioimageio(model, tmp_path / "p.zip", name="Tiny model", description="d")
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            data = archive.read(member)
            assert str(tmp_path).encode() not in data, member
            assert b"/home/ada" not in data, member
        readme = archive.read("README.md").decode()
    assert "| data | noisy |" in readme
    assert load_model_from(path, tmp_path).metadata["base_model"] == "base.safetensors"


def load_model_from(path, tmp_path):
    with zipfile.ZipFile(path) as archive:
        archive.extract("napari_mprnet.safetensors", tmp_path / "x")
    return load_model(tmp_path / "x" / "napari_mprnet.safetensors")


def test_authors_with_github_handles():
    assert bio.content.authors(["Ada Lovelace <ada@example.org> @ada-l", "Bob @bob",
                                "Carl <c@example.org>", {"name": "Dee", "orcid": None}]) == [
        {"name": "Ada Lovelace", "email": "ada@example.org", "github_user": "ada-l"},
        {"name": "Bob", "github_user": "bob"},
        {"name": "Carl", "email": "c@example.org"},
        {"name": "Dee"},
    ]
    with pytest.raises(ValueError, match="author"):
        bio.content.authors(["<x@y.z>"])


def test_linear_normalisation_round_trip_and_given_input(tmp_path):
    """Models trained on a fixed range: scale_linear 1/255 in, x255 out, clipped to the given
    (H, W) uint8 test image's type."""
    model = tiny({"mode": "range", "low": 0.0, "high": 255.0, "requested": "range"})
    image = np.random.default_rng(1).integers(0, 256, (198, 211)).astype(np.uint8)
    path = export_bioimageio(model, tmp_path / "u8.zip", name="uint8 model", description="d",
                             test_input=image, grey=False)
    rdf = read_rdf(path)
    assert rdf["inputs"][0]["preprocessing"][0]["id"] == "scale_linear"
    assert rdf["inputs"][0]["data"] == {"type": "float32"}
    assert rdf["outputs"][0]["postprocessing"] == [
        {"id": "scale_linear", "kwargs": {"gain": 255.0, "offset": 0.0}},
        {"id": "clip", "kwargs": {"min": 0.0, "max": 255.0}}]
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["intensity"] is None
    out, expected = run_packaged(path, tmp_path)
    assert expected.shape == (1, 3, 192, 208)  # centre-cropped to multiples of 8
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3)
    # the same as napari-mprnet's own normalisation, network, inverse
    with zipfile.ZipFile(path) as archive:
        x = npy(archive, "test_input.npy")
    net_in = torch.from_numpy(x / 255.0).float()
    packaged = bio.content.packaged_network(model, bio.HALO)
    with torch.no_grad():
        ours = np.clip(model(net_in, split_patches=False)[0].numpy() * 255.0, 0, 255)
        # run as bioimage.io's predict runs it (padded by the halo, which the packaged network
        # takes off again, cropped): an image of at most one tile is restored as one piece
        whole = np.clip(bio.content.predict_whole(packaged, net_in, bio.HALO).numpy() * 255.0,
                        0, 255)
    np.testing.assert_allclose(whole, ours, rtol=1e-4, atol=1e-3)  # and clipped like it
    # bioimageio.core's test feeds the test input unpadded: its outer halo is context only
    h = bio.HALO
    assert np.abs(expected - ours)[..., h:-h, h:-h].mean() < 0.01 * 255


def test_identity_model_and_loading_the_attachment(tmp_path, tiny_model):
    image = np.random.default_rng(2).random((192, 192)).astype(np.float32)  # already 0..1
    path = export_bioimageio(tiny_model, tmp_path / "id.zip", name="Tiny model", description="d",
                             test_input=image)
    rdf = read_rdf(path)
    assert "preprocessing" not in rdf["inputs"][0]
    assert "postprocessing" not in rdf["outputs"][0]
    with zipfile.ZipFile(path) as archive:
        archive.extract("napari_mprnet.safetensors", tmp_path)
    loaded = load_model(tmp_path / "napari_mprnet.safetensors")
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_bad_arguments(tmp_path, tiny_model):
    with pytest.raises(ValueError, match=".zip"):
        export_bioimageio(tiny_model, tmp_path / "x.tar", name="Tiny model", description="d")
    with pytest.raises(ValueError, match="name"):
        export_bioimageio(tiny_model, tmp_path / "x.zip", name=" ", description="d")
    with pytest.raises(ValueError, match=f"at least {bio.MIN_BLOCK}x{bio.MIN_BLOCK}"):
        export_bioimageio(tiny_model, tmp_path / "x.zip", name="Tiny model", description="d",
                          test_input=np.zeros((64, 96)))
    with pytest.raises(ValueError, match="^name must have at least 5 characters"):
        export_bioimageio(tiny_model, tmp_path / "x.zip", name="abc", description="d")
    with pytest.raises(ValueError, match="halo"):
        export_bioimageio(tiny_model, tmp_path / "x.zip", name="Tiny model", description="d", halo=3)
    with pytest.raises(ValueError, match="min_size"):
        export_bioimageio(tiny_model, tmp_path / "x.zip", name="Tiny model", description="d",
                          min_size=100)
    with pytest.raises(ValueError, match="input_range"):
        export_bioimageio(tiny_model, tmp_path / "x.zip", name="Tiny model", description="d",
                          input_range=(5, 5))
    with pytest.raises(ValueError, match="shape"):
        export_bioimageio(tiny_model, tmp_path / "x.zip", name="Tiny model", description="d",
                          test_input=np.zeros((2, 96, 96)))
    with pytest.raises(TypeError):
        export_bioimageio(object(), tmp_path / "x.zip", name="Tiny model", description="d")
    (tmp_path / "there.zip").write_bytes(b"")
    with pytest.raises(FileExistsError):
        export_bioimageio(tiny_model, tmp_path / "there.zip", name="Tiny model", description="d",
                          overwrite=False)
    assert not (tmp_path / "x.zip").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_export(tmp_path, capsys):
    model_file = save_model(tiny(PERCENTILE), tmp_path / "tuned.safetensors")
    image = np.random.default_rng(0).random((192, 192)).astype(np.float32) * 1000
    np.save(tmp_path / "test.npy", image)
    out = tmp_path / "pkg.zip"
    argv = ["export-bioimageio", str(model_file), "--out", str(out), "--name", "Tuned",
            "--author", "Ada <ada@example.org>", "--github-user", "ada", "--author", "Bob @bob",
            "--tag", "cells", "--test-input", str(tmp_path / "test.npy")]
    assert main(argv) == 0
    assert "wrote bioimage.io package" in capsys.readouterr().out
    rdf = read_rdf(out)
    assert rdf["name"] == "Tuned" and rdf["description"] == "tiny test model"
    assert rdf["authors"] == [{"name": "Ada", "email": "ada@example.org", "github_user": "ada"},
                              {"name": "Bob", "github_user": "bob"}]
    assert "cells" in rdf["tags"]
    with zipfile.ZipFile(out) as archive:
        assert npy(archive, "test_input.npy").shape == (1, 1, 192, 192)
    assert main(argv + ["--overwrite", "--rgb", "--input-range", "0", "1000"]) == 0
    rdf = read_rdf(out)
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["red", "green", "blue"]
    assert rdf["inputs"][0]["preprocessing"][0]["kwargs"] == {"gain": 0.001, "offset": 0.0}
    assert main(argv + ["--overwrite", "--halo", "16", "--min-size", "64"]) == 0
    axes = read_rdf(out)
    assert axes["inputs"][0]["axes"][2]["size"] == {"min": 64, "step": 8}
    assert axes["outputs"][0]["axes"][2]["halo"] == 16
    assert main(argv) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert main(["export-bioimageio", "nowhere.safetensors", "--out", str(out),
                 "--name", "Tuned model", "--overwrite"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["export-bioimageio", "denoise", "--out", str(tmp_path / "p.tar"),
                 "--name", "x"]) == 2


def test_module_constants(capsys):
    assert bio.FORMAT_VERSION.startswith("0.5.")
    with pytest.raises(SystemExit):
        main(["export-bioimageio", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {bio.HALO})" in text  # the torch-free CLI spells the defaults out
    assert f"(default: {bio.MIN_BLOCK};" in text
    assert f"(default: {bio.TILE}," in text
    assert bio.TILE == 0  # no grid: a whole image is restored in one piece, as restore() does


def test_self_supervised_model_says_so(tmp_path):
    model = tiny(PERCENTILE)
    model.metadata["provenance"]["objective"] = {"name": "noise2void", "fraction": 0.015,
                                                 "radius": 2, "replacement": "median"}
    path = tmp_path / "n2v.zip"
    export_bioimageio(model, path, name="Tiny N2V", description="self-supervised test")
    rdf = read_rdf(path)
    assert "self-supervised" in rdf["tags"] and "noise2void" in rdf["tags"]
    assert rdf["config"]["napari-mprnet"]["training_method"] == "noise2void"
    with zipfile.ZipFile(path) as archive:
        readme = archive.read(rdf["documentation"]).decode()
    assert "self-supervised** (noise2void)" in readme
    # a supervised model gets neither tag
    plain = tmp_path / "plain.zip"
    export_bioimageio(tiny(PERCENTILE), plain, name="Tiny supervised",
                      description="supervised test")
    assert "self-supervised" not in read_rdf(plain)["tags"]
    spec = pytest.importorskip("bioimageio.spec")
    from bioimageio.spec.model.v0_5 import ModelDescr

    assert isinstance(spec.load_description(path), ModelDescr)

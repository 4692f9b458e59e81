"""bioimage.io packages open again: load_model, --weights, the dask path and the export
accept a package (zip, folder, rdf.yaml); our packages come back bit for bit, another
MPRNet package with its configuration inferred, anything else is refused in one line. And
export-time argument problems are one plain line each, before anything is written."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from napari_mprnet import restore
from napari_mprnet.bioimageio import export_bioimageio
from napari_mprnet.bioimageio.checks import ExportError, package_name
from napari_mprnet.cli import main
from napari_mprnet.model import MPRNet, MPRNetConfig
from napari_mprnet.weights import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
METADATA = {"task": "deblur", "trained": True, "summary": "tiny deblurrer",
            "normalization": {"mode": "percentile", "low": 3.0, "high": 900.0,
                              "percentiles": [1.0, 99.5], "requested": "percentile"},
            "provenance": {"finetuned": True, "steps": 7, "best_val_psnr": 31.5}}


def _model() -> MPRNet:
    torch.manual_seed(5)
    model = MPRNet(TINY).eval()
    model.metadata = {k: (dict(v) if isinstance(v, dict) else v) for k, v in METADATA.items()}
    return model


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("import") / "ours.zip"
    export_bioimageio(_model(), path, name="Tiny deblurrer", description="round trip")
    return path


def _unpack(package: Path, folder: Path) -> Path:
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    return folder


def _edit_rdf(folder: Path, **changes) -> None:
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            rdf.pop(key, None)
        else:
            rdf[key] = value
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))


def _same_weights(a: MPRNet, b: MPRNet) -> bool:
    return a.state_dict().keys() == b.state_dict().keys() and all(
        torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_our_package_loads_bit_exactly(package, tmp_path):
    original = _model()
    image = np.random.default_rng(0).integers(50, 3000, (72, 80)).astype(np.uint16)
    expected = restore(image, model=original, device="cpu")
    folder = _unpack(package, tmp_path / "unpacked")
    for source in (package, str(package), folder, folder / "rdf.yaml"):
        loaded = load_model(source)
        assert _same_weights(loaded, original), source
        assert loaded.config == original.config
        assert loaded.metadata == original.metadata  # task, normalisation, provenance
        assert np.array_equal(restore(image, model=source, device="cpu"), expected), source
    # a zip of the package folder (one folder level inside) opens too
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, f"tiny_deblurrer/{file.name}")
    assert _same_weights(load_model(nested), original)


def test_another_mprnet_package_loads_with_its_configuration_inferred(package, tmp_path):
    """Without our attachment and config: its pytorch_state_dict weights, the configuration
    from their shapes, the task from its tags, the percentiles from its preprocessing."""
    folder = _unpack(package, tmp_path / "foreign")
    (folder / "napari_mprnet.safetensors").unlink()
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["inputs"][0]["preprocessing"] = [
        {"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 2.0,
                                         "max_percentile": 99.0}}]
    _edit_rdf(folder, config=None, attachments=None, name="MPRNet deblurring",
              tags=["deblurring", "pytorch"], inputs=rdf["inputs"])
    loaded = load_model(folder)
    assert _same_weights(loaded, _model()) and loaded.config == TINY
    assert loaded.metadata["task"] == "deblur"
    assert loaded.metadata["normalization"]["percentiles"] == [2.0, 99.0]
    assert loaded.metadata["provenance"]["bioimageio_name"] == "MPRNet deblurring"
    # restore() then uses the package's own percentiles
    image = np.random.default_rng(1).integers(50, 3000, (64, 64)).astype(np.uint16)
    ours = restore(image, model=loaded, device="cpu")
    assert np.array_equal(restore(image, model=folder, device="cpu"), ours)


@pytest.mark.parametrize(("change", "message"), [
    ({"weights": {"tensorflow_saved_model_bundle": {"source": "tf.zip"}}},
     ("is a bioimage.io model 'UNet 2D' with tensorflow_saved_model_bundle weights only; "
     "napari-mprnet runs MPRNet PyTorch state dicts")),
    ({"weights": {"torchscript": {"source": "model.pt"}}},
     "with torchscript weights only"),
    ({"type": "dataset"}, "is a bioimage.io dataset 'UNet 2D', not a model"),
    ({"weights": {"pytorch_state_dict": {"source": "https://example.org/w.pt",
                                         "architecture": {"callable": "UNet"}}}},
     "whose PyTorch weights are not inside the package"),
], ids=["tensorflow", "torchscript", "dataset", "remote"])
def test_other_packages_are_refused_in_one_line(package, tmp_path, change, message):
    folder = _unpack(package, tmp_path / "other")
    _edit_rdf(folder, config=None, attachments=None, name="UNet 2D", **change)
    with pytest.raises(ValueError) as info:
        load_model(folder)
    text = str(info.value)
    assert message in text and "\n" not in text and str(folder) in text


def test_a_state_dict_of_another_network_is_refused(package, tmp_path):
    folder = _unpack(package, tmp_path / "unet")
    unet = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 1, 1))
    buffer = io.BytesIO()
    torch.save(unet.state_dict(), buffer)
    (folder / "unet.pt").write_bytes(buffer.getvalue())
    _edit_rdf(folder, config=None, attachments=None, name="UNet 2D", weights={
        "pytorch_state_dict": {"source": "unet.pt", "architecture": {
            "source": "unet.py", "callable": "UNet2d"}}})
    with pytest.raises(ValueError, match="whose PyTorch weights are not an MPRNet's "
                                         r"\(architecture UNet2d\)"):
        load_model(folder)


def test_a_damaged_package_is_refused(package, tmp_path):
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(damaged, "w") as target:
        for member in source.namelist():
            data = source.read(member)
            if member == "napari_mprnet.safetensors":
                data = data[:-8] + b"\0" * 8
            target.writestr(member, data)
    with pytest.raises(ValueError, match="damaged"):
        load_model(damaged)
    with pytest.raises(ValueError, match="it is a folder"):  # a folder without rdf.yaml
        load_model(tmp_path)


def test_cli_weights_and_reexport_take_a_package(package, tmp_path, capsys):
    image = np.random.default_rng(2).integers(50, 3000, (48, 56)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "cells.tif"), "--weights", str(package), "-o",
                 str(out), "-q", "--device", "cpu"]) == 0
    written = tifffile.imread(out / "cells_deblurred.tif")  # the package's task
    np.testing.assert_allclose(written, restore(image, model=_model(), device="cpu"),
                               atol=1e-4)
    again = tmp_path / "again.zip"
    assert main(["export-bioimageio", str(package), "--out", str(again),
                 "--name", "Tiny deblurrer 2"]) == 0
    assert _same_weights(load_model(again), _model())


def test_dask_path_takes_a_package_folder(package, tmp_path):
    da = pytest.importorskip("dask.array")
    folder = _unpack(package, tmp_path / "lazy")
    image = np.random.default_rng(3).integers(50, 3000, (2, 40, 48)).astype(np.uint16)
    lazy = restore(da.from_array(image, chunks=(1, 40, 48)), model=folder, device="cpu")
    expected = restore(image, model=_model(), device="cpu", axes="ZYX")
    np.testing.assert_allclose(np.asarray(lazy), expected, atol=1e-5)


def test_export_problems_are_plain_lines_before_anything_is_written(tmp_path, capsys):
    target = tmp_path / "new" / "m.zip"
    status = main(["export-bioimageio", "denoise", "--out", str(target), "--name", "abc",
                   "--license", "BSD", "--author", "Ada @-ada-", "--halo", "5"])
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "error: --name must have at least 5 characters, got 3 ('abc')",
        ("error: --author '-ada-' is not a GitHub user name (letters, digits and single "
        "hyphens, at most 39 characters)"),
        ("error: --license 'BSD' is not an SPDX license identifier (see "
        "https://spdx.org/licenses/; for example BSD-3-Clause, MIT or CC-BY-4.0)"),
        "error: --halo must be a non-negative multiple of 4, got 5",
    ]
    assert not (tmp_path / "new").exists()
    assert main(["export-bioimageio", "denoise", "--out", str(target), "--name",
                 "cells: v1.0"]) == 2
    assert "--name may only contain letters, digits, spaces and _ + - ( ); remove ' ' ':'" \
        not in capsys.readouterr().err  # space is allowed
    with pytest.raises(ExportError) as info:
        export_bioimageio(MPRNet(TINY), target, name="cells: v1.0", description=" ",
                          input_range=(5, 1))
    assert str(info.value).splitlines() == [
        "name may only contain letters, digits, spaces and _ + - ( ); remove '.' ':'",
        "description must be a non-empty text",
        "input_range must be two finite numbers LOW HIGH with LOW < HIGH, got (5, 1)",
    ]
    assert not (tmp_path / "new").exists()
    assert package_name("denoise on cells.tif (200 steps)") == "denoise on cells tif (200 steps)"
    assert package_name("ab") == "MPRNet model"


def test_package_sha256_is_what_the_rdf_lists(package):
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        data = archive.read("napari_mprnet.safetensors")
    (entry,) = rdf["attachments"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()

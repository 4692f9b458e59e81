"""Malformed model files are one ValueError naming the file; task names mean bundled models."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_mprnet import load_model, restore, save_model
from napari_mprnet.cli import main
from napari_mprnet.engine.models import prepare_model
from napari_mprnet.model import MPRNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _state(model: MPRNet) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def _safetensors(path, model, **header):
    save_file(_state(model), str(path), metadata=header)
    return path


def _refused(path, *words):
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message
    return message


@pytest.mark.parametrize("entry", ["config", "metadata"])
@pytest.mark.parametrize("value", ["[1, 2]", '"text"', "3"])
def test_wrong_type_json_in_a_safetensors_header(tmp_path, tiny_model, tiny_config, entry, value):
    header = {"config": json.dumps(tiny_config.to_dict()), "metadata": "{}", entry: value}
    path = _safetensors(tmp_path / "wrong.safetensors", tiny_model, **header)
    _refused(path, f"'{entry}'", "expected a JSON object")


@pytest.mark.parametrize("entry", ["config", "metadata"])
def test_malformed_json_in_a_safetensors_header(tmp_path, tiny_model, entry):
    path = _safetensors(tmp_path / "bad.safetensors", tiny_model, **{entry: "{not json"})
    _refused(path, "not valid JSON", entry)


def test_stored_configuration_with_unknown_or_invalid_entries(tmp_path, tiny_model, tiny_config):
    unknown = dict(tiny_config.to_dict(), colour="blue")
    path = _safetensors(tmp_path / "unknown.safetensors", tiny_model, config=json.dumps(unknown))
    _refused(path, "unknown entries", "'colour'")
    invalid = dict(tiny_config.to_dict(), n_feat="eight")
    path = _safetensors(tmp_path / "invalid.safetensors", tiny_model, config=json.dumps(invalid))
    _refused(path, "n_feat")


def test_torch_file_whose_config_is_not_a_mapping(tmp_path, tiny_model):
    path = tmp_path / "list_config.pth"
    torch.save({"state_dict": _state(tiny_model), "config": [8, 4]}, path)
    _refused(path, "'config'", "list")


def test_meta_tensors_are_refused(tmp_path, tiny_config):
    path = tmp_path / "meta.pth"
    with torch.device("meta"):
        empty = MPRNet(tiny_config)
    torch.save(empty.state_dict(), path)
    _refused(path, "meta tensors")


def test_impossible_stored_percentiles_blame_the_file(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "upside_down.safetensors",
                      {"normalization": {"mode": "percentile", "low": 0, "high": 1,
                                         "percentiles": [99, 1]}})
    _refused(path, "stored normalisation is impossible", "[99, 1]")
    text = save_model(tiny_model, tmp_path / "text.safetensors",
                      {"normalization": {"mode": "percentile", "percentiles": ["a", "b"]}})
    _refused(text, "stored normalisation")
    # an in-memory model with the same metadata fails with a message about the model
    tiny_model.metadata = {"normalization": {"mode": "percentile", "percentiles": [99, 1]}}
    with pytest.raises(ValueError, match="stores unusable normalisation percentiles"):
        restore(np.ones((16, 16), np.uint16), model=tiny_model, device="cpu")


def test_non_finite_weights_are_refused(tmp_path, tiny_model):
    state = _state(tiny_model)
    state["tail.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    _refused(path, "'tail.weight'", "NaN or infinite")
    inf = tmp_path / "inf.safetensors"
    state["tail.weight"][0, 0, 0, 0] = float("inf")
    save_file(state, str(inf))
    _refused(inf, "NaN or infinite")


def test_malformed_file_through_the_cli_is_one_line(tmp_path, tiny_model, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "img.tif", np.ones((16, 16), np.uint16))
    bad = _safetensors(tmp_path / "bad.safetensors", tiny_model, config="[1]")
    code = main(["restore", str(tmp_path / "img.tif"), "--weights", str(bad), "-q",
                 "-o", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and len(err.splitlines()) == 1
    assert str(bad) in err and not (tmp_path / "out" / "img_denoised.tif").exists()


def test_save_model_leaves_the_umask_alone(tmp_path, tiny_model):
    old = os.umask(0o027)
    try:
        path = save_model(tiny_model, tmp_path / "m.safetensors")
        assert os.umask(0o027) == 0o027  # nobody changed it in between
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# ------------------------------------------------------------------ bundled names


@pytest.fixture
def local_denoise(tmp_path, tiny_model, monkeypatch):
    """A model file named 'denoise', with NaN weights, in the current folder."""
    monkeypatch.chdir(tmp_path)
    state = _state(tiny_model)
    state["tail.weight"].fill_(float("nan"))
    save_file(state, str(tmp_path / "denoise"))
    return tmp_path / "denoise"


def test_task_names_always_mean_the_bundled_model(local_denoise):
    with pytest.warns(UserWarning, match="'./denoise'"):
        bundled = load_model("denoise")
    assert "pretrained" in bundled.source
    assert "pretrained" in prepare_model(None, "denoise").source
    for as_path in ("./denoise", str(local_denoise)):
        with pytest.raises(ValueError, match="NaN"):
            load_model(as_path)
    # a bare name stays a name even as a Path (pathlib drops the "./"), in every layer
    from pathlib import Path

    from napari_mprnet.engine.models import model_source_key
    from napari_mprnet.scale.models import handle_for

    assert model_source_key(Path("denoise")) == ("bundled", "denoise")
    assert handle_for(bundled, Path("denoise")).source == "denoise"


def test_cli_task_and_weights_names(local_denoise, tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "img.tif", np.full((16, 16), 7, np.uint16))
    common = ["-q", "--device", "cpu", "--tile-size", "16", "--tile-overlap", "4"]
    assert main(["restore", "img.tif", "--task", "denoise", "-o", "bundled", *common]) == 0
    bundled = tifffile.imread(tmp_path / "bundled" / "img_denoised.tif")
    assert bundled.shape == (16, 16) and np.isfinite(bundled).all()
    capsys.readouterr()
    assert main(["restore", "img.tif", "--weights", "./denoise", "-o", "local", *common]) != 0
    assert "NaN" in capsys.readouterr().err
    assert not (tmp_path / "local" / "img_denoised.tif").exists()

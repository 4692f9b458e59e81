import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

from napari_mprnet.model import MPRNet, MPRNetConfig, official_config
from napari_mprnet.weights import infer_config, load_model, save_model


def _outputs(model, seed=1):
    torch.manual_seed(seed)
    x = torch.rand(1, model.config.in_c, 16, 24)
    with torch.no_grad():
        return model.eval()(x)


def _assert_identical(a, b):
    for x, y in zip(_outputs(a), _outputs(b)):
        assert torch.equal(x, y)


def test_safetensors_round_trip_is_bit_identical_and_keeps_metadata(tmp_path, tiny_model):
    meta = {"task": "denoise", "normalization": {"mode": "uint8", "low": 0.0, "high": 255.0},
            "provenance": {"steps": 3}}
    path = save_model(tiny_model, tmp_path / "m.safetensors", metadata=meta)
    loaded = load_model(path)
    _assert_identical(tiny_model, loaded)
    assert loaded.metadata == meta
    assert loaded.config == tiny_model.config
    assert not loaded.training
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # readable by others like any file


def test_official_style_checkpoint_with_module_prefix_and_extras(tmp_path, tiny_model):
    state = {f"module.{k}": v for k, v in tiny_model.state_dict().items()}
    path = tmp_path / "model_best.pth"
    torch.save({"epoch": 250, "state_dict": state,
                "optimizer": torch.optim.Adam(tiny_model.parameters()).state_dict()}, path)
    _assert_identical(tiny_model, load_model(path))


def test_plain_state_dict(tmp_path, tiny_model):
    path = tmp_path / "plain.pt"
    torch.save(tiny_model.state_dict(), path)
    _assert_identical(tiny_model, load_model(path))


def test_pth_written_by_save_model(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "ours.pth", metadata={"task": "derain"})
    loaded = load_model(path)
    _assert_identical(tiny_model, loaded)
    assert loaded.metadata["task"] == "derain"


def test_foreign_safetensors_without_header(tmp_path, tiny_model):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    save_file(state, str(tmp_path / "foreign.safetensors"))
    _assert_identical(tiny_model, load_model(tmp_path / "foreign.safetensors"))


def test_fp16_storage_halves_size(tmp_path, tiny_model):
    full = save_model(tiny_model, tmp_path / "a.safetensors")
    half = save_model(tiny_model, tmp_path / "b.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert loaded.shallow_feat1[0].weight.dtype == torch.float32


@pytest.mark.parametrize("task", ["denoise", "deblur", "derain"])
def test_infer_official_configurations(task):
    config = official_config(task)
    assert infer_config(MPRNet(config).state_dict()) == config


@pytest.mark.parametrize(
    "config",
    [
        MPRNetConfig(n_feat=12, scale_unetfeats=6, scale_orsnetfeats=2, num_cab=3, bias=True),
        MPRNetConfig(n_feat=8, scale_unetfeats=0, scale_orsnetfeats=4, num_cab=1, kernel_size=5),
        MPRNetConfig(n_feat=16, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=2, reduction=8),
        MPRNetConfig(in_c=1, out_c=1, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4,
                     num_cab=1, reduction=2),
    ],
)
def test_infer_unusual_configurations(config, tmp_path):
    model = MPRNet(config)
    assert infer_config(model.state_dict()) == config
    path = save_model(model, tmp_path / "x.pth")
    torch.save(model.state_dict(), path)  # overwrite with a plain dict: no stored config
    assert load_model(path).config == config


def test_saving_does_not_alias_shared_prelu(tmp_path, tiny_model):
    with torch.no_grad():
        tiny_model.shallow_feat1[1].body[1].weight.fill_(0.123)
    loaded = load_model(save_model(tiny_model, tmp_path / "p.safetensors"))
    prelus = {id(m) for m in loaded.modules() if isinstance(m, torch.nn.PReLU)}
    assert len(prelus) == 1
    assert loaded.stage3_orsnet.orb1.body[0].body[1].weight.item() == pytest.approx(0.123)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.pth"
    for seed in range(40):  # random bytes trip the unpickler in many different ways
        rng = np.random.default_rng(seed)
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="noise.pth"):
            load_model(path)
    # a pickle-protocol prefix followed by garbage (the case that raised IndexError)
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        path.write_bytes(b"\x80\x04" + rng.integers(0, 256, 512, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="noise.pth"):
            load_model(path)
    path2 = tmp_path / "noise.safetensors"
    path2.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="noise.safetensors"):
        load_model(path2)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="refused for safety"):
        load_model(path)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError):
        load_model(raw)
    assert not marker.exists()


def test_other_architecture_is_refused(tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3))
    path = tmp_path / "unet.pth"
    torch.save({"state_dict": other.state_dict()}, path)
    with pytest.raises(ValueError, match="not an MPRNet checkpoint.*shallow_feat1"):
        load_model(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file_is_refused(tmp_path, tiny_model, suffix):
    path = save_model(tiny_model, tmp_path / f"t{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"t{suffix}"):
        load_model(path)


def test_mismatched_shapes_are_refused(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    state["stage2_encoder.csff_enc1.weight"] = torch.zeros(8, 8, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="csff_enc1.*shape"):
        load_model(path)


def test_missing_file_and_bad_types(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.pth")
    with pytest.raises(TypeError):
        load_model(42)
    with pytest.raises(TypeError):
        load_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="extension"):
        save_model(tiny_model, tmp_path / "m.onnx")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_model(empty)


def test_save_refuses_overwrite_when_asked(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_model(tiny_model, path, overwrite=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_bundled_models_load_and_are_checksummed(monkeypatch, tmp_path):
    from napari_mprnet import pretrained

    for task in ("denoise", "deblur", "derain"):
        model = load_model(task)
        assert model.metadata["task"] == task
        info = pretrained.bundled_info(task)
        path = pretrained.bundled_path(task)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
    # a damaged install is detected
    damaged = tmp_path / "denoise.safetensors"
    damaged.write_bytes(pretrained.bundled_path("denoise").read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(pretrained, "_HERE", tmp_path)
    pretrained._verified.cache_clear()
    with pytest.raises(ValueError, match="SHA-256"):
        pretrained.bundled_path("denoise")

"""Malformed model files, fuzzed: one ValueError in our own words, never a hang or a giant
allocation, never torch's advice to load unsafely.

Families of the second fault-injection run: metadata of every JSON type, stored or inferred
configurations that ask for giant layers (config bombs), sparse and meta tensors, damaged,
truncated and non-pickle ``.pth`` files, unknown safetensors dtypes, odd file names.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from napari_mprnet import load_model, save_model
from napari_mprnet.engine.models import resolve_task
from napari_mprnet.model import MPRNet, MPRNetConfig
from napari_mprnet.model.presets import TASKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
#: What torch says that must never reach a user of a model file.
TORCH_WORDS = ("weights_only", "Weights only load failed", "\x1b", "miniz",
               "PytorchStreamReader", "fburl", "Please file an issue")


def _state(model: MPRNet) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def _own_words(error: BaseException, path) -> str:
    """The message of a refused file: one line in our words naming the file."""
    message = str(error)
    assert type(error) is ValueError, f"{type(error).__name__}: {message}"
    assert "\n" not in message and "\r" not in message, message
    assert len(message) < 400, message
    assert not any(word in message for word in TORCH_WORDS), message
    assert path.name.splitlines()[0] in message, message
    # never cut mid-word: the message ends with a whole word or a closing mark
    assert re.search(r"([\w'\")\]]|\.|…)$", message), message
    return message


# ------------------------------------------------------------------------ metadata types

JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                        st.text(max_size=8), st.lists(st.text(max_size=3), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
TASK_VALUES = st.one_of(st.sampled_from(TASKS), st.sampled_from(["Deblur", "sharpen", "",
                                                                " denoise", "DENOISE"]),
                        JSON_VALUES)
NORMALIZATION_VALUES = st.one_of(
    st.just({"mode": "identity", "low": 0.0, "high": 1.0}),
    st.just({"mode": "percentile", "percentiles": [1.0, 99.0], "low": 0.0, "high": 1.0}),
    st.fixed_dictionaries({"mode": JSON_VALUES}),
    st.fixed_dictionaries({"mode": st.just("percentile"), "percentiles": JSON_VALUES}),
    st.fixed_dictionaries({"mode": st.just("range"), "low": JSON_VALUES,
                           "high": st.just(1.0)}),
    JSON_VALUES)


def _valid_normalization(value) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    if value.get("mode") not in ("identity", "uint8", "range", "percentile"):
        return False
    for key in ("low", "high"):
        if key in value and (isinstance(value[key], bool)
                             or not isinstance(value[key], (int, float))
                             or not math.isfinite(value[key])):
            return False
    if value.get("percentiles") is not None:  # null: not given
        pair = value["percentiles"]
        return (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in pair)
                and 0 <= pair[0] < pair[1] <= 100)
    return True


@st.composite
def model_metadata(draw):
    metadata = {}
    for key, values in (("task", TASK_VALUES), ("normalization", NORMALIZATION_VALUES),
                        ("cpu_bf16", st.one_of(st.booleans(), JSON_VALUES)),
                        ("trained", st.one_of(st.booleans(), JSON_VALUES)),
                        ("summary", st.one_of(st.text(max_size=10), JSON_VALUES)),
                        ("provenance", JSON_VALUES)):
        if draw(st.booleans()):
            metadata[key] = draw(values)
    return metadata


def _valid_metadata(metadata: dict) -> str | None:
    """The first key a correct loader must refuse, or None."""
    checks = {
        "task": lambda v: v is None or v in TASKS,
        "normalization": _valid_normalization,
        "cpu_bf16": lambda v: v is None or isinstance(v, bool),
        "trained": lambda v: v is None or isinstance(v, bool),
        "summary": lambda v: v is None or isinstance(v, str),
    }
    for key, ok in checks.items():
        if key in metadata and not ok(metadata[key]):
            return key
    return None


@FUZZ
@given(metadata=model_metadata(), suffix=st.sampled_from([".safetensors", ".pth"]))
def test_fuzz_metadata_of_every_type(tmp_path_factory, tiny_model, metadata, suffix):
    path = tmp_path_factory.mktemp("meta") / f"model{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": _state(tiny_model), "config": tiny_model.config.to_dict(),
                    "metadata": metadata}, path)
    else:
        save_file(_state(tiny_model), str(path), metadata={
            "config": json.dumps(tiny_model.config.to_dict()),
            "metadata": json.dumps(metadata)})
    wrong = _valid_metadata(metadata)
    if wrong is None:
        model = load_model(path)
        want = metadata.get("task") or "denoise"
        assert resolve_task(None, model) == want
        return
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = _own_words(caught.value, path)
    assert f"'{wrong}'" in message, message  # names the key...
    if wrong == "task":
        assert all(task in message for task in TASKS)  # ...and what it may be


def test_a_task_typo_is_refused_not_run_as_a_denoiser(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "typo.safetensors", metadata={"task": "Deblur"})
    with pytest.raises(ValueError, match=r"'task'.*'Deblur'.*denoise, deblur, derain"):
        load_model(path)


# ------------------------------------------------------------------------ config bombs


@pytest.fixture
def no_giant_networks(monkeypatch):
    """Fail at once if a network with real (not meta) weights is built far beyond any
    released one: a config bomb must be refused before anything is allocated."""
    original = MPRNet.__init__

    def guarded(self, config=None, **kwargs):
        cfg = config if isinstance(config, MPRNetConfig) else MPRNetConfig(**kwargs)
        if torch.empty(0).device.type != "meta":
            widest = max(cfg.n_feat, cfg.n_feat + 2 * cfg.scale_unetfeats,
                         cfg.n_feat + cfg.scale_orsnetfeats)
            assert widest <= 512 and cfg.num_cab <= 32 and cfg.kernel_size <= 9, \
                f"built a real giant network: {cfg}"
        original(self, config, **kwargs)

    monkeypatch.setattr(MPRNet, "__init__", guarded)


BOMB_FIELDS = st.sampled_from(["n_feat", "scale_unetfeats", "scale_orsnetfeats", "num_cab",
                               "reduction", "kernel_size"])


@FUZZ
@given(field=BOMB_FIELDS, value=st.one_of(st.integers(9, 10**9), st.just(100000)))
def test_fuzz_stored_config_bombs_fail_before_allocating(tmp_path_factory, tiny_model,
                                                         no_giant_networks, field, value):
    config = dict(tiny_model.config.to_dict(), **{field: value})
    if field == "kernel_size":
        config[field] = value | 1
    path = tmp_path_factory.mktemp("bomb") / "bomb.safetensors"
    save_file(_state(tiny_model), str(path), metadata={"config": json.dumps(config)})
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = _own_words(caught.value, path)
    assert field in message, message


def _expanded_state(config: MPRNetConfig) -> dict[str, torch.Tensor]:
    """Every parameter of ``config`` as one value repeated (stride 0): a tiny .pth file
    whose shapes ask for a giant network."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MPRNet(config).state_dict().items()}
    return {k: torch.full((1,), 0.01).expand(shape) for k, shape in shapes.items()}


@FUZZ
@given(n_feat=st.integers(600, 4000), num_cab=st.integers(1, 12),
       stored=st.booleans())
def test_fuzz_inferred_shape_bombs_fail_before_allocating(tmp_path_factory, no_giant_networks,
                                                          n_feat, num_cab, stored):
    config = MPRNetConfig(n_feat=n_feat, scale_unetfeats=n_feat // 2,
                          scale_orsnetfeats=n_feat // 2, num_cab=num_cab)
    path = tmp_path_factory.mktemp("bomb") / "shapes.pth"
    entry = {"state_dict": _expanded_state(config)}
    if stored:
        entry["config"] = config.to_dict()
    torch.save(entry, path)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = _own_words(caught.value, path)
    assert "parameters" in message, message


def test_official_sized_models_still_load(tmp_path):
    """The bound leaves room for every released configuration (deblur: 20 M parameters)."""
    from napari_mprnet.model.from_state import check_config_size
    from napari_mprnet.model.presets import OFFICIAL_PRESETS

    for config in OFFICIAL_PRESETS.values():
        check_config_size(config, "official")


# ------------------------------------------------------------ sparse and meta tensors


@pytest.mark.parametrize("kind", ["sparse", "sparse_csr", "meta"])
def test_sparse_and_meta_tensors_in_a_file_are_one_line(tmp_path, tiny_model, kind):
    state = _state(tiny_model)
    weight = state["tail.weight"]
    state["tail.weight"] = (torch.empty(weight.shape, device="meta") if kind == "meta"
                            else weight.to_sparse() if kind == "sparse"
                            else weight.reshape(weight.shape[0], -1).to_sparse_csr())
    path = tmp_path / f"{kind}.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = _own_words(caught.value, path)
    assert "tail.weight" in message and ("meta" if kind == "meta" else "sparse") in message


# ------------------------------------------------------------ damaged and foreign files


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def _foreign_bytes(kind: str, good: bytes, rng: np.random.Generator) -> bytes:
    if kind == "random":
        return rng.integers(0, 256, int(rng.integers(1, 6000)), dtype=np.uint8).tobytes()
    if kind == "one byte":
        return bytes([int(rng.integers(0, 256))])
    if kind == "truncated":
        return good[: int(rng.integers(1, len(good)))]
    if kind == "text":
        return b"this is a text file, not a model\n" * int(rng.integers(1, 5))
    if kind == "plain pickle":
        return pickle.dumps({"weights": [1.0, 2.0]}, protocol=int(rng.integers(2, 5)))
    if kind == "code pickle":
        return pickle.dumps(_Payload())
    raise AssertionError(kind)


@FUZZ
@given(kind=st.sampled_from(["random", "one byte", "truncated", "text", "plain pickle",
                             "code pickle"]),
       seed=st.integers(0, 2**16), odd_name=st.booleans())
def test_fuzz_damaged_and_foreign_pth_files(tmp_path_factory, tiny_model, kind, seed,
                                            odd_name):
    folder = tmp_path_factory.mktemp("damaged")
    good = save_model(tiny_model, folder / "good.pth").read_bytes()
    name = "bad\nname\x1b[31m.pth" if odd_name else "bad.pth"
    path = folder / name
    path.write_bytes(_foreign_bytes(kind, good, np.random.default_rng(seed)))
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = str(caught.value)
    assert type(caught.value) is ValueError and "\n" not in message and "\x1b" not in message
    assert not any(word in message for word in TORCH_WORDS), message
    assert re.search(r"([\w'\")\]]|\.|…)$", message), message
    if kind in ("random", "one byte", "text", "truncated"):
        assert "Python objects" not in message, message  # not a pickle: say so
    if kind == "code pickle":
        assert "refused for safety" in message and "os.system" not in message.split(":")[0]


def test_damaged_pth_messages_say_what_the_file_is(tmp_path, tiny_model):
    good = save_model(tiny_model, tmp_path / "good.pth").read_bytes()
    cases = {"random.pth": np.random.default_rng(0).bytes(5000),
             "truncated.pth": good[: len(good) // 2],
             "text.pth": b"hello, not a model\n",
             "plain.pth": pickle.dumps({"a": 1})}
    words = {"random.pth": "not a PyTorch checkpoint", "truncated.pth": "truncated",
             "text.pth": "not a PyTorch checkpoint", "plain.pth": "no tensors"}
    for name, raw in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(ValueError) as caught:
            load_model(path)
        assert words[name] in _own_words(caught.value, path)


def test_unknown_safetensors_dtype_is_named_briefly(tmp_path):
    header = json.dumps({"x": {"dtype": "Q8", "shape": [1], "data_offsets": [0, 1]}}).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0")
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = _own_words(caught.value, path)
    assert "Q8" in message and "F8_E4M3FNUZ" not in message and "`" not in message


def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path):
    path = tmp_path / "two\nlines.pth"
    path.write_bytes(b"junk")
    with pytest.raises(ValueError) as caught:
        load_model(path)
    assert "\n" not in str(caught.value) and "two\\nlines.pth" in str(caught.value)

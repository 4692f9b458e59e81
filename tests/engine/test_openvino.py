"""The OpenVINO backend: accuracy against eager fp32, the disk cache (hit, corruption, keys),
fallbacks, the default/"auto" selection, per-stage outputs, the strength probe and dask.

A tiny network converts in seconds; the cache folder is shared by the module so that most
tests load the conversion from disk (about a second) instead of converting again."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")  # a default dependency where OpenVINO publishes wheels

from napari_mprnet import restore
from napari_mprnet.engine import devices
from napari_mprnet.engine.backends import (
    BACKEND_ENV,
    BackendFallbackWarning,
    OpenVINOBackend,
    clear_openvino_cache,
    default_backend,
    make_backend,
    resolve_backend,
)
from napari_mprnet.engine.backends import openvino as ov_backend
from napari_mprnet.engine.progress import drive
from napari_mprnet.engine.runner import TiledRunner
from napari_mprnet.model import MPRNet, MPRNetConfig

CPU = torch.device("cpu")
TILING = {"tile_size": 48, "tile_overlap": 8}


@pytest.fixture(scope="module")
def cache_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(autouse=True)
def _openvino_default(monkeypatch, cache_folder):
    """The real default backend (the suite's conftest makes it eager), a shared disk cache
    and an empty in-memory cache for every test."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setenv("NAPARI_MPRNET_CACHE", str(cache_folder))
    clear_openvino_cache()
    yield
    clear_openvino_cache()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    config = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1,
                          reduction=4)
    return MPRNet(config).eval()


def _planes(n=1, h=96, w=80, c=3, seed=0):
    return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


def _runner(model, backend=None, **kwargs):
    kwargs = {"precision": "fp32", **TILING, **kwargs}
    return TiledRunner(model, "cpu", backend=backend, **kwargs)


# ---------------------------------------------------------------- selection


def test_default_and_auto_pick_openvino_on_a_cpu_only(monkeypatch):
    assert default_backend(CPU) == "openvino"
    assert resolve_backend(None, CPU) == resolve_backend("auto", CPU) == "openvino"
    assert resolve_backend(None, torch.device("mps")) == "eager"
    assert resolve_backend(None, torch.device("cuda")) == "eager"  # GPUs start at once
    monkeypatch.setenv(BACKEND_ENV, "eager")
    assert resolve_backend(None, CPU) == "eager"
    assert resolve_backend("openvino", CPU) == "openvino"  # an explicit name is kept
    monkeypatch.setenv(BACKEND_ENV, "onnx")
    with pytest.raises(ValueError, match="NAPARI_MPRNET_BACKEND='onnx' is not a backend"):
        resolve_backend(None, CPU)


def test_without_openvino_everything_runs_eager(monkeypatch, net):
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes ``import openvino`` fail
    assert resolve_backend(None, CPU) == resolve_backend("auto", CPU) == "eager"
    planes = _planes()
    expected = _runner(net, "eager").run(planes)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default path says nothing
        runner = _runner(net)
        np.testing.assert_array_equal(runner.run(planes)[0], expected)
    assert runner.backend.active == "eager"
    with pytest.warns(BackendFallbackWarning, match="openvino cannot be imported"):
        explicit = _runner(net, "openvino")
    assert explicit.backend.active == "eager"


def test_openvino_on_a_gpu_device_falls_back_to_eager(net):
    with pytest.warns(BackendFallbackWarning, match="on the CPU only"):
        backend = make_backend("openvino", net, torch.device("meta"), "fp32")
    assert backend.active == "eager"


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize("split", [False, True])
def test_matches_eager_fp32_on_every_output_size_and_batch(net, split):
    """One conversion (traced on a 64 px picture) runs other sizes and batches: all three
    outputs equal the eager network's to float32 rounding, in both split modes."""
    runner = _runner(net, split_patches=split)
    eager = _runner(net, "eager", split_patches=split)
    assert runner.backend.hint == "f32"
    for shape in [(1, 3, 48, 48), (2, 3, 40, 24), (1, 3, 72, 104)]:
        batch = torch.from_numpy(np.random.default_rng(1).random(shape, dtype=np.float32))
        got = runner.forward_batch(batch, stages=True)
        want = eager.forward_batch(batch, stages=True)
        assert len(got) == 3
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert float((g - w).abs().max()) < 1e-4
    assert runner.backend.active == "openvino"


def test_bf16_only_where_the_cpu_computes_it(net, monkeypatch):
    backend = make_backend("openvino", net, CPU, "bf16")
    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: True)
    assert backend.hint == "bf16"
    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: False)
    assert backend.hint == "f32"  # OpenVINO would not compute bf16 correctly there
    assert make_backend("openvino", net, CPU, "fp32").hint == "f32"


def test_onednn_cap_below_bf16_means_no_native_bf16(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert devices._onednn_allows_bf16() is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert devices._onednn_allows_bf16() is True
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert devices._onednn_allows_bf16() is True


# ---------------------------------------------------------------- the disk cache


def test_a_cache_hit_loads_instead_of_converting(net, cache_folder):
    planes = _planes()
    first = _runner(net)
    out = first.run(planes)[0]
    folder = first.backend.folder()
    assert folder.parent == cache_folder / "openvino"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.bin",
                                                       "model.xml", "reference.npz"]
    clear_openvino_cache()  # a new process: nothing in memory
    again = _runner(net)
    assert again.backend.pending_work() == "load"
    steps = []
    np.testing.assert_array_equal(drive(again.iter_run(planes), on_step=steps.append)[0], out)
    assert not any(s.note for s in steps)  # loading takes a second: no conversion note
    assert again.backend.stats["compiles"] == 0
    assert again.backend.stats["disk_loads"] == 1
    assert again.backend.pending_work() is None  # in memory now


def test_a_damaged_cache_entry_is_rebuilt_not_trusted(net):
    planes = _planes()
    runner = _runner(net)
    expected = runner.run(planes)[0]
    weights = runner.backend.folder() / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # zero some weights
    weights.write_bytes(bytes(data))
    clear_openvino_cache()
    damaged = _runner(net)
    assert damaged.backend.pending_work() == "load"
    with pytest.warns(BackendFallbackWarning, match="is damaged.*converting the network again"):
        out = damaged.run(planes)[0]
    np.testing.assert_array_equal(out, expected)
    assert damaged.backend.stats["compiles"] == 1
    clear_openvino_cache()
    repaired = _runner(net)  # the entry was written again, whole
    np.testing.assert_array_equal(repaired.run(planes)[0], expected)
    assert repaired.backend.stats["disk_loads"] == 1


def test_cache_keys_follow_weights_split_and_library_versions(net, monkeypatch):
    base = make_backend("openvino", net, CPU, "fp32")
    assert make_backend("openvino", net, CPU, "bf16").folder() == base.folder()  # one IR
    assert make_backend("openvino", net, CPU, "fp32", split_patches=True).folder() \
        != base.folder()
    other = MPRNet(net.config).eval()
    other.load_state_dict(net.state_dict())
    assert make_backend("openvino", other, CPU, "fp32").folder() == base.folder()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    assert make_backend("openvino", other, CPU, "fp32").folder() != base.folder()
    monkeypatch.setattr(torch, "__version__", "0.0-test")
    assert make_backend("openvino", net, CPU, "fp32").folder() != base.folder()


# ---------------------------------------------------------------- fallbacks


def test_a_network_that_does_not_convert_falls_back_in_one_line(net, monkeypatch, tmp_path):
    calls = []

    def broken(self):
        calls.append(1)
        raise RuntimeError("aten::strange is not supported\nmore details")

    monkeypatch.setattr(OpenVINOBackend, "_convert", broken)
    monkeypatch.setenv("NAPARI_MPRNET_CACHE", str(tmp_path))
    planes = _planes()
    steps = []
    runner = _runner(net)
    assert runner.backend.pending_work() == "convert"
    with pytest.warns(BackendFallbackWarning) as caught:
        out = drive(runner.iter_run(planes), on_step=steps.append)[0]
    # a front end is told before the first tile that the network is being converted
    assert "Converting the network for OpenVINO" in steps[0].note
    assert steps[0].total == 0 and steps[0].describe() == steps[0].note
    assert all(not s.note for s in steps[1:]) and steps[-1].done == steps[-1].total > 0
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "aten::strange" in messages[0] and "eager" in messages[0]
    assert runner.backend.active == "eager"
    np.testing.assert_array_equal(out, _runner(net, "eager").run(planes)[0])
    with pytest.warns(BackendFallbackWarning):
        later = _runner(net)  # the same network is not converted again in this process
    assert later.backend.active == "eager" and len(calls) == 1


def test_a_compiled_network_that_disagrees_is_never_used(net, monkeypatch):
    monkeypatch.setattr(ov_backend, "_infer",
                        lambda compiled, x, count: [np.zeros_like(x)] * count)
    runner = _runner(net)
    with pytest.warns(BackendFallbackWarning, match="differs from the network"):
        out = runner.run(_planes())[0]
    assert runner.backend.active == "eager"
    assert np.abs(out).max() > 0


# ---------------------------------------------------------------- where the network runs


def test_restore_defaults_per_stage_outputs_and_strength_probe_use_openvino(net, monkeypatch):
    shapes = []
    original = OpenVINOBackend._run

    def spy(self, batch, stages):
        shapes.append((tuple(batch.shape), stages))
        return original(self, batch, stages)

    monkeypatch.setattr(OpenVINOBackend, "_run", spy)
    image = (_planes(h=120, w=100)[0, ..., 0] * 200).astype(np.uint8)
    final, stage2, stage1 = restore(image, model=net, stages=True, precision="fp32",
                                    strength="auto", **TILING)
    assert any(stages for _, stages in shapes)  # tiles with the three outputs
    assert any(shape[0] == 2 for shape, _ in shapes)  # the probe's pair of windows
    monkeypatch.setattr(OpenVINOBackend, "_run", original)
    monkeypatch.setenv(BACKEND_ENV, "eager")
    expected = restore(image, model=net, stages=True, precision="fp32", strength="auto",
                       **TILING)
    for got, want in zip((final, stage2, stage1), expected):
        assert got.shape == want.shape == image.shape
        np.testing.assert_allclose(got, want, atol=0.01)  # grey levels 0-255


def test_dask_blocks_convert_or_load_once_and_equal_the_in_memory_run(net, monkeypatch):
    da = pytest.importorskip("dask.array")
    conversions = []
    convert, load = OpenVINOBackend._convert, ov_backend.load_entry

    def converting(self):
        conversions.append("convert")
        return convert(self)

    def loading(*args):
        conversions.append("load")
        return load(*args)

    monkeypatch.setattr(OpenVINOBackend, "_convert", converting)
    monkeypatch.setattr(ov_backend, "load_entry", loading)
    image = (_planes(n=3, h=96, w=88)[..., 0] * 200).astype(np.uint8)
    options = {"model": net, "precision": "fp32", "strength": 1.0, **TILING}
    lazy = restore(da.from_array(image, chunks=(1, 96, 88)), axes="ZYX", **options)
    got = lazy.compute(scheduler="threads")
    want = restore(image, axes="ZYX", **options)
    np.testing.assert_array_equal(got, want)
    assert len(conversions) == 1  # three blocks on threads, one conversion or load


def test_the_command_line_uses_openvino_and_shows_the_conversion(net, tmp_path, monkeypatch,
                                                                  capsys):
    import tifffile

    from napari_mprnet import save_model
    from napari_mprnet.cli import main

    monkeypatch.setenv("NAPARI_MPRNET_CACHE", str(tmp_path / "cache"))  # converts afresh
    runs = []
    original = OpenVINOBackend._run

    def spy(self, batch, stages):
        runs.append(tuple(batch.shape))
        return original(self, batch, stages)

    monkeypatch.setattr(OpenVINOBackend, "_run", spy)
    weights = save_model(net, tmp_path / "tiny.safetensors")
    image = (np.random.default_rng(0).random((64, 72)) * 3000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image)
    assert main(["restore", str(tmp_path / "in.tif"), "--weights", str(weights), "-o",
                 str(tmp_path / "out"), "--device", "cpu", "--precision", "fp32",
                 "--strength", "1", "--tile-size", "48", "--tile-overlap", "8"]) == 0
    assert runs  # the tiles went through OpenVINO
    assert "Converting the network for OpenVINO (once per model; kept on disk)" \
        in capsys.readouterr().err
    expected = restore(image, model=net, precision="fp32", strength=1.0, backend="eager",
                       **TILING)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "in_denoised.tif"), expected,
                               atol=0.01)

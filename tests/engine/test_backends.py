"""Inference backends: selection, torch.compile wrapping and caching, Torch-TensorRT (with a
fake ``torch_tensorrt``), fallbacks, fixed-shape batches and the pipelined runner loop."""

import argparse
import json
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_mprnet import restore
from napari_mprnet.cli.common import add_engine_arguments, engine_options
from napari_mprnet.engine import backends
from napari_mprnet.engine.backends import (
    BackendFallbackWarning,
    clear_compiled_cache,
    make_backend,
    normalize_backend,
    resolve_backend,
    weights_hash,
)
from napari_mprnet.engine.runner import TiledRunner

ROOT = Path(__file__).resolve().parents[2]
TILING = {"tile_size": 32, "tile_overlap": 8}


def _planes(n=1, h=96, w=80, c=3, seed=0):
    return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_compiled_cache()
    yield
    clear_compiled_cache()


@pytest.fixture
def fake_compile(monkeypatch):
    """Replace torch.compile by a recorder: every compilation and every input shape is
    logged, and the 'compiled' module simply runs the module."""
    log = {"compiles": [], "shapes": []}

    def compile_(module, **kwargs):
        log["compiles"].append(kwargs)

        def compiled(x):
            log["shapes"].append(tuple(x.shape))
            return module(x)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    return log


def _eager(model, planes, **kwargs):
    return TiledRunner(model, "cpu", **TILING, **kwargs).run(planes)


# ---------------------------------------------------------------- selection


def test_backend_names_are_validated_with_the_choices():
    assert normalize_backend("Compile") == "compile"
    with pytest.raises(ValueError, match="auto, eager, compile, tensorrt"):
        normalize_backend("onnx")
    with pytest.raises(ValueError, match="auto, eager, compile, tensorrt"):
        normalize_backend(None)


def test_auto_picks_openvino_or_eager_off_cuda_and_the_fastest_on_cuda(monkeypatch):
    monkeypatch.setattr(backends.selection, "openvino_available", lambda: False)
    assert resolve_backend("auto", torch.device("cpu")) == "eager"
    monkeypatch.setattr(backends.selection, "openvino_available", lambda: True)
    assert resolve_backend("auto", torch.device("cpu")) == "openvino"
    assert resolve_backend("auto", torch.device("mps")) == "eager"
    assert resolve_backend("eager", torch.device("cuda")) == "eager"
    monkeypatch.setattr(backends.selection, "tensorrt_available", lambda: False)
    assert resolve_backend("auto", torch.device("cuda")) == "compile"
    monkeypatch.setattr(backends.selection, "tensorrt_available", lambda: True)
    assert resolve_backend("auto", torch.device("cuda")) == "tensorrt"


def test_tensorrt_available_sees_injected_and_blocked_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_tensorrt", types.ModuleType("torch_tensorrt"))
    assert backends.tensorrt_available()
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
    assert not backends.tensorrt_available()


def test_runner_and_restore_reject_unknown_backends_and_options(tiny_model, monkeypatch):
    monkeypatch.setattr(backends.selection, "openvino_available", lambda: False)
    runner = TiledRunner(tiny_model, "cpu", backend="auto")
    assert runner.backend.name == "eager" and runner.backend.active == "eager"
    with pytest.raises(ValueError, match="choose one of auto, eager, compile, tensorrt"):
        TiledRunner(tiny_model, "cpu", backend="fast")
    with pytest.raises(ValueError, match="unknown backend option.*'cuda_graph'"):
        TiledRunner(tiny_model, "cpu", backend="compile", backend_options={"cuda_graph": 1})
    with pytest.raises(ValueError, match="accumulate"):
        TiledRunner(tiny_model, "cpu", accumulate="gpu")
    with pytest.raises(ValueError, match="choose one of"):
        restore(np.zeros((32, 32), np.float32), model=tiny_model, device="cpu", backend="x")


def test_cli_backend_option():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    assert "backend" not in engine_options(parser.parse_args([]))
    assert engine_options(parser.parse_args(["--backend", "compile"]))["backend"] == "compile"
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "onnx"])
    assert "split_patches" not in engine_options(parser.parse_args([]))
    assert engine_options(parser.parse_args(["--split-patches"]))["split_patches"] is True


# ---------------------------------------------------------------- torch.compile


def test_compile_backend_matches_eager_and_reuses_its_compilation(tiny_model, monkeypatch):
    """A real torch.compile (dynamo with its debug 'eager' backend, so no C++ build)."""
    pytest.importorskip("torch._dynamo")
    calls = []
    real_compile = torch.compile

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", counting)
    planes = _planes()  # 12 tiles of 32 px: batches of 5, 5 and 2 (padded to 5)
    options = {"compile_backend": "eager"}
    first = TiledRunner(tiny_model, "cpu", **TILING, batch_size=5, backend="compile",
                        backend_options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        result = first.run(planes)
    assert first.backend.active == "compile"
    assert len(calls) == 1 and calls[0]["dynamic"] is False and calls[0]["backend"] == "eager"
    expected = _eager(tiny_model, planes, batch_size=5)
    np.testing.assert_allclose(result[0], expected[0], atol=1e-4)
    second = TiledRunner(tiny_model, "cpu", **TILING, batch_size=5, backend="compile",
                         backend_options=options)
    np.testing.assert_allclose(second.run(planes)[0], expected[0], atol=1e-4)
    assert len(calls) == 1  # cache hit: no second compilation
    assert second.backend.stats["cache_hits"] == 3 and second.backend.stats["compiles"] == 0


def test_fixed_shape_batches_pad_the_last_batch(tiny_model, fake_compile):
    planes = _planes(2)  # 24 tiles in batches of 5: the last holds 4 real tiles
    runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=5, backend="compile")
    result = runner.run(planes, stages=True)
    assert set(fake_compile["shapes"]) == {(5, 3, 32, 32)} and len(fake_compile["shapes"]) == 5
    assert len(fake_compile["compiles"]) == 1
    expected = _eager(tiny_model, planes, batch_size=5)
    for got in result[:1]:
        np.testing.assert_allclose(got, expected[0], atol=1e-5)
    assert len(result) == 3
    eager_stages = TiledRunner(tiny_model, "cpu", **TILING, batch_size=5).run(planes, True)
    for got, want in zip(result, eager_stages):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_compiled_modules_are_cached_per_shape_and_options(tiny_model, fake_compile):
    planes = _planes()
    for _ in range(2):
        TiledRunner(tiny_model, "cpu", **TILING, batch_size=4, backend="compile").run(planes)
    assert len(fake_compile["compiles"]) == 1
    TiledRunner(tiny_model, "cpu", tile_size=48, tile_overlap=8, batch_size=4,
                backend="compile").run(planes)
    assert len(fake_compile["compiles"]) == 2  # another tile shape
    TiledRunner(tiny_model, "cpu", **TILING, batch_size=4, backend="compile",
                backend_options={"cuda_graphs": True}).run(planes)
    assert len(fake_compile["compiles"]) == 3 and fake_compile["compiles"][-1]["mode"] == \
        "reduce-overhead"
    torch.manual_seed(1)
    other = type(tiny_model)(tiny_model.config).eval()
    TiledRunner(other, "cpu", **TILING, batch_size=4, backend="compile").run(planes)
    assert len(fake_compile["compiles"]) == 4  # another model


def test_compiled_modules_and_fallbacks_keep_the_split_mode(tiny_model, fake_compile,
                                                            monkeypatch):
    planes = _planes()
    results = {}
    for split in (False, True, False):
        runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=4, backend="compile",
                             split_patches=split)
        results[split] = runner.run(planes)[0]
        np.testing.assert_allclose(results[split], _eager(
            tiny_model, planes, split_patches=split)[0], atol=1e-5)
    assert len(fake_compile["compiles"]) == 2  # one per split mode
    assert not np.allclose(results[False], results[True], atol=1e-3)
    backend = make_backend("compile", tiny_model, "cpu", "fp32", split_patches=True)
    assert backend._next_backend().split_patches is True
    trt = make_backend("tensorrt", tiny_model, "cpu", "fp32", split_patches=False)
    assert trt.split_patches is False and trt.current.split_patches is False


def test_failing_compilation_falls_back_to_eager(tiny_model, monkeypatch):
    def broken_compile(module, **kwargs):
        def compiled(x):
            raise RuntimeError("InductorError: no working C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    planes = _planes()
    runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=4, backend="compile")
    with pytest.warns(BackendFallbackWarning, match="compile backend unavailable.*C\\+\\+"):
        result = runner.run(planes)
    assert runner.backend.active == "eager"
    np.testing.assert_allclose(result[0], _eager(tiny_model, planes)[0], atol=1e-5)


def test_out_of_memory_in_a_compiled_module_is_not_a_fallback(tiny_model, monkeypatch):
    def compile_(module, **kwargs):
        def compiled(x):
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8 GiB")
            return module(x)
        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    planes = _planes()
    runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=8, backend="compile")
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        result = runner.run(planes)
    assert runner.backend.active == "compile"
    np.testing.assert_allclose(result[0], _eager(tiny_model, planes)[0], atol=1e-5)


def test_restore_passes_the_backend_through(tiny_model, fake_compile):
    image = np.random.default_rng(3).random((40, 56), dtype=np.float32)
    got = restore(image, model=tiny_model, device="cpu", **TILING, batch_size=3,
                  backend="compile", backend_options={"compile_backend": "eager"})
    want = restore(image, model=tiny_model, device="cpu", **TILING, batch_size=3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert fake_compile["compiles"][0]["backend"] == "eager"
    # grey through RGB, one fixed shape: 40 px rows in two 24 px tiles, 56 px in two of 32
    assert set(fake_compile["shapes"]) == {(3, 3, 24, 32)}


# ---------------------------------------------------------------- Torch-TensorRT (fake)


def _fake_tensorrt(fail: bool = False):
    trt = types.ModuleType("torch_tensorrt")
    trt.__version__ = "9.9.9-fake"
    trt.calls = {"compile": [], "save": [], "load": []}
    saved = {}

    class Input:
        def __init__(self, shape, dtype=torch.float32):
            self.shape, self.dtype = tuple(shape), dtype

    def compile_(module, ir, inputs, enabled_precisions, **kwargs):
        trt.calls["compile"].append({"ir": ir, "shape": inputs[0].shape,
                                     "dtype": inputs[0].dtype,
                                     "precisions": set(enabled_precisions)})
        if fail:
            raise RuntimeError("TensorRT: no implementation for node %conv2d_17")
        return module

    def save(module, path, arg_inputs=None, **kwargs):
        trt.calls["save"].append((path, tuple(arg_inputs[0].shape)))
        Path(path).write_bytes(b"fake engine")
        saved[Path(path).name.split(".", 2)[-1]] = module  # the target's name, not the temporary's

    def load(path):
        trt.calls["load"].append(path)
        return types.SimpleNamespace(module=lambda: saved[Path(path).name])

    trt.Input, trt.compile, trt.save, trt.load = Input, compile_, save, load
    return trt


def test_tensorrt_compiles_the_fixed_shape_and_caches_on_disk(tiny_model, monkeypatch,
                                                              tmp_path):
    trt = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "torch_tensorrt", trt)
    monkeypatch.setenv("NAPARI_MPRNET_CACHE", str(tmp_path))
    planes = _planes(h=40, w=40)  # 4 tiles of 24 px (balanced) in batches of 3 (one padded)
    runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=3, backend="tensorrt",
                         precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        result = runner.run(planes)
    assert runner.backend.active == "tensorrt"
    assert trt.calls["compile"] == [{"ir": "dynamo", "shape": (3, 3, 24, 24),
                                     "dtype": torch.float32, "precisions": {torch.float32}}]
    np.testing.assert_allclose(result[0], _eager(tiny_model, planes, precision="fp32")[0], atol=1e-5)

    files = sorted((tmp_path / "tensorrt").glob("*.ep"))
    assert len(files) == 1 and files[0].name.startswith("mprnet_3x3x24x24_fp32_")
    assert files[0] == runner.backend.engine_path((3, 3, 24, 24), False)
    key = json.loads(files[0].with_suffix(".json").read_text())
    assert key["weights"] == weights_hash(tiny_model) and key["shape"] == [3, 3, 24, 24]
    assert key["torch"] == torch.__version__ and key["torch_tensorrt"] == "9.9.9-fake"
    assert key["precision"] == "fp32" and key["device"] == "cpu"

    clear_compiled_cache()  # as in a new process: the engine comes from disk
    again = TiledRunner(tiny_model, "cpu", **TILING, batch_size=3, backend="tensorrt",
                        precision="fp32")
    np.testing.assert_allclose(again.run(planes)[0], result[0], atol=1e-6)
    assert len(trt.calls["compile"]) == 1 and len(trt.calls["load"]) == 1
    assert again.backend.stats["disk_loads"] == 1

    with torch.no_grad():
        tiny_model.tail.weight.mul_(1.01)  # other weights: another engine
    other = TiledRunner(tiny_model, "cpu", **TILING, batch_size=3, backend="tensorrt",
                        precision="fp32")
    other.run(planes)
    assert len(trt.calls["compile"]) == 2 and len(list((tmp_path / "tensorrt").glob("*.ep"))) == 2


def test_tensorrt_fp16_asks_for_fp16(tiny_model, monkeypatch, tmp_path):
    trt = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "torch_tensorrt", trt)
    runner = TiledRunner(tiny_model, "cpu", **TILING, precision="fp16", backend="tensorrt",
                         backend_options={"cache_dir": str(tmp_path), "disk_cache": False})
    result = runner.run(_planes(h=32, w=32))
    assert trt.calls["compile"][0]["dtype"] == torch.float16
    assert trt.calls["compile"][0]["precisions"] == {torch.float16}
    assert trt.calls["save"] == [] and not list(tmp_path.iterdir())
    assert result[0].dtype == np.float32 and np.isfinite(result[0]).all()
    assert runner.backend.engine_path((1, 3, 32, 32), False).name.startswith(
        "mprnet_1x3x32x32_fp16_")


def test_failing_tensorrt_falls_back_to_compile(tiny_model, monkeypatch, tmp_path,
                                                fake_compile):
    monkeypatch.setitem(sys.modules, "torch_tensorrt", _fake_tensorrt(fail=True))
    monkeypatch.setenv("NAPARI_MPRNET_CACHE", str(tmp_path))
    planes = _planes(h=40, w=40)
    runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=2, backend="tensorrt")
    with pytest.warns(BackendFallbackWarning, match="tensorrt backend unavailable.*conv2d"):
        result = runner.run(planes)
    assert runner.backend.active == "compile" and len(fake_compile["compiles"]) == 1
    np.testing.assert_allclose(result[0], _eager(tiny_model, planes)[0], atol=1e-5)


def test_missing_tensorrt_warns_and_falls_back(tiny_model, monkeypatch, fake_compile):
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # import fails
    with pytest.warns(BackendFallbackWarning, match="torch_tensorrt cannot be imported"):
        backend = make_backend("tensorrt", tiny_model, "cpu", "fp32")
    assert backend.active == "compile" and backend.fixed_shape
    out = backend(torch.rand(1, 3, 16, 16), stages=True)
    assert len(out) == 3 and out[0].shape == (1, 3, 16, 16)


# ---------------------------------------------------------------- pipelined loop


@pytest.mark.parametrize("channels", [3, 1])
def test_device_side_accumulation_equals_the_host_path(tiny_model, channels):
    planes = _planes(2, h=72, w=56, c=channels, seed=channels)
    host = TiledRunner(tiny_model, "cpu", **TILING, batch_size=3).run(planes, stages=True)
    device = TiledRunner(tiny_model, "cpu", **TILING, batch_size=3, accumulate="device")
    assert device._pipelined()
    piped = TiledRunner(tiny_model, "cpu", **TILING, batch_size=3, pipeline=True,
                        accumulate="host")
    for runner in (device, piped):
        result = runner.run(planes, stages=True)
        assert len(result) == 3
        for got, want in zip(result, host):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_pipelined_loop_backs_off_on_out_of_memory(tiny_model, monkeypatch, fake_compile):
    original = TiledRunner.forward_batch
    sizes = []

    def forward(self, batch, stages):
        sizes.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return original(self, batch, stages)

    monkeypatch.setattr(TiledRunner, "forward_batch", forward)
    planes = _planes()
    runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=8, accumulate="device",
                         backend="compile")
    steps = list(runner.iter_run(planes))
    assert sizes[:3] == [8, 4, 2] and set(sizes[2:]) == {2}  # fixed shape after back-off
    assert steps[-1].done == steps[-1].total == 6
    monkeypatch.undo()
    result = TiledRunner(tiny_model, "cpu", **TILING, accumulate="device", batch_size=2,
                         backend="compile").run(planes)
    np.testing.assert_allclose(result[0], _eager(tiny_model, planes)[0], atol=1e-5)


def test_asynchronous_copy_path_with_fake_cuda_events(tiny_model, monkeypatch):
    """The CUDA branches (pinned staging ring, copy events, host blending one batch behind)
    driven on CPU: pinned buffers become plain ones and events are recorded fakes."""
    from napari_mprnet.engine import staging as staging_module

    events = {"recorded": 0, "waited": 0}

    class FakeEvent:
        def record(self):
            events["recorded"] += 1

        def synchronize(self):
            events["waited"] += 1

    pins = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(staging_module, "host_buffer",
                        lambda shape, pin: pins.append(pin) or torch.zeros(shape))
    monkeypatch.setattr(TiledRunner, "_async_copies", True)
    planes = _planes(2, h=72, w=56)  # 2 x 6 tiles: 4 batches of 3
    runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=3, pipeline=True,
                         accumulate="host")
    result = runner.run(planes, stages=True)
    assert all(pins) and len(pins) == 2 + 2 * 3  # staging ring + two slots of 3 outputs
    assert events["recorded"] == 2 * 4 and events["waited"] >= 4 + 2
    expected = TiledRunner(tiny_model, "cpu", **TILING, batch_size=3).run(planes, stages=True)
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_cancelling_the_pipelined_loop_stops_cleanly(tiny_model):
    runner = TiledRunner(tiny_model, "cpu", **TILING, batch_size=2, pipeline=True)
    generator = runner.iter_run(_planes())
    next(generator)
    generator.close()  # the prefetch thread is joined; nothing raises


# ---------------------------------------------------------------- GPU benchmark script


def test_bench_gpu_smoke_on_cpu(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu",
               "--config", "tiny", "--sizes", "128", "--quick", "--out", str(tmp_path)]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = list(tmp_path.glob("bench_gpu_*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".md").exists()
    report = json.loads(reports[0].read_text())
    rows = {(r["backend"], r["precision"]) for r in report["engine"]}
    assert {("eager", "fp32"), ("eager", "bf16")} <= rows
    assert all(r["mpix_s"] > 0 for r in report["engine"] if "error" not in r)
    assert report["naive"][0]["size"] == 128 and "psnr" in report and "training" in report

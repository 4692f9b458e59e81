"""TiledRunner: planning, batching, out-of-memory back-off, devices and precision."""

import logging
import os
import threading

import numpy as np
import pytest
import torch

from napari_mprnet.engine import devices
from napari_mprnet.engine.devices import describe_device, resolve_device
from napari_mprnet.engine.planning import plan_tiles
from napari_mprnet.engine.runner import (
    Progress,
    TiledRunner,
    drive,
    is_out_of_memory,
    normalize_precision,
    pad_to_multiple,
)
from napari_mprnet.engine.tiling import TileGrid


def _planes(n=1, h=96, w=80, seed=0):
    return np.random.default_rng(seed).random((n, h, w, 3), dtype=np.float32)


def test_batches_give_the_same_result_as_single_tiles(tiny_model):
    planes = _planes(2)
    one = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8, batch_size=1).run(planes)
    many = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8, batch_size=5).run(planes)
    np.testing.assert_allclose(one[0], many[0], atol=1e-5)


def test_progress_counts_tile_batches(tiny_model):
    runner = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8, batch_size=4)
    steps = list(runner.iter_run(_planes(2)))
    # 96x80, 32 px tiles, 8 px overlap: starts 0/24/48/64 by 0/24/48, 12 tiles per plane
    assert steps[-1] == Progress(6, 6) and len(steps) == 6


def _oom_when(predicate):
    original = TiledRunner.forward_tiles
    seen = []

    def forward(self, tiles, stages):
        seen.append(tiles.shape)
        if predicate(tiles):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, tiles, stages)

    return forward, seen


def test_out_of_memory_halves_the_batch(monkeypatch, tiny_model, caplog):
    forward, seen = _oom_when(lambda tiles: tiles.shape[0] > 2)
    monkeypatch.setattr(TiledRunner, "forward_tiles", forward)
    planes = _planes()
    runner = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8, batch_size=8)
    with caplog.at_level(logging.WARNING):
        result = runner.run(planes)
    assert "2 tiles per batch" in caplog.text
    assert [s[0] for s in seen[:3]] == [8, 4, 2]
    monkeypatch.undo()
    expected = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8).run(planes)
    np.testing.assert_allclose(result[0], expected[0], atol=1e-5)


def test_out_of_memory_with_one_tile_shrinks_tiles_and_restarts(monkeypatch, tiny_model, caplog):
    forward, _ = _oom_when(lambda tiles: tiles.shape[1] > 64)
    monkeypatch.setattr(TiledRunner, "forward_tiles", forward)
    planes = _planes(h=200, w=200)
    runner = TiledRunner(tiny_model, "cpu", tile_size=128, tile_overlap=16, batch_size=2)
    with caplog.at_level(logging.WARNING):
        result = runner.run(planes)
    assert "restarting with 64 px tiles" in caplog.text
    monkeypatch.undo()
    expected = TiledRunner(tiny_model, "cpu", tile_size=64, tile_overlap=16).run(planes)
    np.testing.assert_allclose(result[0], expected[0], atol=1e-5)


def test_out_of_memory_everywhere_gives_a_clear_error(monkeypatch, tiny_model):
    forward, _ = _oom_when(lambda tiles: True)
    monkeypatch.setattr(TiledRunner, "forward_tiles", forward)
    runner = TiledRunner(tiny_model, "cpu", tile_size=128, tile_overlap=16)
    with pytest.raises(MemoryError, match="out of memory even with 64x64 tiles"):
        runner.run(_planes(h=200, w=200))


def test_other_errors_are_not_swallowed(monkeypatch, tiny_model):
    def broken(self, tiles, stages):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")

    monkeypatch.setattr(TiledRunner, "forward_tiles", broken)
    with pytest.raises(RuntimeError, match="CUDNN"):
        TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8).run(_planes())


def test_is_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_auto_plan_fits_the_image_and_the_budget(monkeypatch, tiny_model):
    runner = TiledRunner(tiny_model, "cpu", tile_size="auto", tile_overlap=32)
    tile, batch = runner.plan(100, 60)
    assert tile == 104 and batch == 1  # no bigger than the (padded) image
    tile, _ = runner.plan(10_000, 10_000)
    assert 64 <= tile <= 1024 and tile % 8 == 0
    monkeypatch.setattr(TiledRunner, "_budget_bytes", lambda self: 200 * 200 * 4 * 14 * 12)
    small, _ = runner.plan(10_000, 10_000)
    assert small < tile


def test_pad_to_multiple_reflects_and_replicates():
    x = torch.arange(2 * 1 * 10 * 13, dtype=torch.float32).reshape(2, 1, 10, 13)
    padded, h, w = pad_to_multiple(x, 8)
    assert padded.shape == (2, 1, 16, 16) and (h, w) == (10, 13)
    assert torch.equal(padded[..., :10, :13], x)
    tiny, _, _ = pad_to_multiple(torch.ones(1, 1, 3, 5), 8)
    assert tiny.shape == (1, 1, 8, 8) and torch.all(tiny == 1)


def test_precision_names():
    cpu = torch.device("cpu")
    native = devices.cpu_supports_bf16()
    assert normalize_precision(None, cpu) == normalize_precision("auto", cpu) \
        == ("bf16" if native else "fp32")
    assert normalize_precision(None, torch.device("cuda")) == "fp16"
    assert normalize_precision("bfloat16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp32, fp16, bf16"):
        normalize_precision("int8", cpu)
    with pytest.raises(TypeError):
        normalize_precision(16, cpu)


def test_devices():
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")
    assert describe_device("cpu").startswith("cpu (")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the caller's choice is kept and shown
        assert describe_device("cpu").startswith("cpu (1 thread, ")
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(TypeError):
        resolve_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_channels_last_path_runs_on_cpu(tiny_model):
    planes = _planes()
    plain = TiledRunner(tiny_model, "cpu", tile_size=48, tile_overlap=8).run(planes)
    cl = TiledRunner(tiny_model, "cpu", tile_size=48, tile_overlap=8, channels_last=True)
    np.testing.assert_allclose(cl.run(planes)[0], plain[0], atol=1e-5)


def test_runner_rejects_non_mprnet_and_wrong_planes(tiny_model):
    with pytest.raises(TypeError, match="MPRNet"):
        TiledRunner(torch.nn.Identity(), "cpu")
    runner = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8)
    with pytest.raises(ValueError, match="planes"):
        runner.run(np.zeros((1, 32, 32, 2), np.float32))


def test_cpu_bf16_capability_can_be_forced(monkeypatch):
    monkeypatch.setattr(devices, "_cpu_has_native_bf16", lambda: True)
    monkeypatch.delenv(devices.BF16_ENV, raising=False)
    assert devices.cpu_supports_bf16()
    assert describe_device("cpu").endswith(", bf16)")
    monkeypatch.setenv(devices.BF16_ENV, "0")
    assert not devices.cpu_supports_bf16()
    assert describe_device("cpu").endswith(", fp32)")
    monkeypatch.setattr(devices, "_cpu_has_native_bf16", lambda: False)
    monkeypatch.setenv(devices.BF16_ENV, "1")
    assert devices.cpu_supports_bf16()


@pytest.fixture
def automatic_threads(monkeypatch):
    """No thread count chosen by the environment or the caller; 7 physical cores."""
    monkeypatch.delenv(devices.THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "physical_cpu_cores", lambda: 7)
    monkeypatch.setattr(devices, "_STARTUP_THREADS", torch.get_num_threads())
    monkeypatch.setattr(devices, "RECHECK_SECONDS", 0.0)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_physical_cores_are_counted():
    assert 1 <= devices.physical_cpu_cores() <= (os.cpu_count() or 1)


def test_cpu_threads_policy(monkeypatch, automatic_threads):
    for others, threads in ((0, 7), (3, 4), (40, 1)):
        # torch untouched by the caller: the cores other processes' runnable threads leave
        # free, at least one
        monkeypatch.setattr(devices, "_other_runnable", lambda others=others: others)
        assert devices.cpu_threads() == threads
    # where the running count cannot be read: the 1-minute load average above the cores
    monkeypatch.setattr(devices, "_other_runnable", lambda: None)
    for load, threads in ((3.0, 7), (9.5, 4), (40.0, 1)):
        monkeypatch.setattr(devices.os, "getloadavg", lambda load=load: (load, 3.0, 3.0))
        assert devices.cpu_threads() == threads
    monkeypatch.setattr(devices, "_STARTUP_THREADS", torch.get_num_threads() + 1)
    assert devices.cpu_threads() == torch.get_num_threads()  # the caller chose: kept
    monkeypatch.setenv(devices.THREADS_ENV, "3")
    assert devices.cpu_threads() == 3
    monkeypatch.setenv(devices.THREADS_ENV, "many")
    with pytest.raises(ValueError, match="positive integer"):
        devices.cpu_threads()
    before = torch.get_num_threads()
    with devices.using_cpu_threads(1) as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_automatic_threads_follow_the_load_during_a_run(monkeypatch, automatic_threads):
    """Two runs started together must share the cores: the count is measured again between
    tile batches, changed once the new count is seen twice, and restored after the run."""
    before = torch.get_num_threads()
    others = [0]
    monkeypatch.setattr(devices, "_other_runnable", lambda: others[0])
    with devices.using_cpu_threads() as used:
        assert used == 7 and torch.get_num_threads() == 7
        others[0] = 5  # another run starts
        assert devices.follow_cpu_load() == 7  # seen once: not yet
        assert devices.follow_cpu_load() == 2  # seen twice: 2 free cores
        seen = []  # another thread asking meanwhile measures the load, not our count
        thread = threading.Thread(target=lambda: seen.append(devices.cpu_threads()))
        thread.start()
        thread.join()
        assert seen == [2]
        others[0] = 0  # it ended
        devices.follow_cpu_load()
        assert devices.follow_cpu_load() == 7
    assert torch.get_num_threads() == before
    # a count chosen by the caller or threads= is never changed
    with devices.using_cpu_threads(3):
        others[0] = 6
        devices.follow_cpu_load()
        assert devices.follow_cpu_load() == 3


def test_runner_rechecks_the_load_between_tile_batches(monkeypatch, automatic_threads,
                                                       tiny_model):
    calls = []
    monkeypatch.setattr(devices, "_other_runnable", lambda: calls.append(1) or 0)
    runner = TiledRunner(tiny_model, device="cpu", precision="fp32", tile_size=16,
                         tile_overlap=4)
    calls.clear()
    planes = np.random.default_rng(0).random((2, 40, 40, 3), dtype=np.float32)
    runner.run(planes)
    assert len(calls) >= 2 * 9  # once at the start, then between batches (16 px tiles)


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU that reports native bf16 (whatever this one reports)."""
    monkeypatch.delenv(devices.BF16_ENV, raising=False)
    monkeypatch.setattr(devices, "_cpu_has_native_bf16", lambda: True)


def test_cpu_auto_precision_is_bf16_channels_last_where_native(native_bf16, tiny_model):
    runner = TiledRunner(tiny_model, "cpu", tile_size=48, tile_overlap=8)
    assert runner.precision == "bf16" and runner.channels_last
    assert runner.backend.autocast_dtype == torch.bfloat16
    assert TiledRunner(tiny_model, "cpu", precision="auto").precision == "bf16"
    planes = _planes()
    auto = runner.run(planes)[0]
    fp32 = TiledRunner(tiny_model, "cpu", "fp32", tile_size=48, tile_overlap=8).run(planes)[0]
    difference = np.abs(auto - fp32).max()
    assert 0 < difference < 0.02  # bf16 arithmetic ran, and stayed close


def test_cpu_without_native_bf16_falls_back_to_fp32(monkeypatch, tiny_model):
    monkeypatch.delenv(devices.BF16_ENV, raising=False)
    monkeypatch.setattr(devices, "_cpu_has_native_bf16", lambda: False)
    runner = TiledRunner(tiny_model, "cpu", tile_size=48, tile_overlap=8)
    assert runner.precision == "fp32" and runner.backend.autocast_dtype is None
    planes = _planes()
    explicit = TiledRunner(tiny_model, "cpu", "fp32", tile_size=48, tile_overlap=8)
    np.testing.assert_array_equal(runner.run(planes)[0], explicit.run(planes)[0])
    assert describe_device("cpu").endswith(", fp32)")
    # an explicit bf16 is still honoured (emulated, slower, but what was asked for)
    assert TiledRunner(tiny_model, "cpu", "bf16").precision == "bf16"


def test_a_model_that_loses_accuracy_in_bf16_runs_in_fp32(native_bf16, monkeypatch,
                                                          tiny_model):
    from napari_mprnet.engine import precision

    agreement = precision.bf16_agreement_db(tiny_model)
    assert precision.MIN_BF16_AGREEMENT_DB <= agreement < 200
    monkeypatch.setattr(precision, "MIN_BF16_AGREEMENT_DB", agreement + 1)
    assert TiledRunner(tiny_model, "cpu").precision == "fp32"
    assert TiledRunner(tiny_model, "cpu", precision="bf16").precision == "bf16"
    monkeypatch.setattr(precision, "MIN_BF16_AGREEMENT_DB", agreement - 1)
    assert TiledRunner(tiny_model, "cpu").precision == "bf16"
    tiny_model.metadata = {"cpu_bf16": False}  # a per-model flag in the weights' metadata
    assert TiledRunner(tiny_model, "cpu").precision == "fp32"


def test_bf16_agreement_is_rechecked_when_the_weights_change(tiny_model):
    from napari_mprnet.engine import precision

    before = precision.bf16_agreement_db(tiny_model)
    assert precision.bf16_agreement_db(tiny_model) == before  # cached
    with torch.no_grad():
        for parameter in tiny_model.parameters():
            parameter.mul_(8.0)  # huge activations: bf16 rounding shows
    assert precision.bf16_agreement_db(tiny_model) != before


def test_cpu_plan_gives_small_units_on_large_planes(tiny_model):
    runner = TiledRunner(tiny_model, "cpu")
    tile, batch = runner.plan(2048, 2048)
    units = len(TileGrid.plan(2048, 2048, tile, runner._overlap(tile)))
    assert batch == 1 and tile <= 384 and units >= 16
    overlap_cost = units * tile * tile / 2048**2
    assert overlap_cost < 1.2  # the extra pixels computed in the overlaps
    # an accelerator with room keeps big tiles in batches
    tile_gpu, batch_gpu = plan_tiles(2048, 2048, 1, tile_size="auto", tile_overlap=32,
                                     batch_size=None, budget_bytes=40 * 2**30,
                                     pixel_bytes=runner._bytes_per_pixel(),
                                     device=torch.device("cuda"))
    assert tile_gpu > 384 and batch_gpu > 1


def test_progress_reports_tiles_pixels_and_time_left(tiny_model):
    runner = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8, batch_size=4)
    seen = []
    steps = list(runner.iter_run(_planes(2)))
    assert [s.tiles_done for s in steps] == [4, 8, 12, 16, 20, 24]
    assert {s.tiles_total for s in steps} == {24} and {s.pixels_total for s in steps} == {
        24 * 32 * 32}
    assert steps[0].pixels_done == 4 * 32 * 32 and steps[-1].fraction == 1.0
    assert steps[0].eta_s is not None and steps[0].eta_s >= 0 and steps[-1].eta_s == 0
    assert Progress(1, 2).eta_s is None
    assert steps[0].describe().startswith("4/24 tiles, 0.0 of 0.0 Mpix, ")
    assert drive(runner.iter_run(_planes(1)), on_step=seen.append)[0].shape == (1, 96, 80, 3)
    assert [s.tiles_done for s in seen] == [4, 8, 12]


def test_cpu_runs_use_the_runner_threads_and_restore_the_caller_s(monkeypatch, tiny_model):
    original = TiledRunner.forward_tiles
    during = []

    def forward(self, tiles, stages):
        during.append(torch.get_num_threads())
        return original(self, tiles, stages)

    monkeypatch.setattr(TiledRunner, "forward_tiles", forward)
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    TiledRunner(tiny_model, "cpu", tile_size=48, tile_overlap=8, threads=wanted).run(_planes())
    assert set(during) == {wanted} and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        TiledRunner(tiny_model, "cpu", threads=0)


def test_the_bf16_check_runs_with_the_runner_threads(native_bf16, monkeypatch, tiny_model):
    from napari_mprnet.engine import precision

    seen = []
    monkeypatch.setattr(precision, "bf16_agreement_db",
                        lambda model: seen.append(torch.get_num_threads()) or 99.0)
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    assert TiledRunner(tiny_model, "cpu", threads=wanted).precision == "bf16"
    assert seen == [wanted] and torch.get_num_threads() == before


def _forward(model, image, split):
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None]
        return model(x, split_patches=split)[0][0].permute(1, 2, 0).numpy()


def test_tiles_run_whole_by_default_and_split_on_request(tiny_model):
    """One tile: the default run is the unsplit forward, split_patches=True the paper's."""
    from napari_mprnet import restore

    image = _planes(1, 64, 64)[0]
    for split in (False, True):
        kwargs = {"split_patches": True} if split else {}
        runner = TiledRunner(tiny_model, "cpu", precision="fp32", tile_size=64, **kwargs)
        np.testing.assert_allclose(runner.run(image[None])[0][0], _forward(
            tiny_model, image, split), atol=1e-6)
        out = restore(image, model=tiny_model, device="cpu", precision="fp32",
                      tile_size=64, strength=1.0, **kwargs)
        np.testing.assert_allclose(out, _forward(tiny_model, image, split), atol=1e-6)
    assert not np.allclose(_forward(tiny_model, image, False),
                           _forward(tiny_model, image, True), atol=1e-3)


def test_tiled_run_agrees_with_the_whole_image_without_the_split(local_tiny_model):
    """With a local network (constant channel attention), blended 96-px tiles give the
    whole-image result within 0.01 unsplit; the split leaves every tile's centre lines."""
    model = local_tiny_model
    image = _planes(1, 192, 192)[0]
    for split, bound in ((False, lambda d: d < 0.01), (True, lambda d: d > 0.1)):
        runner = TiledRunner(model, "cpu", precision="fp32", tile_size=96, tile_overlap=32,
                             split_patches=split)
        diff = np.abs(runner.run(image[None])[0][0] - _forward(model, image, split)).max()
        assert bound(diff), (split, diff)


@pytest.mark.parametrize("loop", [{}, {"pipeline": True}, {"accumulate": "device"}])
def test_low_band_of_the_residual_is_accumulated_like_the_outputs(tiny_model, loop):
    from scipy import ndimage

    from napari_mprnet.engine.bands import residual_low_band

    planes = _planes(2, h=40, w=56)
    whole = TiledRunner(tiny_model, "cpu", tile_size=56, tile_overlap=8, **loop)
    final, *_stages, low = whole.run(planes, stages=True, low_band=True)
    assert len(_stages) == 2
    np.testing.assert_array_equal(low, residual_low_band(final, planes))  # one tile
    np.testing.assert_allclose(low, ndimage.gaussian_filter(
        (final - planes).astype(np.float64), (0, 2, 2, 0), mode="reflect"), atol=1e-6)
    tiled = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8, **loop)
    final, low = tiled.run(planes, low_band=True)
    plain = TiledRunner(tiny_model, "cpu", tile_size=32, tile_overlap=8).run(planes,
                                                                             low_band=True)
    np.testing.assert_allclose(final, plain[0], atol=1e-6)
    np.testing.assert_allclose(low, plain[1], atol=1e-6)

"""Runs in several threads at once share networks (the model cache, a model passed in) and
runners (dask blocks): nothing a run does may change what another run is computing.

Each test forces the overlap: a forward hook stops one thread in the middle of its forward
pass and lets a second thread do its part there, so the tests do not depend on timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from napari_mprnet import restore
from napari_mprnet.engine.runner import TiledRunner
from napari_mprnet.model import MPRNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"tile_size": 16, "tile_overlap": 4, "device": "cpu"}


def _image() -> np.ndarray:
    return (np.random.default_rng(0).random((24, 24)) * 1000).astype(np.uint16)


def _copy(model: MPRNet) -> MPRNet:
    clone = MPRNet(model.config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def _in_the_middle(model: MPRNet, first: Callable[[], None], second: Callable[[], None]
                   ) -> None:
    """Run ``first`` in a thread; in the middle of its first forward pass of ``model``,
    run ``second`` in another thread to the end; re-raise what either raised."""
    errors: list[BaseException] = []
    paused: list[bool] = []

    def guarded(function):
        def run():
            try:
                function()
            except BaseException as error:  # noqa: BLE001 - re-raised below
                errors.append(error)
        return run

    worker = threading.Thread(target=guarded(first))

    def hook(module, args, output):
        if threading.current_thread() is worker and not paused:
            paused.append(True)
            other = threading.Thread(target=guarded(second))
            other.start()
            other.join(120)

    handle = model.tail.register_forward_hook(hook)
    try:
        worker.start()
        worker.join(240)
    finally:
        handle.remove()
    assert paused and not worker.is_alive()
    if errors:
        raise errors[0]


def test_a_run_never_converts_a_network_another_thread_is_running(tiny_model):
    image = _image()
    expected = restore(image, model=_copy(tiny_model), **FAST)
    results: dict[str, np.ndarray] = {}
    converted_while_running: list[str] = []
    original_apply = tiny_model._apply
    first_thread: list[threading.Thread] = []

    def spy(fn, *args, **kwargs):  # Module.to() re-assigns every parameter through here
        if threading.current_thread() not in first_thread:
            converted_while_running.append(threading.current_thread().name)
        return original_apply(fn, *args, **kwargs)

    def first():
        first_thread.append(threading.current_thread())
        results["first"] = restore(image, model=tiny_model, **FAST)

    def second():  # runs while the first thread is inside the network
        tiny_model._apply = spy
        results["second"] = restore(image, model=tiny_model, **FAST)

    try:
        _in_the_middle(tiny_model, first, second)
    finally:
        tiny_model.__dict__.pop("_apply", None)
    assert converted_while_running == []
    np.testing.assert_array_equal(results["first"], expected)
    np.testing.assert_array_equal(results["second"], expected)


def test_probe_windows_leave_the_runner_backend_to_other_threads(tiny_model):
    runner = TiledRunner(tiny_model, "cpu", tile_size=16, tile_overlap=4)
    eager = runner.backend
    used: list[str] = []

    class TileShaped:  # stands for a compiled backend (fixed shape) that does run tiles
        fixed_shape = True
        split_patches = eager.split_patches

        def __call__(self, batch, stages):
            used.append(threading.current_thread().name)
            return eager(batch, stages)

    compiled = TileShaped()
    runner.backend = compiled
    windows = np.random.default_rng(1).random((1, 40, 40, 3)).astype(np.float32)
    tiles = np.random.default_rng(2).random((1, 16, 16, 3)).astype(np.float32)
    tiles_alone = runner.forward_tiles(tiles, False)[0]
    used.clear()
    got = {}

    def first():
        got["window"] = runner.forward_window(windows)

    def second():  # another block's tiles while the probe window runs
        threading.current_thread().name = "tiles"
        got["tiles"] = runner.forward_tiles(tiles, False)[0]

    _in_the_middle(tiny_model, first, second)
    assert used == ["tiles"]  # the tiles went through the runner's backend, the window not
    assert runner.backend is compiled
    np.testing.assert_array_equal(got["tiles"], tiles_alone)

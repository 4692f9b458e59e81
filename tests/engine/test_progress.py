"""Progress counts all the work of a run: its tile batches and the automatic strength's probe
passes, and says "done" only at the end."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mprnet.api import iter_restore
from napari_mprnet.engine.progress import FollowingWork, Progress

FAST = {"device": "cpu", "tile_overlap": 8, "precision": "fp32"}


def _steps(image, **kwargs):
    steps = []
    gen = iter_restore(image, **FAST, **kwargs)
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


def test_probe_passes_are_counted_and_done_comes_last(tiny_model):
    image = np.random.default_rng(0).random((3, 64, 80)).astype(np.float32)
    steps, _ = _steps(image, model=tiny_model, tile_size=32)
    totals = {s.total for s in steps}
    assert len(totals) == 1  # the total is known from the first step on
    total = steps[-1].total
    tile_steps = [s for s in steps if s.probes_done == 0]
    probe_steps = [s for s in steps if s.probes_done > 0]
    assert len(probe_steps) == 3 and steps[-1].probes_total == 3  # one per plane
    assert len(tile_steps) + 3 == total
    assert [s.done for s in steps] == list(range(1, total + 1))
    assert all(s.done < s.total for s in steps[:-1])
    assert all(s.fraction < 1.0 for s in steps[:-1]) and steps[-1].fraction == 1.0
    # the last tile is not the end: 3 whole 64 x 80 planes (windows), two forwards each
    last_tile = tile_steps[-1]
    assert last_tile.pixels_total - last_tile.pixels_done == 3 * 2 * 64 * 80
    assert "strength 0/3 planes" in last_tile.describe()
    assert "strength 3/3 planes" in steps[-1].describe()
    assert steps[-1].eta_s == 0.0


def test_no_probe_steps_with_a_fixed_strength_or_another_task(tiny_model):
    image = np.random.default_rng(1).random((2, 48, 48)).astype(np.float32)
    for kwargs in ({"strength": 0.8}, {"task": "deblur", "strength": "auto"}):
        steps, _ = _steps(image, model=tiny_model, tile_size=32, **kwargs)
        assert all(s.probes_total == 0 for s in steps)
        assert steps[-1].done == steps[-1].total == len(steps)
        assert "strength" not in steps[-1].describe()


def test_closing_during_the_probe_stops_between_planes(tiny_model, monkeypatch):
    forwards = []
    from napari_mprnet.engine.runner import TiledRunner

    original = TiledRunner.forward_window

    def counted(self, windows):
        forwards.append(len(windows))
        return original(self, windows)

    monkeypatch.setattr(TiledRunner, "forward_window", counted)
    image = np.random.default_rng(2).random((4, 48, 48)).astype(np.float32)
    gen = iter_restore(image, model=tiny_model, tile_size=64, **FAST)
    for step in gen:
        if step.probes_done == 1:
            gen.close()  # what a cancelled napari worker does
            break
    assert len(forwards) == 1  # the other 3 planes were never probed


def test_following_work_raises_totals_and_advances():
    work = FollowingWork(2, 200)

    def run():
        yield Progress(1, 2, 1, 2, 50, 100, 1.0)
        yield Progress(2, 2, 2, 2, 100, 100, 2.0)
        return "out"

    gen = work.around(run())
    first = next(gen)
    assert (first.done, first.total, first.pixels_total, first.probes_total) == (1, 4, 300, 2)
    second = next(gen)
    assert second.done == 2 and second.fraction == pytest.approx(100 / 300)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "out"
    third = work.advance(100)
    assert (third.done, third.total, third.pixels_done, third.probes_done) == (3, 4, 200, 1)
    assert third.elapsed_s >= 2.0
    fourth = work.advance(100)
    assert fourth.done == fourth.total and fourth.fraction == 1.0

"""Batches drawn ahead in a worker thread: same batches, resumable states, errors surface."""

from __future__ import annotations

import threading
from contextlib import closing

import numpy as np
import pytest
import torch

from napari_mprnet.training.data import PairSet
from napari_mprnet.training.prefetch import BatchPrefetcher
from napari_mprnet.training.sampling import PatchSampler


def _sampler(seed: int = 3) -> PatchSampler:
    rng = np.random.default_rng(0)
    planes = [rng.random((40, 48, 1), dtype=np.float32) for _ in range(3)]
    pairs = PairSet(planes, [p * 0.5 for p in planes], ["a", "b", "c"])
    return PatchSampler(pairs, 16, 2, seed=seed, channels=1)


def test_prefetched_batches_and_states_match_drawing_in_order():
    direct = _sampler()
    expected = []
    for _ in range(5):
        batch = direct.sample()
        expected.append((batch, direct.state_dict()))
    ahead = _sampler()
    with closing(BatchPrefetcher(ahead.sample, ahead.state_dict, depth=3)) as batches:
        got = [batches.next() for _ in range(5)]
    for ((x, y), state), ((gx, gy), gstate) in zip(expected, got):
        assert torch.equal(x, gx) and torch.equal(y, gy)
        assert state == gstate
    # the state after batch 2 resumes at batch 3, although the worker had drawn further
    resumed = _sampler(seed=99)
    resumed.load_state_dict(got[1][1])
    x3, _ = resumed.sample()
    assert torch.equal(x3, expected[2][0][0])


def test_worker_error_is_raised_by_next():
    calls = []

    def draw():
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("bad plane")
        return len(calls)

    with closing(BatchPrefetcher(draw, lambda: None)) as batches:
        assert batches.next() == (1, None)
        with pytest.raises(ValueError, match="bad plane"):
            batches.next()


def test_close_stops_the_worker():
    before = {t.ident for t in threading.enumerate()}
    batches = BatchPrefetcher(lambda: 0, lambda: None, depth=1)
    worker = [t for t in threading.enumerate() if t.ident not in before]
    batches.next()
    batches.close()
    assert worker and not any(t.is_alive() for t in worker)
    with pytest.raises(ValueError, match="depth"):
        BatchPrefetcher(lambda: 0, lambda: None, depth=0)

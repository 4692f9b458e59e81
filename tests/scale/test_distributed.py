"""dask.distributed: results equal the in-process path, one model load per worker."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from distributed import Client, LocalCluster

from napari_mprnet import restore
from napari_mprnet.scale import models
from napari_mprnet.scale.distributed import (
    choose_worker_device,
    worker_load_counts,
)

FAST = {"tile_size": 32, "tile_overlap": 8, "device": "cpu"}


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                           dashboard_address=None)
    with Client(cluster) as c:
        yield c
    cluster.close()


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 3000 + 200).astype(np.uint16)


def test_distributed_result_equals_in_process(client, tiny_model):
    image = _image((3, 80, 90))
    expected = restore(image, model=tiny_model, **FAST)
    lazy_out = restore(da.from_array(image, chunks=(1, 40, 45)), model=tiny_model,
                       chunk_size=24, **FAST)
    got = client.compute(lazy_out).result()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-2)


def test_model_loaded_once_per_worker_and_once_in_the_graph(client, tiny_model):
    client.run(models.reset_cache)
    image = _image((4, 100, 100), seed=1)
    lazy_out = restore(da.from_array(image, chunks=(1, 100, 100)), model=tiny_model,
                       chunk_size=24, **FAST)
    first = lazy_out.compute()
    second = lazy_out.compute()
    np.testing.assert_array_equal(first, second)
    counts = worker_load_counts(client)
    n_blocks = lazy_out.npartitions
    assert n_blocks >= 16 and len(counts) == 2
    assert all(c <= 1 for c in counts.values()) and sum(counts.values()) >= 1
    # tasks carry a content hash; the weights are one shared key of the graph, not a copy
    # per task
    handle = models.handle_for(tiny_model, tiny_model, portable=True)
    payload = models._PAYLOADS[handle.key]
    shipped = pickle.dumps(handle)
    assert len(shipped) < 1000 < len(payload) and pickle.loads(shipped).live is None
    graph = pickle.dumps(dict(lazy_out.__dask_graph__()))
    assert len(payload) < len(graph) < image.nbytes + 1.5 * len(payload)


def test_bundled_model_is_loaded_by_name_on_workers(client):
    image = _image((40, 40), seed=2)
    lazy_out = restore(da.from_array(image), task="derain", tile_size=40, device="cpu",
                       normalize="range")
    assert lazy_out.compute().shape == image.shape


def test_workers_are_pinned_to_cpu_with_their_thread_count(client):
    devices = client.run(lambda: models._PINNED_DEVICE)
    assert set(devices.values()) == {"cpu"}
    threads = client.run(lambda: __import__("torch").get_num_threads())
    assert set(threads.values()) == {1}


def test_worker_device_choice(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [choose_worker_device(i, 1) for i in range(5)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]
    monkeypatch.setenv("NAPARI_MPRNET_DEVICE", "cuda:2")
    assert choose_worker_device(0, 1) == "cuda:2"
    monkeypatch.delenv("NAPARI_MPRNET_DEVICE")
    monkeypatch.setitem(__import__("sys").modules, "dask_cuda", object())
    assert choose_worker_device(3, 1) == "cuda:0"
    assert models.effective_device("cpu") == "cpu"

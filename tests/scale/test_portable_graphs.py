"""A lazy result built with no cluster in sight computes on a cluster started afterwards.

No ``prepare_client``: the graph itself carries what the worker needs (a file's path and
hash, or an in-memory model's weights as one shared key).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from distributed import Client, LocalCluster

from napari_mprnet import restore, save_model
from napari_mprnet.scale import models

FAST = {"tile_size": 32, "tile_overlap": 8, "device": "cpu"}


def test_graphs_built_before_the_cluster_compute_on_it(tmp_path, tiny_model, one_torch_thread):
    image = (np.random.default_rng(0).random((2, 100, 100)) * 3000 + 100).astype(np.uint16)
    expected = restore(image, model=tiny_model, **FAST)
    path = save_model(tiny_model, tmp_path / "tiny.safetensors")
    chunks = (1, 50, 50)
    from_file = restore(da.from_array(image, chunks=chunks), model=str(path), chunk_size=48,
                        **FAST)
    in_memory = restore(da.from_array(image, chunks=chunks), model=tiny_model, chunk_size=48,
                        **FAST)
    # the weights are in the graph once, not once per task
    payload = models.model_to_bytes(tiny_model)
    n_blocks = in_memory.npartitions
    graph = len(pickle.dumps(dict(in_memory.__dask_graph__())))
    assert n_blocks >= 8 and len(payload) < graph < image.nbytes + 1.5 * len(payload)
    assert len(pickle.dumps(dict(from_file.__dask_graph__()))) < image.nbytes + 50_000

    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        got_file = client.compute(from_file).result()
        got_memory = client.compute(in_memory).result()
        loads = client.run(models.load_count)
    np.testing.assert_allclose(got_file, expected, rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(got_memory, expected, rtol=1e-5, atol=1e-2)
    assert list(loads.values()) == [2]  # each network built once on the worker


def test_changed_model_file_is_refused_by_the_worker_side(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "tiny.safetensors")
    handle = models.handle_for(tiny_model, str(path))
    models.reset_cache()
    shipped = pickle.loads(pickle.dumps(handle))  # what a worker process receives
    assert shipped.live is None and shipped.path == str(path.absolute())
    with open(path, "ab") as file:
        file.write(b"changed")
    with pytest.raises(ValueError, match="changed after the task graph was built"):
        shipped.get()

"""Restoration on a dask.distributed cluster: one model load per worker, one GPU per worker.

Nothing here is imported unless a distributed client is in use. Usage::

    from distributed import Client
    from napari_mprnet import restore

    client = Client("tcp://scheduler:8786")          # or local_cluster(4)
    out = restore(da.from_zarr("big.zarr"), task="denoise", model="my.safetensors")
    out.to_zarr("big_denoised.zarr")                 # streamed, chunk by chunk, on the workers

:func:`prepare_client` (called by ``restore`` for the current client) registers worker plugins,
each sent once per worker, also to workers that join later. None is needed for a result to
compute: the graph carries its model (:mod:`.models`), so a graph built before any cluster
existed runs on one. The plugins are optimisations:

- :class:`DevicePlugin` pins the worker to a device: with several GPUs, ``cuda:{index}``
  from the worker's index (under dask-cuda's ``LocalCUDACluster``, which gives each worker its
  own ``CUDA_VISIBLE_DEVICES``, ``cuda:0``); without a GPU, the CPU with as many torch threads
  as the worker has threads. ``NAPARI_MPRNET_DEVICE`` in a worker's environment overrides it.
- :class:`ModelPlugin` (``prepare_client(client, handle)``) sends an in-memory model's
  serialised weights ahead; each worker process builds the network once
  (:func:`napari_mprnet.scale.models.load_count` counts it).
"""

from __future__ import annotations

import os
import re
import sys
import weakref
from typing import Any

from distributed import Client, LocalCluster, WorkerPlugin, default_client

from . import models

__all__ = [
    "DevicePlugin",
    "ModelPlugin",
    "current_client",
    "local_cluster",
    "prepare_client",
    "worker_load_counts",
]

_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def current_client() -> Client | None:
    """The default distributed client, or None when there is none."""
    try:
        return default_client()
    except ValueError:
        return None


def _worker_index(worker: Any) -> int:
    name = getattr(worker, "name", None)
    if isinstance(name, int):
        return name
    match = re.search(r"(\d+)$", str(name))
    if match:
        return int(match.group(1))
    return abs(hash(str(getattr(worker, "address", name))))


def choose_worker_device(index: int, nthreads: int) -> str:
    """The device for the worker with ``index`` (see :class:`DevicePlugin`)."""
    import torch

    override = os.environ.get("NAPARI_MPRNET_DEVICE")
    if override:
        return override
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if count == 1 or "dask_cuda" in sys.modules:
            return "cuda:0"  # one visible device (dask-cuda sets one per worker)
        return f"cuda:{index % count}"
    torch.set_num_threads(max(1, int(nthreads)))
    return "cpu"


class DevicePlugin(WorkerPlugin):
    """Pin each worker process to one device (see the module docstring)."""

    name = "napari-mprnet-device"

    def setup(self, worker: Any) -> None:
        state = getattr(worker, "state", None)
        nthreads = getattr(state, "nthreads", None) or getattr(worker, "nthreads", 1) or 1
        models.pin_device(choose_worker_device(_worker_index(worker), nthreads))


class ModelPlugin(WorkerPlugin):
    """Deliver one model's serialised weights to every worker, once."""

    def __init__(self, key: str, payload: bytes) -> None:
        self.key = key
        self.payload = payload
        self.name = f"napari-mprnet-model-{key[:16]}"

    def setup(self, worker: Any) -> None:
        models.add_payload(self.key, self.payload)


def _register(client: Client, plugin: WorkerPlugin) -> None:
    if hasattr(client, "register_plugin"):
        client.register_plugin(plugin, name=plugin.name)
    else:  # distributed < 2023.9
        client.register_worker_plugin(plugin, name=plugin.name)


def prepare_client(client: Client, handle: models.ModelHandle | None = None) -> None:
    """Register the device plugin and, if ``handle``'s weights are not loadable by name,
    a :class:`ModelPlugin` with them (each at most once per client)."""
    done = _PREPARED.setdefault(client, set())
    if "device" not in done:
        _register(client, DevicePlugin())
        done.add("device")
    if handle is None or handle.key in done:
        return
    payload = models._PAYLOADS.get(handle.key)
    if payload is not None:
        _register(client, ModelPlugin(handle.key, payload))
    elif handle.source is None and handle.path is None:
        raise ValueError("this model cannot reach the workers: make its handle with "
                         "napari_mprnet.scale.models.handle_for(model, portable=True)")
    done.add(handle.key)


def worker_load_counts(client: Client) -> dict[str, int]:
    """Networks each worker has loaded so far (worker address -> count)."""
    return client.run(models.load_count)


def local_cluster(n_workers: int, threads_per_worker: int = 1, gpus: bool | None = None,
                  **kwargs: Any) -> LocalCluster:
    """Start a cluster on this machine: one single-threaded worker process per ``n_workers``
    (CPU), or with ``gpus`` (default: when CUDA and dask-cuda are present) a
    ``dask_cuda.LocalCUDACluster`` with one worker per GPU (``n_workers`` of them at most)."""
    import torch

    if gpus is None:
        gpus = torch.cuda.is_available()
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            LocalCUDACluster = None
        if LocalCUDACluster is not None:
            count = torch.cuda.device_count()
            visible = ",".join(str(i) for i in range(min(n_workers, count)))
            return LocalCUDACluster(CUDA_VISIBLE_DEVICES=visible, **kwargs)
    kwargs.setdefault("dashboard_address", None)
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                        processes=True, **kwargs)

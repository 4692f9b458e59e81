"""Where a lazy or distributed run gets its network from.

A task graph never carries the network object. Each task carries a small
:class:`ModelHandle`: a content hash plus what any process needs to get the same network:

- a bundled model: its name (every install has the file, checked by SHA-256);
- a model file: its absolute path; each process loads it at most once and first checks that
  the file still has the hash the graph was built with;
- a model that only exists in memory: nothing in the handle; its serialised weights are ONE
  key of the graph (:attr:`ModelHandle.payload`), shared by every task, so dask sends them to
  each worker once, whatever the number of tasks.

In the process that built the graph the handle also holds the live network, so the local
(threaded) scheduler uses it directly; once pickled for another process the live network is
dropped and the process builds its own copy once, cached in :data:`_MODELS` by the hash. So a
lazy result computes on any scheduler or cluster, including one started after the graph was
built. :func:`napari_mprnet.scale.distributed.prepare_client` is an optional optimisation on
top (device pinning, weights sent ahead in a worker plugin).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ..model.arch import MPRNet

__all__ = [
    "ModelHandle",
    "add_payload",
    "effective_device",
    "file_sha256",
    "handle_for",
    "load_count",
    "model_from_bytes",
    "model_to_bytes",
    "pin_device",
    "reset_cache",
]

#: Networks loaded in this process: content hash -> model.
_MODELS: dict[str, MPRNet] = {}
#: Serialised weights registered in this process (by a worker plugin): hash -> bytes.
_PAYLOADS: dict[str, bytes] = {}
_LOCK = threading.Lock()
#: How many times this process has built a network from a handle (read back in tests and
#: benchmarks with ``client.run(load_count)``).
_LOADS = 0


def load_count() -> int:
    """Networks loaded from handles by this process so far."""
    return _LOADS


def reset_cache(payloads: bool = False) -> None:
    """Forget the networks loaded here and reset :func:`load_count` (and, with ``payloads``,
    the registered weights too: workers then need :func:`prepare_client` again)."""
    global _LOADS
    with _LOCK:
        _MODELS.clear()
        if payloads:
            _PAYLOADS.clear()
        _LOADS = 0


def add_payload(key: str, payload: bytes) -> None:
    """Make the serialised weights ``payload`` (from :func:`model_to_bytes`) loadable here."""
    with _LOCK:
        _PAYLOADS[key] = payload


def model_to_bytes(model: MPRNet) -> bytes:
    """Serialise ``model`` (weights, configuration, metadata) for :func:`model_from_bytes`."""
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "config": model.config.to_dict(),
                "metadata": dict(getattr(model, "metadata", {}) or {})}, buffer)
    return buffer.getvalue()


def model_from_bytes(payload: bytes) -> MPRNet:
    """Rebuild a network from :func:`model_to_bytes` output (no code is unpickled)."""
    from ..model.from_state import model_from_state_dict

    saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    model = model_from_state_dict(saved["state_dict"], saved["config"], "model payload")
    model.metadata = dict(saved.get("metadata") or {})
    return model.eval()


@cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (cached per path, size and modification time)."""
    stat = os.stat(path)
    return _file_sha256(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@dataclass
class ModelHandle:
    """A picklable reference to a network; see the module docstring.

    Parameters
    ----------
    key : str
        Content hash of the weights (of the file, for a file).
    source : str, optional
        A bundled model name that any process can load without help.
    path : str, optional
        A model file that the processes running the graph can read.
    live : MPRNet, optional
        The network itself, in the process that made the handle (never pickled).
    payload : bytes, optional
        Serialised weights of an in-memory model, in the process that made the handle (never
        pickled with the handle: the graph carries them as one shared key).
    """

    key: str
    source: str | None = None
    path: str | None = None
    live: MPRNet | None = field(default=None, repr=False, compare=False)
    payload: bytes | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {"key": self.key, "source": self.source, "path": self.path, "live": None,
                "payload": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"path": None, "payload": None, **state})

    def get(self, weights: bytes | None = None) -> MPRNet:
        """The network: the live one, or this process's cached copy (built once, from the
        registered weights, ``weights`` (the graph's copy), the bundled name or the file)."""
        if self.live is not None:
            return self.live
        model = _MODELS.get(self.key)
        if model is not None:
            return model
        with _LOCK:  # threads of one worker wait for a single load
            model = _MODELS.get(self.key)
            if model is None:
                model = self._load(weights)
                _MODELS[self.key] = model
                global _LOADS
                _LOADS += 1
        return model

    def _load(self, weights: bytes | None) -> MPRNet:
        payload = _PAYLOADS.get(self.key, weights)
        if payload is not None:
            if hashlib.sha256(payload).hexdigest() != self.key:
                raise ValueError("the model weights in this task graph are damaged "
                                 "(their SHA-256 differs); build the graph again")
            return model_from_bytes(payload)
        from ..weights import load_model

        if self.source is not None:
            return load_model(self.source)
        if self.path is not None:
            try:
                found = file_sha256(self.path)
            except OSError as err:
                raise ValueError(f"model file '{self.path}' is not readable in this process "
                                 f"({err.strerror}); put it where every worker can read it, or "
                                 "pass the loaded model instead of its path") from None
            if found != self.key:
                raise ValueError(f"model file '{self.path}' changed after the task graph was "
                                 "built (its SHA-256 differs); build the graph again")
            return load_model(self.path)
        raise RuntimeError(
            "the network is not available in this process: this handle carries neither a "
            "bundled name, a file nor weights; make it with "
            "napari_mprnet.scale.models.handle_for(model, source)"
        )


def handle_for(model: MPRNet, source: Any = None, portable: bool = False) -> ModelHandle:
    """A handle for ``model``, which was resolved from ``source`` (what the user passed).

    None or a task name is the bundled default (loadable by name everywhere); a path is that
    file (path and file hash); anything else (an MPRNet; a bioimage.io package folder) gets
    the SHA-256 of its serialised
    weights as key and those bytes as :attr:`ModelHandle.payload`. With ``portable=True``
    the bytes are also registered with :func:`add_payload`, for
    :func:`~napari_mprnet.scale.distributed.prepare_client` to ship ahead.
    """
    from ..pretrained import bundled_info, bundled_name

    name = bundled_name(source)
    if name is not None:
        return ModelHandle(bundled_info(name)["sha256"], name, live=model)
    if isinstance(source, (str, os.PathLike)) and Path(source).expanduser().is_file():
        path = Path(source).expanduser().absolute()
        return ModelHandle(file_sha256(path), path=str(path), live=model)
    payload = model_to_bytes(model)  # an MPRNet, or a package folder (no one file to hash)
    key = hashlib.sha256(payload).hexdigest()
    if portable:
        add_payload(key, payload)
    return ModelHandle(key, live=model, payload=payload)


#: Device this worker process was pinned to by the distributed helpers (None: not pinned).
_PINNED_DEVICE: str | None = None


def pin_device(device: str | None) -> None:
    """Pin this process to ``device`` (used by the dask worker plugin)."""
    global _PINNED_DEVICE
    _PINNED_DEVICE = device


def effective_device(requested: Any) -> Any:
    """The device a block runs on: a pinned worker device replaces "auto" and a bare "cuda";
    anything more specific ("cpu", "cuda:1", ...) is kept."""
    if _PINNED_DEVICE is not None and requested in (None, "auto", "cuda"):
        return _PINNED_DEVICE
    return requested

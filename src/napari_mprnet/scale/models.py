"""Where a lazy or distributed run gets its network from.

A task graph never carries the network itself. It carries a small :class:`ModelHandle`: a
content hash plus, where every process can load it on its own, the name of a bundled model.
In the process that built the graph the handle also holds the live network, so the local
(threaded) scheduler uses it directly; once pickled for another process the live network is
dropped, and the process loads it at most once into :data:`_MODELS`, keyed by the hash. The
weights of a model that only exists in memory (or in a file workers may not see) reach the
workers once, as bytes registered with :func:`add_payload`: the distributed helpers send them
in a worker plugin, never inside tasks.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from ..model.arch import MPRNet

__all__ = [
    "ModelHandle",
    "add_payload",
    "effective_device",
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
    from ..weights import model_from_state_dict

    saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    model = model_from_state_dict(saved["state_dict"], saved["config"], "model payload")
    model.metadata = dict(saved.get("metadata") or {})
    return model.eval()


@dataclass
class ModelHandle:
    """A picklable reference to a network; see the module docstring.

    Parameters
    ----------
    key : str
        Content hash of the weights.
    source : str, optional
        A bundled model name that any process can load without help.
    live : MPRNet, optional
        The network itself, in the process that made the handle (never pickled).
    """

    key: str
    source: str | None = None
    live: MPRNet | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {"key": self.key, "source": self.source, "live": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def get(self) -> MPRNet:
        """The network: the live one, or this process's cached copy (loaded once)."""
        if self.live is not None:
            return self.live
        model = _MODELS.get(self.key)
        if model is not None:
            return model
        with _LOCK:  # threads of one worker wait for a single load
            model = _MODELS.get(self.key)
            if model is None:
                model = self._load()
                _MODELS[self.key] = model
                global _LOADS
                _LOADS += 1
        return model

    def _load(self) -> MPRNet:
        payload = _PAYLOADS.get(self.key)
        if payload is not None:
            return model_from_bytes(payload)
        if self.source is not None:
            from ..weights import load_model

            return load_model(self.source)
        raise RuntimeError(
            "the network is not available in this process: a model given as an object or "
            "file must be sent to dask workers first, with "
            "napari_mprnet.scale.distributed.prepare_client(client, model)"
        )


def handle_for(model: MPRNet, source: Any = None, portable: bool = False) -> ModelHandle:
    """A handle for ``model``.

    ``source`` is what the user passed (None or a task name means the bundled default, which
    every process can load by name). With ``portable=False`` (local schedulers) the key is
    cheap and the live model travels nowhere. With ``portable=True`` the key is the SHA-256 of
    the serialised weights and, unless the model is a bundled default, its bytes are
    registered with :func:`add_payload` (the distributed helpers ship them to workers).
    """
    from ..pretrained import is_bundled_name

    if isinstance(source, str) and is_bundled_name(source):
        from ..pretrained import bundled_info

        return ModelHandle(bundled_info(source)["sha256"], source, model)
    if not portable:
        return ModelHandle(f"live-{id(model):x}", None, model)
    payload = model_to_bytes(model)
    key = hashlib.sha256(payload).hexdigest()
    add_payload(key, payload)
    return ModelHandle(key, None, model)


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

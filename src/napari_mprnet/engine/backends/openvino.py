"""The ``openvino`` backend: the network converted once to OpenVINO and run by its CPU plugin.

Conversion (``torch.jit.trace`` of the network with all three outputs, then
``openvino.convert_model``) takes seconds to a minute and happens once per weights,
configuration and ``split_patches``: the result has a dynamic batch, height and width, so one
conversion serves every tile size, the automatic strength's probe windows and per-stage
outputs (the stage images are computed by the network anyway). It is kept in memory for the
process and saved on disk (:mod:`.openvino_store`, beside the TensorRT engines), where a later
process loads it in about a second. A damaged cache entry is converted again.

The converted network is compiled for the CPU per precision and thread count (a fraction of
a second): bf16 where the processor computes it natively
(:func:`~napari_mprnet.engine.devices.cpu_supports_bf16`) and the run's precision is bf16
(:func:`~napari_mprnet.engine.precision.choose_precision` asks the model's bf16 accuracy
check first), f32 otherwise; the thread count is torch's count for the run (set by the runner
from :func:`~napari_mprnet.engine.devices.cpu_threads`), read at every call.

Before a compiled network is used, its outputs on the engine's probe picture are compared
with the eager fp32 network's (computed at conversion and stored with it, so a cache hit
runs no eager pass); a network that disagrees (below
:data:`~napari_mprnet.engine.precision.MIN_BF16_AGREEMENT_DB`) is never used. Any failure
(OpenVINO missing, a network that does not convert, a CPU the plugin does not support, a
disagreement) warns once in one line and hands over to the eager backend.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import logging
import math
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import devices
from ..precision import MIN_BF16_AGREEMENT_DB, probe_picture, weights_version
from .base import Backend, BackendFallbackWarning
from .cache import cache_dir, weights_hash
from .eager import EagerBackend
from .openvino_store import DamagedEntry, entry_folder, load_entry, save_entry

__all__ = ["OpenVINOBackend", "clear_openvino_cache"]

log = logging.getLogger(__name__)

#: Converted networks and compiled networks kept in memory (oldest dropped first).
_MAX_CONVERTED = 4
_MAX_COMPILED = 8
_lock = threading.RLock()
#: entry folder -> (openvino.Model, the eager fp32 outputs on the probe picture)
_CONVERTED: OrderedDict[str, tuple[Any, list[np.ndarray]]] = OrderedDict()
_COMPILED: OrderedDict[tuple, Any] = OrderedDict()  # (folder, hint, threads) -> compiled
_VERIFIED: dict[tuple, float] = {}  # (folder, hint) -> agreement with eager fp32 (dB)
_FAILED: dict[str, str] = {}  # entry folder -> why it cannot be used in this process
#: model -> (its weights' version, their hash); weak, so a new model never inherits an entry
_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PRECISION_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def clear_openvino_cache() -> None:
    """Forget every converted and compiled network held in memory (the disk cache stays)."""
    with _lock:
        _CONVERTED.clear()
        _COMPILED.clear()
        _VERIFIED.clear()
        _FAILED.clear()
        _HASHES.clear()


def _remember(cache: OrderedDict, key: Any, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


@functools.cache
def _code_digest(cls: type) -> str:
    """SHA-256 of the source file defining the network class (a code change converts again)."""
    from .openvino_store import file_sha256

    try:
        return file_sha256(Path(inspect.getsourcefile(cls) or ""))
    except (OSError, TypeError):
        return "unknown"


def _cached_weights_hash(model: torch.nn.Module) -> str:
    """:func:`~.cache.weights_hash`, computed again only when the weights change."""
    version = weights_version(model)
    with _lock:
        known = _HASHES.get(model)
        if known is not None and known[0] == version:
            return known[1]
    digest = weights_hash(model)
    with _lock:
        _HASHES[model] = (version, digest)
    return digest


def _agreement_db(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Worst PSNR (dB, range 1) between matching outputs; ``-inf`` for non-finite ones."""
    worst = math.inf
    for ref, out in zip(reference, outputs):
        if ref.shape != out.shape or not np.isfinite(out).all():
            return -math.inf
        mse = float(np.mean((np.clip(ref, 0, 1) - np.clip(out, 0, 1)) ** 2))
        worst = min(worst, math.inf if mse == 0 else -10.0 * math.log10(mse))
    return worst


class OpenVINOBackend(Backend):
    """The network converted to OpenVINO (cached on disk), on the CPU; falls back to eager."""

    name = "openvino"
    fixed_shape = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._ov: Any = None
        self._folder: Path | None = None
        if self.device.type != "cpu":
            self._fall_back(f"OpenVINO runs the network on the CPU only, not on {self.device}")
            return
        try:
            self._ov = importlib.import_module("openvino")
        except Exception as error:  # noqa: BLE001 - ImportError, or a broken install
            self._fall_back(f"openvino cannot be imported: {error}")
            return
        failed = _FAILED.get(str(self.folder()))
        if failed is not None:  # failed before in this process: do not try again
            self._fall_back(failed)

    def _next_backend(self) -> Backend:
        return EagerBackend(self.model, self.device, self.precision, self.options,
                            self.split_patches)

    # ------------------------------------------------------------------ keys

    @property
    def hint(self) -> str:
        """OpenVINO's inference precision for this run: bf16 only where the CPU has it."""
        hint = _PRECISION_HINTS[self.precision]
        return "f32" if hint == "bf16" and not devices.cpu_supports_bf16() else hint

    def cache_folder(self) -> Path:
        folder = self.options.get("cache_dir")
        return Path(folder) if folder is not None else cache_dir() / "openvino"

    def key_material(self) -> dict:
        """Everything the converted network depends on; its hash names the cache entry."""
        return {
            "weights": _cached_weights_hash(self.model),
            "split_patches": bool(self.split_patches),
            "network_code": _code_digest(type(self.model)),
            "openvino": str(getattr(self._ov, "__version__", "unknown")),
            "torch": torch.__version__,
        }

    def folder(self) -> Path:
        """The cache entry (folder) of this network."""
        if self._folder is None:
            self._folder = entry_folder(self.cache_folder(), self.key_material())
        return self._folder

    # ------------------------------------------------------------------ preparing

    def pending_work(self) -> str | None:
        """What the first call will do before it runs ("convert", "load"), or None."""
        if self._fallback is not None or self._ov is None:
            return None
        key = str(self.folder())
        with _lock:
            if key in _CONVERTED:
                return None
        disk = bool(self.options.get("disk_cache", True))
        return "load" if disk and (self.folder() / "manifest.json").exists() else "convert"

    def prepare(self) -> None:
        """Convert or load the network and compile it for the current thread count now
        (the first call would do it otherwise); falls back to eager on failure."""
        if self._fallback is not None:
            return
        try:
            self._compiled(torch.get_num_threads())
        except Exception as error:  # noqa: BLE001 - see Backend.__call__
            self._fall_back(error)

    def _fall_back(self, error: BaseException | str) -> None:
        if self._ov is not None and self._folder is not None:
            reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            with _lock:
                _FAILED[str(self._folder)] = reason
        super()._fall_back(error)

    def _reference(self) -> list[np.ndarray]:
        """The eager fp32 network's three outputs on the probe picture."""
        probe = probe_picture(self.model.config.in_c)
        with torch.inference_mode():
            module = self._module(self.model, None, stages=True)
            return [o.float().cpu().numpy() for o in module(probe.to(self.device))]

    def _convert(self) -> Any:
        """Trace the network (all three outputs) and convert it; dynamic B, H and W."""
        ov = self._ov
        config = self.model.config
        example = probe_picture(config.in_c)
        net = copy.deepcopy(self.model).float().to(memory_format=torch.contiguous_format)
        module = self._module(net.eval(), None, stages=True).eval()
        started = time.perf_counter()
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
            traced = torch.jit.trace(module, example, check_trace=False)
            converted = ov.convert_model(traced, example_input=example)
        converted.reshape({converted.inputs[0]: ov.PartialShape([-1, config.in_c, -1, -1])})
        self.stats["compiles"] += 1
        self.stats["compile_s"] += time.perf_counter() - started
        log.info("converted the network to OpenVINO in %.1f s", time.perf_counter() - started)
        return converted

    def _network(self) -> tuple[Any, list[np.ndarray]]:
        """The converted network and its reference outputs: from memory, the disk cache, or
        converted now."""
        key = str(self.folder())
        entry = _CONVERTED.get(key)
        if entry is not None:
            return entry
        disk = bool(self.options.get("disk_cache", True))
        material = self.key_material()
        damaged = False
        if disk:
            try:
                entry = load_entry(self._core(), self.folder(), material)
                if entry is not None:
                    self.stats["disk_loads"] += 1
            except DamagedEntry as damage:
                damaged = True
                warnings.warn(f"the cached OpenVINO network {self.folder()} is damaged "
                              f"({damage}); converting the network again",
                              BackendFallbackWarning, stacklevel=6)
        if entry is None:
            entry = (self._convert(), self._reference())
            if disk:
                try:
                    save_entry(self._ov, *entry, self.folder(), material, replace=damaged)
                except Exception as error:  # noqa: BLE001 - a cache that cannot be written
                    warnings.warn(f"could not save the OpenVINO network to {self.folder()}: "
                                  f"{error}", BackendFallbackWarning, stacklevel=6)
        _remember(_CONVERTED, key, entry, _MAX_CONVERTED)
        return entry

    def _core(self) -> Any:
        return _shared_core(self._ov)

    def _compiled(self, threads: int) -> Any:
        """The network compiled for this precision and thread count, checked once."""
        key = (str(self.folder()), self.hint, int(threads))
        compiled = _COMPILED.get(key)
        if compiled is not None:
            self.stats["cache_hits"] += 1
            return compiled
        with _lock:  # one conversion per network, whatever the number of threads asking
            compiled = _COMPILED.get(key)
            if compiled is not None:
                return compiled
            # no pinning: on a machine shared with other work a thread pinned to a busy core
            # waits (2 pinned threads ran 1.3x slower than unpinned ones at a load of 15)
            config = {"INFERENCE_PRECISION_HINT": self.hint,
                      "INFERENCE_NUM_THREADS": int(threads),
                      "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
            converted, reference = self._network()
            compiled = self._core().compile_model(converted, "CPU", config)
            self._verify(compiled, reference)
            _remember(_COMPILED, key, compiled, _MAX_COMPILED)
        return compiled

    def _verify(self, compiled: Any, reference: list[np.ndarray]) -> None:
        """Refuse a compiled network whose outputs on the probe picture disagree with the
        eager fp32 network's ``reference`` (checked once per network and precision)."""
        key = (str(self.folder()), self.hint)
        if key in _VERIFIED:
            return
        probe = probe_picture(self.model.config.in_c)
        outputs = _infer(compiled, probe.numpy(), 3)
        agreement = _agreement_db(reference, outputs)
        if agreement < MIN_BF16_AGREEMENT_DB:
            raise RuntimeError(f"OpenVINO's {self.hint} output differs from the network's "
                               f"({agreement:.1f} dB on the probe picture)")
        _VERIFIED[key] = agreement

    # ------------------------------------------------------------------ running

    def _run(self, batch: torch.Tensor, stages: bool) -> list[torch.Tensor]:
        compiled = self._compiled(torch.get_num_threads())
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        return [torch.from_numpy(o) for o in _infer(compiled, x, 3 if stages else 1)]


@functools.cache
def _shared_core(ov: Any) -> Any:
    """One ``openvino.Core`` per process."""
    return ov.Core()


def _infer(compiled: Any, x: np.ndarray, count: int) -> list[np.ndarray]:
    """Run ``x`` through a compiled network with a request of its own (thread-safe); return
    copies of its first ``count`` outputs."""
    request = compiled.create_infer_request()
    request.infer({0: x})
    return [np.array(request.get_output_tensor(i).data, dtype=np.float32, copy=True)
            for i in range(count)]

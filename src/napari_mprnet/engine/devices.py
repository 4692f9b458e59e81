"""Choosing and describing the device a model runs on, and what its CPU can do.

On a CPU the engine asks two questions here: whether the processor computes bfloat16
natively (:func:`cpu_supports_bf16`: AVX512-BF16 or AMX, as torch reports it), which makes
bf16 autocast about twice as fast as fp32 there, and how many threads to use
(:func:`cpu_threads`: every physical core not already oversubscribed, unless the caller
chose a count).

The thread count changes the last bits of a result (torch splits its reductions by thread),
so the automatic count is chosen once per process, at the first CPU run, and every later
run (in any thread) uses the same: results do not change with the machine's load, and runs
in several threads give exactly what the same runs give one after another.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterator

import torch

__all__ = [
    "BF16_ENV",
    "THREADS_ENV",
    "cpu_supports_bf16",
    "cpu_threads",
    "describe_device",
    "device_memory_bytes",
    "physical_cpu_cores",
    "resolve_device",
    "using_cpu_threads",
]

#: Environment variable forcing CPU bf16 on ("1") or off ("0"), whatever the CPU reports.
BF16_ENV = "NAPARI_MPRNET_CPU_BF16"
#: Environment variable setting the number of CPU threads a run uses.
THREADS_ENV = "NAPARI_MPRNET_THREADS"
#: torch's thread count when this module was imported: a different count later means the
#: caller called ``torch.set_num_threads`` and their choice is kept.
_STARTUP_THREADS = torch.get_num_threads()
#: The automatic thread count, chosen once (see :func:`cpu_threads`); None until then.
_AUTOMATIC_THREADS: int | None = None
_automatic_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    """What torch reports about this CPU: AVX512-BF16 or AMX tiles, and oneDNN present."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = False
    for name in checks:
        check = getattr(cpu, name, None)
        if check is not None:
            with contextlib.suppress(Exception):
                native = native or bool(check())
    return native and torch.backends.mkldnn.is_available()


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX512-BF16 or AMX), so that bf16 autocast
    is faster than fp32 on it. ``$NAPARI_MPRNET_CPU_BF16`` ("0"/"1") overrides the answer.

    Elsewhere (AVX2-only x86, most ARM) torch emulates bf16, which is slower than fp32.
    """
    forced = os.environ.get(BF16_ENV, "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    return _cpu_has_native_bf16()


@functools.lru_cache(maxsize=1)
def physical_cpu_cores() -> int:
    """Physical cores this process may run on (hyper-threads not counted), at least 1."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    with contextlib.suppress(OSError):
        physical = core = ""
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    physical = value
                elif key == "core id":
                    core = value
                elif not key and core:
                    cores.add((physical, core))
                    physical = core = ""
        if core:
            cores.add((physical, core))
    logical = os.cpu_count() or allowed
    if cores and len(cores) < logical:  # hyper-threading: keep one thread per core
        allowed = max(1, allowed * len(cores) // logical)
    return max(1, allowed)


def _oversubscribed_cores(cores: int) -> int:
    """How far other work oversubscribes the CPU: the 1-minute load average above
    ``cores``, rounded up (0 where the load average cannot be read)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0
    return max(0, math.ceil(load - cores))


def _automatic_threads() -> int:
    """Every physical core, less as many as other work oversubscribes when first asked."""
    global _AUTOMATIC_THREADS
    with _automatic_lock:
        if _AUTOMATIC_THREADS is None:
            cores = physical_cpu_cores()
            _AUTOMATIC_THREADS = max(1, cores - _oversubscribed_cores(cores))
        return _AUTOMATIC_THREADS


def cpu_threads() -> int:
    """Threads a CPU run uses: ``$NAPARI_MPRNET_THREADS``; else the caller's own choice
    (``torch.set_num_threads`` after this module was imported, or ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS``); else every physical core, less as many as other work already
    oversubscribes (1-minute load average above the core count), at least one. That last
    count is measured once per process, at the first call, and kept: the thread count changes
    the last bits of a result, which must not depend on the load of the moment (set
    ``$NAPARI_MPRNET_THREADS`` to choose another count).

    The last rule matters: when the machine is oversubscribed an OpenMP thread is often
    descheduled while its siblings spin-wait for it, and 2 threads ran 10x slower than 1 on
    a 2-core machine at a load of 16 (docs/benchmarks/restore_cpu.md).

    Raises
    ------
    ValueError
        If ``$NAPARI_MPRNET_THREADS`` is not a positive integer.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return int(value)
    current = torch.get_num_threads()
    if current != _STARTUP_THREADS or os.environ.get("OMP_NUM_THREADS") \
            or os.environ.get("MKL_NUM_THREADS"):
        return current
    return _automatic_threads()


@contextlib.contextmanager
def using_cpu_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with ``threads`` (default :func:`cpu_threads`) torch CPU threads, then
    restore the previous count; yields the count used."""
    wanted = cpu_threads() if threads is None else int(threads)
    previous = torch.get_num_threads()
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return a ``torch.device``; "auto" (or None) picks CUDA, then Apple MPS, then CPU.

    Raises
    ------
    ValueError
        If the name is not a device torch knows, or names a device that is not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ValueError(
                f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from None
    else:
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available here; "
                         "use device='auto' or 'cpu'")
    count = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= count:
        raise ValueError(f"device {device!r} does not exist: {count} CUDA device(s) found")
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} was requested but Apple MPS is not available here")
    return resolved


def device_memory_bytes(device: torch.device) -> tuple[int, int] | None:
    """Return ``(free, total)`` bytes of a CUDA device, or None where it cannot be known."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)


def describe_device(device: str | torch.device | None = "auto") -> str:
    """A one-line, human-readable description, e.g. ``"cuda:0 (NVIDIA H200, 139.8 GiB free)"``
    or ``"cpu (2 threads, bf16)"`` (the threads a run uses and the CPU's default precision)."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        return f"cuda:{index} ({name}, {free / 2**30:.1f} GiB free)"
    if resolved.type == "mps":
        return "mps (Apple GPU)"
    threads = cpu_threads()
    precision = "bf16" if cpu_supports_bf16() else "fp32"
    return f"cpu ({threads} thread{'' if threads == 1 else 's'}, {precision})"

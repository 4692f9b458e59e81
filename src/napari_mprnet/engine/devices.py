"""Choosing and describing the device a model runs on, and what its CPU can do.

On a CPU the engine asks two questions here: whether the processor computes bfloat16
natively (:func:`cpu_supports_bf16`: AVX512-BF16 or AMX, as torch reports it), which makes
bf16 autocast about twice as fast as fp32 there, and how many threads to use
(:func:`cpu_threads`: the physical cores other work leaves free, unless the caller chose a
count).

The automatic count follows the machine's load during a run: :func:`follow_cpu_load`, called
by the runner between tile batches, measures it again (at most every
:data:`RECHECK_SECONDS`) and changes torch's count when another count was seen twice in a
row. Two runs started together therefore share the cores instead of oversubscribing them
(each had taken every core, and OpenMP threads that spin-wait for a descheduled sibling made
the pair 10x slower than one run after the other). The load is the number of runnable
threads of other processes at the moment (``/proc/loadavg``'s running count less this
process's own running threads), or, where that cannot be read, the 1-minute load average.

The thread count can change the last bits of an fp32 result (torch splits some reductions
by thread; bf16 results were identical between 1 and 2 threads here): set
``$NAPARI_MPRNET_THREADS`` or call ``torch.set_num_threads`` for results that never depend
on the load.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "BF16_ENV",
    "THREADS_ENV",
    "cpu_supports_bf16",
    "cpu_threads",
    "describe_device",
    "device_memory_bytes",
    "follow_cpu_load",
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
#: Seconds between two measurements of the load during a run (:func:`follow_cpu_load`).
RECHECK_SECONDS = 0.5
#: Samples of the running count per measurement (their median is used).
_LOAD_SAMPLES = 5
_automatic_lock = threading.Lock()
#: The count this module gave torch while automatic runs are active (not the caller's).
_given_count: int | None = None
_active_runs = 0
#: torch's count before the first of the active automatic runs began (restored after the last).
_count_before_runs = 1
#: Follow-up state: when the load was last measured, the count it gave, and a count seen
#: once that must be seen again before torch's count changes.
_last_check = 0.0
_pending: int | None = None


def _onednn_allows_bf16() -> bool:
    """Whether ``$ONEDNN_MAX_CPU_ISA`` (or ``$DNNL_MAX_CPU_ISA``), when set, still lets oneDNN
    (torch's and OpenVINO's) use bf16 instructions: a cap such as ``AVX2`` makes this CPU
    behave as one without bf16."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
           or "").strip().upper()
    if cap in ("", "ALL", "DEFAULT"):
        return True
    return any(tag in cap for tag in ("BF16", "FP16", "AMX", "AVX10"))


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    """What torch reports about this CPU: AVX512-BF16 or AMX tiles, oneDNN present and not
    capped below them."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = False
    for name in checks:
        check = getattr(cpu, name, None)
        if check is not None:
            with contextlib.suppress(Exception):
                native = native or bool(check())
    return native and torch.backends.mkldnn.is_available() and _onednn_allows_bf16()


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


def _own_running_threads() -> int:
    """This process's threads the kernel reports running or runnable ('R')."""
    count = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if stat.read_text().rpartition(")")[2].split()[0] == "R":
                count += 1
    return count


def _other_runnable() -> int | None:
    """Runnable threads of other processes now (median of a few samples of
    ``/proc/loadavg``'s running count less this process's own), or None where unknown."""
    samples = []
    try:
        for index in range(_LOAD_SAMPLES):
            if index:
                time.sleep(0.001)
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            samples.append(max(0, running - _own_running_threads()))
    except (OSError, ValueError, IndexError):
        return None
    return sorted(samples)[len(samples) // 2]


def _automatic_threads() -> int:
    """The physical cores other work leaves free now, at least one."""
    cores = physical_cpu_cores()
    others = _other_runnable()
    busy = _oversubscribed_cores(cores) if others is None else others
    return max(1, cores - busy)


def _caller_chose() -> bool:
    """Whether the caller set the thread count (``torch.set_num_threads`` since import, not
    by this module's automatic runs, or ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``)."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return True
    current = torch.get_num_threads()
    return current != _STARTUP_THREADS and not (_active_runs and current == _given_count)


def _forced_threads() -> int | None:
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def cpu_threads() -> int:
    """Threads a CPU run uses: ``$NAPARI_MPRNET_THREADS``; else the caller's own choice
    (``torch.set_num_threads`` after this module was imported, or ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS``); else the physical cores other work leaves free now (see the module
    docstring), at least one. Runs re-check that last count between tile batches
    (:func:`follow_cpu_load`).

    Using only free cores matters: when the machine is oversubscribed an OpenMP thread is
    often descheduled while its siblings spin-wait for it, and 2 threads ran 10x slower than
    1 on a 2-core machine at a load of 16 (docs/benchmarks/restore_cpu.md).

    Raises
    ------
    ValueError
        If ``$NAPARI_MPRNET_THREADS`` is not a positive integer.
    """
    forced = _forced_threads()
    if forced is not None:
        return forced
    if _caller_chose():
        return torch.get_num_threads()
    return _automatic_threads()


def _give(count: int) -> None:
    global _given_count
    _given_count = count
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def follow_cpu_load() -> int:
    """During an automatic CPU run (inside :func:`using_cpu_threads` without a count):
    measure the load again if :data:`RECHECK_SECONDS` have passed, and change torch's
    thread count once another count has been seen twice in a row. Returns the count now
    in use; does nothing when the count was chosen (environment, caller, ``threads=``)."""
    global _last_check, _pending
    with _automatic_lock:
        if not _active_runs or _forced_threads() is not None or _caller_chose():
            return torch.get_num_threads()
        now = time.monotonic()
        if now - _last_check < RECHECK_SECONDS:
            return torch.get_num_threads()
        _last_check = now
        wanted = _automatic_threads()
        if wanted == torch.get_num_threads():
            _pending = None
        elif _pending == wanted:
            _give(wanted)
            _pending = None
        else:
            _pending = wanted
        return torch.get_num_threads()


@contextlib.contextmanager
def using_cpu_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with ``threads`` (default :func:`cpu_threads`) torch CPU threads, then
    restore the previous count; yields the count used at the start. Without ``threads`` and
    without a count chosen by the environment or the caller, the count follows the load
    inside the block wherever :func:`follow_cpu_load` is called."""
    global _active_runs, _last_check, _count_before_runs
    with _automatic_lock:
        previous = torch.get_num_threads()
        automatic = threads is None and _forced_threads() is None and not _caller_chose()
        wanted = cpu_threads() if threads is None else int(threads)
        if automatic:
            if not _active_runs:
                _count_before_runs = previous
            _active_runs += 1
            _last_check = time.monotonic()
            _give(wanted)
        elif wanted != previous:
            torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        with _automatic_lock:
            if automatic:
                _active_runs -= 1
                restore = None if _active_runs else _count_before_runs
            else:
                restore = previous
            if restore is not None and torch.get_num_threads() != restore:
                torch.set_num_threads(restore)


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

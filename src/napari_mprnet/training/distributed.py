"""Multi-process (multi-GPU) fine-tuning with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m napari_mprnet finetune --distributed ...`` starts N
processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set. :func:`process_group` joins them into one process group (NCCL with one GPU per process,
``cuda:LOCAL_RANK``, or Gloo on CPUs) and tears it down afterwards;
:func:`~napari_mprnet.training.trainer.finetune` then trains a
:class:`~torch.nn.parallel.DistributedDataParallel` copy of the model through a
:class:`Session`.

A process group created elsewhere (``torch.multiprocessing.spawn``, a user's own launcher) is
used as it is and left open.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..engine.devices import resolve_device

__all__ = [
    "LAUNCH_HINT",
    "Session",
    "TorchrunEnv",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "is_distributed",
    "is_main_process",
    "process_group",
    "rank",
    "session",
    "torchrun_env",
    "with_process_group",
    "world_size",
]

#: The variables ``torchrun`` sets for every process it starts.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = (
    "launch it with torchrun, e.g. 'torchrun --nproc_per_node=N -m napari_mprnet finetune "
    "--distributed ...' (N: GPUs per node)"
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class TorchrunEnv:
    """The process coordinates ``torchrun`` put in the environment."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The torchrun coordinates of this process, or None when any variable is missing.

    Raises
    ------
    ValueError
        The variables are present but not valid numbers / ranks.
    """
    environ = os.environ if environ is None else environ
    if not all(environ.get(name) for name in TORCHRUN_VARS):
        return None
    try:
        env = TorchrunEnv(
            rank=int(environ["RANK"]), world_size=int(environ["WORLD_SIZE"]),
            local_rank=int(environ["LOCAL_RANK"]), master_addr=environ["MASTER_ADDR"],
            master_port=int(environ["MASTER_PORT"]),
        )
    except ValueError:
        values = ", ".join(f"{name}={environ[name]!r}" for name in TORCHRUN_VARS)
        raise ValueError(f"malformed torchrun environment: {values}") from None
    if env.world_size < 1 or not 0 <= env.rank < env.world_size or env.local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={env.rank}, "
                         f"WORLD_SIZE={env.world_size}, LOCAL_RANK={env.local_rank}")
    return env


# --------------------------------------------------------------------------- group state


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the group (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, and in a plain (non-distributed) run."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process of the group (nothing outside a process group)."""
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collective tensors live: the current GPU for NCCL, the CPU otherwise."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: float | Sequence[float]) -> list[float]:
    """Sum scalars over all processes (float64); the values themselves outside a group."""
    numbers = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if not is_distributed():
        return numbers
    tensor = torch.tensor(numbers, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu()]


def all_reduce_mean(values: float | Sequence[float]) -> list[float]:
    """Mean of scalars over all processes. A NaN/inf on any rank makes the result non-finite
    on every rank, so a check of the result is consistent everywhere."""
    count = world_size()
    return [v / count for v in all_reduce_sum(values)]


def _broadcast_int(value: int, src: int = 0) -> int:
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device())
    dist.broadcast(tensor, src=src)
    return int(tensor.item())


# --------------------------------------------------------------------------- set-up


def _backend_for(device: str | torch.device | None) -> str:
    resolved = resolve_device(device)
    if resolved.type == "mps":
        raise ValueError("distributed fine-tuning runs on CUDA GPUs (nccl) or CPUs (gloo), "
                         "not on Apple MPS; use device='cpu' or a single process")
    if resolved.type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def _local_rank(group_rank: int) -> int:
    value = os.environ.get("LOCAL_RANK")
    if value is not None and value.strip().isdigit():
        return int(value)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return group_rank % count if count else group_rank


def _check_gpu(local_rank: int) -> torch.device:
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"process with LOCAL_RANK {local_rank} has no GPU: {count} CUDA "
                         f"device(s) on this node; start at most {count} processes per node")
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def process_group(
    distributed: bool | None = None, device: str | torch.device | None = "auto"
) -> Iterator[bool]:
    """Join the torchrun process group for the duration of the block.

    Parameters
    ----------
    distributed : bool or None
        True: require a distributed run (``ValueError`` with :data:`LAUNCH_HINT` when not
        started by torchrun); None: distributed when the torchrun variables are set; False:
        never (yields False, touches nothing).
    device : str or torch.device
        The requested training device: CUDA selects NCCL (``cuda:LOCAL_RANK``), the CPU Gloo.

    Yields
    ------
    bool
        Whether a process group is active inside the block. A group that already existed
        is used and left open; one created here is destroyed on exit, also after an error.
    """
    if distributed is False:
        yield False
        return
    if is_distributed():
        yield True
        return
    if distributed is True and not dist.is_available():
        raise ValueError("distributed fine-tuning needs a PyTorch build with torch.distributed")
    env = torchrun_env() if dist.is_available() else None
    if env is None:
        if distributed:
            raise ValueError(f"distributed fine-tuning was requested but this process was not "
                             f"started by torchrun; {LAUNCH_HINT}")
        yield False
        return
    backend = _backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(_check_gpu(env.local_rank))
    dist.init_process_group(backend=backend, init_method="env://", rank=env.rank,
                            world_size=env.world_size)
    try:
        yield True
    finally:
        dist.destroy_process_group()


def with_process_group(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Run ``fn`` inside :func:`process_group` (driven by its ``distributed`` and ``device``
    keyword arguments)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        with process_group(kwargs.get("distributed"), kwargs.get("device", "auto")):
            return fn(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- the trainer's view


class RankFailed(RuntimeError):
    """Raised on the other ranks when rank 0 failed in a step only it performs."""


@dataclass(frozen=True)
class Session:
    """One process of a distributed training run (see :func:`session`)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` (already on :attr:`device`) in DistributedDataParallel."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, output_device=None if ids is None
                                       else ids[0])

    def mean(self, value: float) -> float:
        """All-reduced mean of one scalar."""
        return all_reduce_mean([value])[0]

    def sums(self, values: Sequence[float]) -> list[float]:
        """All-reduced sums."""
        return all_reduce_sum(values)

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def share_stop(self, stop: bool, failed: bool = False) -> bool:
        """Broadcast rank 0's stop request (or failure) to every rank.

        Every rank calls this once per step; rank 0 passes its decision. On the other ranks
        a failure of rank 0 raises :class:`RankFailed` instead of waiting forever.
        """
        code = _broadcast_int(2 if failed else int(bool(stop)))
        if code == 2 and not self.is_main:
            raise RankFailed("rank 0 failed (see its error message); stopping this rank too")
        return code == 1

    def on_main(self, fn: Callable[[], _T]) -> _T | None:
        """Run ``fn`` on rank 0 only while the other ranks wait for it (a barrier that also
        carries failure: when ``fn`` raises, rank 0 re-raises and the others raise
        :class:`RankFailed`)."""
        result = None
        error: BaseException | None = None
        if self.is_main:
            try:
                result = fn()
            except BaseException as err:  # noqa: BLE001 - re-raised below, after the others know
                error = err
        if _broadcast_int(int(error is not None)):
            if error is not None:
                raise error
            raise RankFailed("rank 0 failed (see its error message); stopping this rank too")
        return result


def session(distributed: bool | None, requested_device: str | torch.device | None) -> \
        Session | None:
    """The current process's :class:`Session`, or None for a plain single-process run.

    ``distributed=False`` never gives a session; otherwise one exists when a process group
    is active (see :func:`process_group`). The training device is ``cuda:LOCAL_RANK`` for
    CUDA/NCCL and the CPU otherwise.
    """
    if distributed is False or not is_distributed():
        if distributed:
            raise ValueError(f"distributed fine-tuning was requested but no process group is "
                             f"active; {LAUNCH_HINT}")
        return None
    backend = dist.get_backend()
    group_rank = dist.get_rank()
    local = _local_rank(group_rank)
    wants = resolve_device(requested_device)
    if wants.type == "mps":
        raise ValueError("distributed fine-tuning runs on CUDA GPUs or CPUs, not Apple MPS")
    if backend == "nccl" or wants.type == "cuda":
        device = _check_gpu(local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return Session(rank=group_rank, world_size=dist.get_world_size(), local_rank=local,
                   backend=str(backend), device=device)

"""Fine-tuning checkpoints: writing them atomically, reading them safely, checking a resume.

A checkpoint is a ``torch.save`` dict of plain values and tensors (readable with
``weights_only=True``): the network, the optimiser, the samplers' random states, the history,
the best weights so far and the settings that define the training trajectory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.atomic import atomic_output

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "SCHEDULE_ARGS",
    "atomic_torch_save",
    "check_resume",
    "cpu_state",
    "load_checkpoint",
    "plain",
]

CHECKPOINT_FORMAT = "napari-mprnet-finetune-checkpoint"
CHECKPOINT_VERSION = 1
#: Arguments that define the training trajectory: a resumed run must use the same values.
SCHEDULE_ARGS = (
    "steps", "patch_size", "batch_size", "learning_rate", "min_learning_rate", "warmup_steps",
    "edge_weight", "grad_clip", "seed", "val_fraction",
)


def plain(value: Any) -> Any:
    """Convert numpy scalars/arrays (and nested containers) to plain Python values."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state on the CPU (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a fine-tuning checkpoint (safely, ``weights_only=True``).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, or not a checkpoint written by :func:`finetune`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one clear message
        raise ValueError(f"cannot read checkpoint '{path}': {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"'{path}' is not a napari-mprnet fine-tuning checkpoint (to start from a model "
            "file, pass it as model= / --base instead)"
        )
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint '{path}' was written by a newer napari-mprnet")
    return ckpt


def check_resume(ckpt: dict, args: dict, world_size: int) -> None:
    """Refuse a checkpoint whose schedule, objective or process count differ from this
    run's (``args`` may carry ``objective``: the objective's ``describe()``)."""
    saved_args = ckpt.get("args", {})
    diffs = [
        f"{name}={args[name]!r} (checkpoint: {saved_args.get(name)!r})"
        for name in SCHEDULE_ARGS
        if name in saved_args and saved_args[name] != args[name]
    ]
    if diffs:
        raise ValueError(
            "resume_from: these settings differ from the checkpoint's, so training could "
            "not continue the same schedule: " + ", ".join(diffs)
        )
    saved_objective = saved_args.get("objective")
    if saved_objective is not None and saved_objective != args.get("objective"):
        raise ValueError(
            f"resume_from: the checkpoint was trained with the objective {saved_objective}, "
            f"this run uses {args.get('objective')}; resume with the same objective"
        )
    ckpt_world = int(ckpt.get("world_size", 1))
    if ckpt_world != world_size:
        raise ValueError(
            f"resume_from: the checkpoint was written by a run on {ckpt_world} "
            f"process(es), this one has {world_size}; resume "
            "with the same number of processes (it sets the batch per step)"
        )


class Checkpointer:
    """Writes a run's checkpoints: every ``every`` steps, at the end and when stopped.

    Parameters
    ----------
    path : Path
        The checkpoint file, replaced atomically each time.
    every : int
        Steps between checkpoints.
    static : dict
        What every checkpoint of the run repeats (configuration, normalisation, settings).
    session : distributed.Session or None
        In a distributed run every rank's sampler and RNG state is gathered and rank 0
        alone writes (the others wait for it).
    """

    def __init__(self, path: Path, every: int, static: dict, session: Any = None) -> None:
        self.path = path
        self.every = every
        self.static = static
        self.session = session

    def due(self, step: int, steps: int, stopped: bool) -> bool:
        """Whether a checkpoint is written after ``step``."""
        return stopped or step % self.every == 0 or step == steps

    def write(self, step: int, state: dict, own: dict) -> None:
        """Write the checkpoint of ``step``: ``state`` (shared by every rank) and ``own``
        (this rank's ``sampler`` and ``torch_rng``)."""
        session = self.session
        ranks = None if session is None else session.gather(own)

        def save() -> None:
            payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                       "step": step, **state, **own, **self.static}
            if session is not None:
                payload["world_size"] = session.world_size
                payload["ranks"] = ranks
            atomic_torch_save(payload, self.path)

        if session is None:
            save()
        else:
            session.on_main(save)

"""Fine-tuning checkpoints: writing them atomically, reading them safely, checking a resume.

A checkpoint is a ``torch.save`` dict of plain values and tensors (readable with
``weights_only=True``): the network, the optimiser, the samplers' random states, the history,
the best weights so far and the settings that define the training trajectory.
"""

from __future__ import annotations

import hashlib
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
    "check_same_data",
    "content_checksum",
    "cpu_state",
    "from_checkpoint",
    "load_checkpoint",
    "plain",
]

CHECKPOINT_FORMAT = "napari-mprnet-finetune-checkpoint"
CHECKPOINT_VERSION = 2
#: What every checkpoint holds, with its type (a file without them is refused by name).
_REQUIRED = {"step": int, "model": dict, "optimizer": dict, "sampler": dict, "history": list,
             "best": dict, "config": dict, "normalization": dict, "args": dict}
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


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for key in sorted(value, key=str):
            digest.update(repr(str(key)).encode())
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(repr(value).encode())


def content_checksum(payload: Mapping) -> str:
    """SHA-256 of a checkpoint's contents (every value and tensor, ``checksum`` excepted)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != "checksum"})
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a fine-tuning checkpoint (safely, ``weights_only=True``) and verify it.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; an empty, unreadable or damaged file (its checksum does not match its
        contents); not a checkpoint written by :func:`finetune`; missing or malformed parts.
        Every message is one line that names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"checkpoint '{path}' is empty (0 bytes): it was never written "
                         "completely; start again or resume from another checkpoint")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one clear message
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Weights only load failed" in reason:
            reason = "it holds objects other than tensors and plain values; not unpickled"
        raise ValueError(f"cannot read checkpoint '{path}' (damaged or not a checkpoint: "
                         f"{reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"'{path}' is not a napari-mprnet fine-tuning checkpoint (to start from a model "
            "file, pass it as model= / --base instead)"
        )
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint '{path}' was written by a newer napari-mprnet "
                         f"(version {version!r}); update napari-mprnet to resume it")
    if (version >= 2 or "checksum" in ckpt) and ckpt.get("checksum") != content_checksum(ckpt):
        raise ValueError(f"checkpoint '{path}' is damaged: its checksum does not match its "
                         "contents; resume from another checkpoint or start again")
    problems = [f"'{key}' is missing" if key not in ckpt else
                f"'{key}' is a {type(ckpt[key]).__name__}, not a {kind.__name__}"
                for key, kind in _REQUIRED.items()
                if key not in ckpt or not isinstance(ckpt[key], kind)
                or isinstance(ckpt[key], bool)]
    if ckpt.get("world_size", 1) != 1 and not isinstance(ckpt.get("ranks"), list):
        problems.append("'ranks' is missing")
    if problems:
        raise ValueError(f"checkpoint '{path}' is malformed: {', '.join(problems)}")
    return ckpt


def _describe_data(fingerprint: Mapping) -> str:
    shapes = ", ".join(f"{count} x {shape}" for shape, count in fingerprint.get("shapes", []))
    return (f"{fingerprint.get('train_planes')} training + {fingerprint.get('val_planes')} "
            f"validation planes ({shapes}), sha256 {str(fingerprint.get('sha256'))[:12]}")


def check_same_data(ckpt: dict, fingerprint: Mapping, path: Any = None) -> None:
    """Refuse a checkpoint written for other training data (``fingerprint`` from
    :func:`~napari_mprnet.training.data.fingerprint`; checkpoints without one pass)."""
    name = f"'{path}'" if path is not None else "the checkpoint"
    saved = ckpt.get("data")
    if isinstance(saved, Mapping) and dict(saved) != dict(fingerprint):
        raise ValueError(f"resume_from: {name} was trained on other data "
                         f"({_describe_data(saved)}; now {_describe_data(fingerprint)}); "
                         "pass the interrupted run's images (or resume_other_data=True)")


def check_resume(ckpt: dict, args: dict, world_size: int, path: Any = None) -> None:
    """Refuse a checkpoint whose schedule, objective or process count differ from this
    run's, or whose step lies beyond ``steps`` (``args`` may carry ``objective``: the
    objective's ``describe()``)."""
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
    where = f"'{path}'" if path is not None else "the checkpoint"
    step = ckpt.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= args["steps"]:
        raise ValueError(f"resume_from: {where} is at step {step!r}, beyond this run's "
                         f"{args['steps']} steps; resume with the interrupted run's steps")


def from_checkpoint(path: Any, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on parts of a checkpoint; what does not fit is one ValueError."""
    try:
        return fn(*args)
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError, AttributeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"checkpoint '{path}' does not fit this run ({type(err).__name__}: "
                         f"{reason[:300]}); resume with the interrupted run's model and "
                         "settings") from None


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
            payload["checksum"] = content_checksum(payload)
            atomic_torch_save(payload, self.path)

        if session is None:
            save()
        else:
            session.on_main(save)

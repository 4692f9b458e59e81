"""What fine-tuning returns and reports: the result, its errors, the model's metadata."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine.normalize import DEFAULT_PERCENTILES, Normalization
from ..model.arch import MPRNet
from ..model.presets import TASKS

__all__ = [
    "FinetuneResult",
    "StopTraining",
    "TrainingDiverged",
    "describe_plan",
    "describe_source",
    "describe_start",
    "normalization_meta",
    "provenance",
    "task_of",
]


class StopTraining(Exception):
    """Raise from a ``finetune`` callback to stop cleanly after the current step."""


class TrainingDiverged(FloatingPointError):
    """The loss or gradient became NaN/infinite; training stopped.

    Attributes
    ----------
    step : int
        The step at which it happened.
    checkpoint_path : str or None
        The last good checkpoint (never overwritten by the diverged state).
    """

    def __init__(self, message: str, step: int, checkpoint_path: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint_path = checkpoint_path


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes
    ----------
    model : MPRNet
        The best model by validation PSNR (the last one without validation), in eval mode,
        with ``model.metadata`` describing the training (normalisation, provenance).
    history : list of dict
        One entry per step: ``step``, ``loss``, ``lr``, ``grad_norm``; steps with validation
        also carry ``val_psnr`` and ``val_ssim``.
    best_val_psnr : float or None
        Best validation PSNR (dB); None without validation planes or clean targets.
    best_val_loss, base_val_loss : float or None
        Self-supervised objectives: the validation loss (the objective's loss on held-out
        planes, lower is better) of the kept model and of the starting model. Without clean
        validation images it decides which model is kept, the starting one included
        (``best_step`` 0: no step beat it; a blind-spot validation asks for a clear
        win, see ``paired_z``).
    stopped : bool
        True when a callback stopped training early.
    steps_done : int
        Optimisation steps completed (including those of a resumed run).
    """

    model: MPRNet
    history: list[dict] = field(default_factory=list)
    best_val_psnr: float | None = None
    stopped: bool = False
    steps_done: int = 0
    best_val_ssim: float | None = None
    best_step: int | None = None
    base_val_psnr: float | None = None
    base_val_ssim: float | None = None
    final_loss: float | None = None
    n_train: int = 0
    n_val: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    elapsed_s: float = 0.0
    metadata: dict = field(default_factory=dict)
    saved_to: str | None = None
    checkpoint_path: str | None = None
    world_size: int = 1
    rank: int = 0
    best_val_loss: float | None = None
    base_val_loss: float | None = None


def task_of(model: Any, base: MPRNet) -> str:
    """The task of the base model: its metadata's, the task name given, else denoise."""
    task = (getattr(base, "metadata", None) or {}).get("task")
    if isinstance(task, str) and task:
        return task
    if isinstance(model, str) and model in TASKS:
        return model
    return "denoise"


def normalization_meta(norm: Normalization, requested: Any) -> dict:
    """The normalisation as stored with the model (and what the user asked for)."""
    meta = norm.to_dict()
    if norm.mode == "percentile":
        meta["percentiles"] = list(DEFAULT_PERCENTILES)
    meta["requested"] = requested if isinstance(requested, str) else "given"
    return meta


def describe_source(model: Any, base: MPRNet) -> str:
    """A short description of where the base model came from."""
    source = getattr(base, "source", None)
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model) if source is None else f"{os.fspath(model)} ({source})"
    return str(source) if source else "MPRNet object"


def provenance(args: dict, *, steps_done: int, stopped: bool, device: torch.device,
               precision: str, history: list[dict], best: dict, base_val: dict, n_train: int,
               n_val: int, world_size: int, objective: dict) -> dict:
    """The training record stored in the fine-tuned model's metadata."""
    val_entries = [h for h in history if "val_psnr" in h]
    return {
        "finetuned": True,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "steps": steps_done,
        "steps_planned": args["steps"],
        "stopped_early": stopped,
        "patch_size": args["patch_size"],
        "batch_size": args["batch_size"],
        "learning_rate": args["learning_rate"],
        "min_learning_rate": args["min_learning_rate"],
        "warmup_steps": args["warmup_steps"],
        "edge_weight": args["edge_weight"],
        "grad_clip": args["grad_clip"],
        "seed": args["seed"],
        "objective": objective,
        "device": str(device),
        "precision": precision,
        "final_loss": history[-1]["loss"] if history else None,
        "base_val_psnr": base_val.get("val_psnr"),
        "base_val_ssim": base_val.get("val_ssim"),
        "best_val_psnr": best.get("val_psnr"),
        "best_val_ssim": best.get("val_ssim"),
        "base_val_loss": base_val.get("val_loss"),
        "best_val_loss": best.get("val_loss"),
        "best_step": best["step"],
        "final_val_psnr": val_entries[-1]["val_psnr"] if val_entries else None,
        "final_val_ssim": val_entries[-1]["val_ssim"] if val_entries else None,
        "n_train_planes": n_train,
        "n_val_planes": n_val,
        "world_size": world_size,
        "global_batch_size": args["batch_size"] * world_size,
        "torch_version": torch.__version__,
    }


def _planes_summary(shapes: list[tuple]) -> str:
    counts: dict[str, int] = {}
    for height, width, channels in shapes:
        key = f"{height}x{width} {'grey' if channels == 1 else 'RGB'}"
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{count} x {key}" for key, count in sorted(counts.items(), key=lambda kv: -kv[1])]
    return ", ".join(parts[:3]) + (f", {len(parts) - 3} more sizes" if len(parts) > 3 else "")


def describe_plan(*, task: str, base: str, train_shapes: list[tuple], n_val: int,
                  args: dict, start_step: int, device: torch.device, precision: str,
                  channels_last: bool, world_size: int, objective: str,
                  checkpoint: Any = None, checkpoint_every: int | None = None) -> dict:
    """What a run will do, as an info event: ``event="plan"``, a one-line ``message`` and
    its parts (planes, steps, device, precision), sent before the first step."""
    steps = args["steps"]
    if device.type == "cpu":
        threads = torch.get_num_threads()
        where = f"cpu ({threads} thread{'' if threads == 1 else 's'})"
    else:
        from ..engine.devices import describe_device

        where = describe_device(device)
    if world_size > 1:
        where += f" x {world_size} processes"
    layout = " + channels-last" if channels_last else ""
    todo = (f"steps {start_step + 1}-{steps} of {steps} (resumed)" if start_step
            else f"{steps} steps")
    message = (
        f"fine-tuning the {task} model from {base} ({objective}): {len(train_shapes)} "
        f"training planes ({_planes_summary(train_shapes)}), {n_val} validation planes; "
        f"{todo} of {args['batch_size']} x {args['patch_size']}x{args['patch_size']} patches "
        f"on {where} in {precision}{layout}"
        + (f"; checkpoint every {checkpoint_every} steps to {checkpoint}" if checkpoint else "")
    )
    return {"event": "plan", "message": message, "step": start_step, "steps": steps,
            "n_train": len(train_shapes), "n_val": n_val, "device": where,
            "precision": precision, "channels_last": channels_last,
            "patch_size": args["patch_size"], "batch_size": args["batch_size"],
            "objective": objective}


def describe_start(scores: dict) -> dict:
    """The starting model's validation scores as an info event (``event="start"``, step 0):
    the point a run's curve starts from and the level it must beat."""
    if scores.get("val_psnr") is not None:
        text = f"starting model: val PSNR {scores['val_psnr']:.2f} dB"
    else:
        text = f"starting model: self-supervised val loss {scores.get('val_loss', float('nan')):.4f}"
    return {"event": "start", "message": text, "step": 0,
            **{k: v for k, v in scores.items() if v is not None}}

"""Fine-tuning an MPRNet on paired (degraded, clean) images.

:func:`finetune` trains a *copy* of a bundled or user model with the paper's loss, Adam and a
short linear warm-up followed by cosine annealing, validates on held-out planes (PSNR/SSIM),
keeps the best model, writes resumable checkpoints and saves a self-describing safetensors
file that :func:`napari_mprnet.restore` uses with the same intensity normalisation.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.devices import cpu_supports_bf16, resolve_device
from ..engine.normalize import DEFAULT_PERCENTILES, Normalization
from ..engine.runner import PRECISIONS, normalize_precision
from ..model.arch import MPRNet
from ..model.presets import TASKS
from . import distributed as _ddp
from .data import PairSet, PatchSampler, center_crops, load_pairs, split_pairs
from .losses import mprnet_loss
from .metrics import psnr, ssim
from .prefetch import BatchPrefetcher

__all__ = [
    "CHECKPOINT_FORMAT",
    "FinetuneResult",
    "StopTraining",
    "TrainingDiverged",
    "finetune",
    "learning_rate_at",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "napari-mprnet-finetune-checkpoint"
CHECKPOINT_VERSION = 1
#: Validation planes are centre-cropped to at most this side (keeps validation cheap).
VAL_CROP = 256
#: Arguments that define the training trajectory: a resumed run must use the same values.
_SCHEDULE_ARGS = (
    "steps", "patch_size", "batch_size", "learning_rate", "min_learning_rate", "warmup_steps",
    "edge_weight", "grad_clip", "seed", "val_fraction",
)

Callback = Callable[[dict], Any]


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
        Best validation PSNR (dB); None without validation planes.
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


# --------------------------------------------------------------------------- schedule


def learning_rate_at(
    step: int, steps: int, learning_rate: float, min_learning_rate: float, warmup_steps: int
) -> float:
    """Learning rate of (1-based) ``step``: linear warm-up, then cosine down to the minimum.

    During warm-up step ``s`` uses ``learning_rate * s / warmup_steps``; afterwards the rate
    follows half a cosine from ``learning_rate`` (first step after the warm-up) to
    ``min_learning_rate`` (the last step).
    """
    if warmup_steps > 0 and step <= warmup_steps:
        return learning_rate * step / warmup_steps
    span = steps - warmup_steps - 1
    progress = 0.0 if span <= 0 else min(1.0, max(0.0, (step - warmup_steps - 1) / span))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_learning_rate + (learning_rate - min_learning_rate) * cosine


# --------------------------------------------------------------------------- checks


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(value: Any, name: str, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0 or (
        number == 0 and not allow_zero
    ):
        kind = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return number


def _check_args(args: dict) -> dict:
    out = dict(args)
    out["steps"] = _positive_int(args["steps"], "steps")
    patch = args["patch_size"]
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 16 or (
        patch % 8
    ):
        raise ValueError(f"patch_size must be a multiple of 8 and >= 16, got {patch!r}")
    out["patch_size"] = int(patch)
    out["batch_size"] = _positive_int(args["batch_size"], "batch_size")
    out["learning_rate"] = _positive_float(args["learning_rate"], "learning_rate")
    out["min_learning_rate"] = _positive_float(
        args["min_learning_rate"], "min_learning_rate", allow_zero=True
    )
    if out["min_learning_rate"] > out["learning_rate"]:
        raise ValueError(
            f"min_learning_rate ({out['min_learning_rate']}) must not exceed learning_rate "
            f"({out['learning_rate']})"
        )
    if args["warmup_steps"] is None:
        out["warmup_steps"] = min(100, out["steps"] // 20)
    else:
        out["warmup_steps"] = _positive_int(args["warmup_steps"], "warmup_steps", minimum=0)
        if out["warmup_steps"] > out["steps"]:
            raise ValueError(
                f"warmup_steps ({out['warmup_steps']}) must not exceed steps ({out['steps']})"
            )
    out["edge_weight"] = _positive_float(args["edge_weight"], "edge_weight", allow_zero=True)
    fraction = args["val_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0.0 <= fraction < 1.0
    ):
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction!r}")
    out["val_fraction"] = float(fraction)
    for name in ("val_every", "checkpoint_every"):
        if args[name] is not None:
            out[name] = _positive_int(args[name], name)
    if args["grad_clip"] is not None:
        out["grad_clip"] = _positive_float(args["grad_clip"], "grad_clip", allow_zero=True)
        if out["grad_clip"] == 0:
            out["grad_clip"] = None
    if (args["val_inputs"] is None) != (args["val_targets"] is None):
        raise ValueError("give both val_inputs and val_targets, or neither")
    if args["checkpoint_every"] is not None and args["checkpoint_path"] is None:
        raise ValueError("checkpoint_every needs checkpoint_path (where to write checkpoints)")
    if args["checkpoint_path"] is not None:
        path = Path(args["checkpoint_path"])
        if path.is_dir():
            raise ValueError(f"checkpoint_path must be a file, got the folder {path}")
    if args["callback"] is not None and not callable(args["callback"]):
        raise TypeError(f"callback must be callable, got {type(args['callback']).__name__}")
    if isinstance(args["seed"], bool) or not isinstance(args["seed"], (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {args['seed']!r}")
    out["seed"] = int(args["seed"])
    return out


def _choose_precision(precision: str | None, device: torch.device) -> str:
    """None/"auto": bf16 on CUDA (fp16 where bf16 is unsupported) and on CPUs that compute
    bf16 natively (AVX512-BF16/AMX), fp32 elsewhere; otherwise the name, validated."""
    if precision is None or (isinstance(precision, str) and precision.lower() == "auto"):
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_supports_bf16():
            return "bf16"
        return "fp32"
    return normalize_precision(precision, device)


def _choose_channels_last(channels_last: bool | None, device: torch.device, prec: str) -> bool:
    """Default: on CUDA, and on a CPU training in bf16 (where it is measured faster)."""
    if channels_last is not None:
        return bool(channels_last)
    return device.type == "cuda" or (device.type == "cpu" and prec == "bf16")


# --------------------------------------------------------------------------- checkpoints


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays (and nested containers) to plain Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


# --------------------------------------------------------------------------- validation


def _validation_crops(val: PairSet, channels: int, patch_size: int) -> list[tuple]:
    if len(val) == 0:
        return []
    crops = center_crops(val, size=max(VAL_CROP, patch_size), channels=channels)
    grey = [plane.shape[-1] == 1 for plane in val.inputs]
    return [(x, y, g) for (x, y), g in zip(crops, grey)]


def _evaluate_shared(model: MPRNet, crops: list[tuple], device: torch.device,
                     autocast: Callable, channels_last: bool,
                     session: _ddp.Session | None) -> tuple[float, float]:
    """:func:`_evaluate`; in a distributed run each rank scores every world_size-th crop and
    the sums are all-reduced, so every rank gets the same means."""
    if session is None:
        return _evaluate(model, crops, device, autocast, channels_last)
    mine = crops[session.rank::session.world_size]
    psnr_sum = ssim_sum = 0.0
    if mine:
        mean_psnr, mean_ssim = _evaluate(model, mine, device, autocast, channels_last)
        psnr_sum, ssim_sum = mean_psnr * len(mine), mean_ssim * len(mine)
    psnr_total, ssim_total, count = session.sums([psnr_sum, ssim_sum, len(mine)])
    return psnr_total / count, ssim_total / count


def _evaluate(model: MPRNet, crops: list[tuple], device: torch.device, autocast: Callable,
              channels_last: bool) -> tuple[float, float]:
    """Mean PSNR and SSIM (data range 1) of the final output over the validation crops."""
    was_training = model.training
    model.eval()
    psnrs, ssims = [], []
    try:
        with torch.inference_mode():
            for x, y, grey in crops:
                x = x.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    out = model(x)[0]
                out = out.float().cpu()
                if grey and out.shape[1] == 3:  # as inference does: average the copies
                    out, y = out.mean(dim=1, keepdim=True), y[:, :1]
                psnrs.append(psnr(out, y))
                ssims.append(ssim(out, y) if min(out.shape[-2:]) >= 11 else float("nan"))
    finally:
        model.train(was_training)
    return float(np.mean(psnrs)), float(np.mean(ssims))


# --------------------------------------------------------------------------- helpers


def _task_of(model: Any, base: MPRNet) -> str:
    task = (getattr(base, "metadata", None) or {}).get("task")
    if isinstance(task, str) and task:
        return task
    if isinstance(model, str) and model in TASKS:
        return model
    return "denoise"


def _normalization_meta(norm: Normalization, requested: Any) -> dict:
    meta = norm.to_dict()
    if norm.mode == "percentile":
        meta["percentiles"] = list(DEFAULT_PERCENTILES)
    meta["requested"] = requested if isinstance(requested, str) else "given"
    return meta


def _describe_source(model: Any, base: MPRNet) -> str:
    source = getattr(base, "source", None)
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model) if source is None else f"{os.fspath(model)} ({source})"
    return str(source) if source else "MPRNet object"


def _load_data(inputs: Any, targets: Any, val_inputs: Any, val_targets: Any, normalize: Any,
               val_fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    pairs = load_pairs(inputs, targets, normalize=normalize)
    if val_inputs is not None:
        val = load_pairs(val_inputs, val_targets, normalize=pairs.normalization)
        return pairs, val
    if val_fraction > 0 and len(pairs) >= 2:
        return split_pairs(pairs, val_fraction, seed)
    return pairs, pairs.subset([])


def _compile(model: MPRNet) -> Callable | None:
    compiler = getattr(torch, "compile", None)
    if compiler is None:
        return None
    try:
        return compiler(model)
    except Exception as err:  # noqa: BLE001 - compilation is an optional speed-up
        warnings.warn(f"torch.compile unavailable ({err}); training without it", stacklevel=3)
        return None


# --------------------------------------------------------------------------- the trainer


@_ddp.with_process_group
def finetune(
    inputs: Any,
    targets: Any,
    *,
    model: str | os.PathLike | MPRNet = "denoise",
    steps: int = 1000,
    patch_size: int = 128,
    batch_size: int = 8,
    learning_rate: float = 2e-4,
    min_learning_rate: float = 1e-6,
    warmup_steps: int | None = None,
    edge_weight: float = 0.05,
    val_fraction: float = 0.1,
    val_inputs: Any = None,
    val_targets: Any = None,
    val_every: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str | None = None,
    grad_clip: float | None = 1.0,
    normalize: str | Normalization = "auto",
    seed: int = 0,
    save_to: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
    callback: Callback | None = None,
    channels_last: bool | None = None,
    compile: bool = False,
    distributed: bool | None = None,
) -> FinetuneResult:
    """Fine-tune an MPRNet on paired degraded/clean images.

    Parameters
    ----------
    inputs, targets : array, list of arrays, folder path or napari Image layer(s)
        Degraded and clean images (anything :func:`~napari_mprnet.training.data.load_pairs`
        accepts); stacks contribute every plane.
    model : str, path or MPRNet
        Starting point: a task name for the bundled model, a model file or a loaded network.
        It is copied; the original (possibly cached) model is never modified.
    steps : int
        Optimisation steps (batches).
    patch_size, batch_size : int
        Random training crops per step (patch a multiple of 8, >= 16).
    learning_rate, min_learning_rate : float
        Adam's peak learning rate and the end of the cosine schedule.
    warmup_steps : int, optional
        Linear warm-up length; default ``min(100, steps // 20)``.
    edge_weight : float
        Weight of the edge loss (the paper's lambda).
    val_fraction : float
        Fraction of whole planes held out for validation (ignored with ``val_inputs``).
    val_inputs, val_targets : optional
        Explicit validation images, normalised like the training images.
    val_every : int, optional
        Validate every this many steps (and at the end); default ``max(1, steps // 10)``.
    checkpoint_every : int, optional
        Write a checkpoint every this many steps (default ``max(1, steps // 10)`` when
        ``checkpoint_path`` is given), and when training ends or is stopped.
    checkpoint_path : str or path, optional
        Checkpoint file (``.pt``), replaced atomically; read it with ``resume_from``.
    device : str
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    precision : {"auto", "fp32", "fp16", "bf16"}, optional
        Autocast precision (the weights and the optimiser stay fp32). None or "auto": bf16
        on CUDA (fp16 with loss scaling where bf16 is unsupported) and on CPUs that compute
        bf16 natively (AVX512-BF16 or AMX), fp32 elsewhere.
    grad_clip : float or None
        Clip the gradient norm to this value (None or 0: no clipping).
    normalize : {"auto", "percentile", "range", "none"} or Normalization
        Intensity normalisation fitted on the training inputs; stored with the model.
    seed : int
        Seed of the patch sampler and of the validation split.
    save_to : str or path, optional
        Write the resulting model (``.safetensors`` recommended) with its metadata.
    resume_from : str or path, optional
        Continue from a checkpoint written by an earlier call with the same data and
        settings; the continued run follows the same trajectory.
    callback : callable, optional
        Called after every step with a dict (``step``, ``steps``, ``loss``, ``lr``, plus
        ``val_psnr``/``val_ssim`` after validation). Returning False or raising
        :class:`StopTraining` stops training after that step.
    channels_last : bool, optional
        Channels-last memory format; default on CUDA and when a CPU trains in bf16.
    compile : bool
        Train through ``torch.compile`` (falls back to eager mode if unavailable).
    distributed : bool, optional
        Data-parallel training over the processes started by ``torchrun`` (see
        :mod:`napari_mprnet.training.distributed`); None: when the torchrun variables are set
        or a process group is active. Every process draws its own ``batch_size`` patches, so
        a step sees ``batch_size * world_size`` patches; the schedule (``steps``, learning
        rates) is that of a single process. Rank 0 alone writes checkpoints and ``save_to``
        and calls ``callback`` (its stop request reaches every rank); losses and validation
        scores are averaged over the ranks, and every rank returns the same model.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    ValueError
        Invalid arguments (naming the argument), unusable data, mismatched checkpoints.
    TrainingDiverged
        The loss or gradient became NaN/infinite (a ``FloatingPointError``).
    """
    args = _check_args({
        "steps": steps, "patch_size": patch_size, "batch_size": batch_size,
        "learning_rate": learning_rate, "min_learning_rate": min_learning_rate,
        "warmup_steps": warmup_steps, "edge_weight": edge_weight, "val_fraction": val_fraction,
        "val_inputs": val_inputs, "val_targets": val_targets, "val_every": val_every,
        "checkpoint_every": checkpoint_every, "checkpoint_path": checkpoint_path,
        "grad_clip": grad_clip, "seed": seed, "callback": callback,
    })
    steps = args["steps"]
    warmup = args["warmup_steps"]
    val_every = args["val_every"] or max(1, steps // 10)
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    ckpt_every = args["checkpoint_every"] or (max(1, steps // 10) if ckpt_path else None)
    dev = resolve_device(device)
    ddp = _ddp.session(distributed, device)
    if ddp is not None:
        dev = ddp.device
    is_main = ddp is None or ddp.is_main
    prec = _choose_precision(precision, dev)
    use_channels_last = _choose_channels_last(channels_last, dev, prec)
    if save_to is not None and Path(save_to).suffix.lower() not in (".safetensors", ".pth",
                                                                      ".pt"):
        raise ValueError(f"save_to must end in .safetensors (or .pth), got '{save_to}'")

    ckpt = load_checkpoint(resume_from) if resume_from is not None else None
    if ckpt is not None:
        saved_args = ckpt.get("args", {})
        diffs = [
            f"{name}={args[name]!r} (checkpoint: {saved_args.get(name)!r})"
            for name in _SCHEDULE_ARGS
            if name in saved_args and saved_args[name] != args[name]
        ]
        if diffs:
            raise ValueError(
                "resume_from: these settings differ from the checkpoint's, so training could "
                "not continue the same schedule: " + ", ".join(diffs)
            )
        ckpt_world = int(ckpt.get("world_size", 1))
        if ckpt_world != (1 if ddp is None else ddp.world_size):
            raise ValueError(
                f"resume_from: the checkpoint was written by a run on {ckpt_world} "
                f"process(es), this one has {1 if ddp is None else ddp.world_size}; resume "
                "with the same number of processes (it sets the batch per step)"
            )
        normalize_arg: Any = Normalization.from_dict(ckpt["normalization"])
    else:
        normalize_arg = normalize

    # ---------------------------------------------------------------- data
    train, val = _load_data(inputs, targets, val_inputs, val_targets, normalize_arg,
                            args["val_fraction"], args["seed"])
    norm = train.normalization

    # ---------------------------------------------------------------- model
    from ..api import prepare_model

    task_hint = model if isinstance(model, str) and model in TASKS else "denoise"
    base = prepare_model(model, task_hint)
    task = _task_of(model, base)
    base_source = _describe_source(model, base)
    base_meta = dict(getattr(base, "metadata", None) or {})
    net: MPRNet = copy.deepcopy(base).to("cpu")
    channels = net.config.in_c
    if ckpt is not None:
        if ckpt.get("config") != net.config.to_dict():
            raise ValueError(
                f"resume_from: the checkpoint holds a network with configuration "
                f"{ckpt.get('config')}, but the base model is {net.config.to_dict()}; "
                "pass the same base model as the interrupted run"
            )
        net.load_state_dict(ckpt["model"])
    net = net.to(dev)
    if use_channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()

    sampler = PatchSampler(train, args["patch_size"], args["batch_size"], augment=True,
                           seed=args["seed"], channels=channels)
    if ddp is not None and ddp.rank > 0:  # rank 0 keeps the single-process stream
        sampler.load_state_dict(np.random.default_rng([args["seed"], ddp.rank])
                                .bit_generator.state)
    val_crops = _validation_crops(val, channels, args["patch_size"])

    optimizer = torch.optim.Adam(net.parameters(), lr=args["learning_rate"])
    use_scaler = prec == "fp16" and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    autocast_dtype = PRECISIONS[prec]

    def autocast() -> contextlib.AbstractContextManager:
        if prec == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=autocast_dtype)

    def val_autocast() -> contextlib.AbstractContextManager:
        # on a CPU validation scores the fp32 model (cheap next to training; exact numbers)
        return contextlib.nullcontext() if dev.type == "cpu" else autocast()

    trained: torch.nn.Module = net if ddp is None else ddp.wrap(net)
    forward: Callable = trained
    compiled = False
    if compile:
        compiled_fn = _compile(trained)
        if compiled_fn is not None:
            forward, compiled = compiled_fn, True

    # ---------------------------------------------------------------- state
    history: list[dict] = []
    best_state: dict[str, torch.Tensor] | None = None
    best = {"step": None, "val_psnr": None, "val_ssim": None}
    base_val = {"val_psnr": None, "val_ssim": None}
    start_step = 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if use_scaler and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        own = ckpt["ranks"][ddp.rank] if ddp is not None else ckpt
        sampler.load_state_dict(own["sampler"])
        torch.set_rng_state(own["torch_rng"])
        if dev.type == "cuda" and ckpt.get("cuda_rng"):
            with contextlib.suppress(RuntimeError, IndexError):
                torch.cuda.set_rng_state_all(list(ckpt["cuda_rng"]))
        history = [dict(entry) for entry in ckpt["history"]]
        best = dict(ckpt["best"])
        best_state = ckpt.get("best_state") or None
        base_val = dict(ckpt.get("base_val", base_val))
        start_step = int(ckpt["step"])
    elif val_crops:
        base_val["val_psnr"], base_val["val_ssim"] = _evaluate_shared(
            net, val_crops, dev, val_autocast, use_channels_last, ddp
        )

    run_args = {
        **{name: args[name] for name in _SCHEDULE_ARGS},
        "val_every": val_every, "checkpoint_every": ckpt_every,
        "normalize": normalize if isinstance(normalize, str) else "given",
        "model": base_source, "task": task, "device": str(dev), "precision": prec,
        "channels_last": use_channels_last, "compile": bool(compile),
        "world_size": 1 if ddp is None else ddp.world_size,
    }
    last_ckpt_step: int | None = start_step if ckpt is not None else None
    #: the sampler's state after the last batch a step used (the worker draws ahead of it)
    consumed = {"sampler": sampler.state_dict()}

    def write_checkpoint(step: int) -> None:
        nonlocal last_ckpt_step
        if ckpt_path is None:
            return
        ranks = None if ddp is None else ddp.gather({  # every rank's sampler and RNG state
            "sampler": _plain(consumed["sampler"]), "torch_rng": torch.get_rng_state(),
        })

        def save() -> None:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "step": step,
                "steps": steps,
                "model": _cpu_state(net),
                "optimizer": optimizer.state_dict(),
                "scheduler": {
                    "kind": "linear_warmup_cosine", "last_step": step, "steps": steps,
                    "warmup_steps": warmup, "learning_rate": args["learning_rate"],
                    "min_learning_rate": args["min_learning_rate"],
                },
                "scaler": scaler.state_dict() if use_scaler else {},
                "sampler": _plain(consumed["sampler"]),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": list(torch.cuda.get_rng_state_all()) if dev.type == "cuda" else [],
                "history": _plain(history),
                "best": _plain(best),
                "best_state": best_state if best_state is not None else {},
                "base_val": _plain(base_val),
                "config": net.config.to_dict(),
                "normalization": norm.to_dict(),
                "normalization_meta": _normalization_meta(norm, normalize),
                "task": task,
                "base_model": base_source,
                "args": _plain(run_args),
                "n_train": len(train),
                "n_val": len(val),
            }
            if ddp is not None:
                payload["world_size"] = ddp.world_size
                payload["ranks"] = ranks
            _atomic_torch_save(payload, ckpt_path)

        if ddp is None:
            save()
        else:  # rank 0 writes, the others wait for it
            ddp.on_main(save)
        last_ckpt_step = step

    # ---------------------------------------------------------------- loop
    params = [p for p in net.parameters() if p.requires_grad]
    max_norm = args["grad_clip"] if args["grad_clip"] is not None else math.inf
    stopped = False
    step = start_step
    started = time.perf_counter()

    def diverged(step: int, what: str, lr: float) -> TrainingDiverged:
        where = (
            f"; the last good checkpoint (step {last_ckpt_step}) is kept at '{ckpt_path}'"
            if ckpt_path is not None and last_ckpt_step is not None else ""
        )
        return TrainingDiverged(
            f"training diverged at step {step}: {what}; lower learning_rate (now "
            f"{args['learning_rate']:g}, {lr:.3g} at this step) or check the data{where}",
            step, str(ckpt_path) if ckpt_path is not None and last_ckpt_step is not None
            else None,
        )

    batches = BatchPrefetcher(sampler.sample, sampler.state_dict)
    try:
        for step in range(start_step + 1, steps + 1):
            lr = learning_rate_at(step, steps, args["learning_rate"], args["min_learning_rate"],
                                  warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            (x, y), consumed["sampler"] = batches.next()
            x = x.to(dev, non_blocking=True)
            y = y.to(dev, non_blocking=True)
            if use_channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                y = y.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            try:
                with autocast():
                    outputs = forward(x)
            except Exception as err:
                if not compiled:
                    raise
                warnings.warn(f"torch.compile failed ({err}); training without it", stacklevel=2)
                forward, compiled = trained, False
                with autocast():
                    outputs = forward(x)
            loss = mprnet_loss([o.float() for o in outputs], y, args["edge_weight"])
            loss_value = float(loss.detach())
            if ddp is not None:  # the mean over ranks: non-finite on every rank if on any
                loss_value = ddp.mean(loss_value)
            if not math.isfinite(loss_value):
                raise diverged(step, f"loss is {loss_value}", lr)
            scaler.scale(loss).backward()
            if use_scaler:
                scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if not math.isfinite(grad_norm) and not use_scaler:
                raise diverged(step, f"gradient norm is {grad_norm}", lr)
            scaler.step(optimizer)
            scaler.update()

            entry: dict[str, Any] = {"step": step, "loss": loss_value, "lr": lr,
                                     "grad_norm": grad_norm}
            if val_crops and (step % val_every == 0 or step == steps):
                val_psnr, val_ssim = _evaluate_shared(net, val_crops, dev, val_autocast,
                                                      use_channels_last, ddp)
                entry["val_psnr"], entry["val_ssim"] = val_psnr, val_ssim
                if best["val_psnr"] is None or val_psnr > best["val_psnr"]:
                    best = {"step": step, "val_psnr": val_psnr, "val_ssim": val_ssim}
                    best_state = _cpu_state(net)
            history.append(entry)

            if callback is not None and is_main:
                event = {"steps": steps, **entry}
                try:
                    stopped = callback(event) is False
                except StopTraining:
                    stopped = True
                except BaseException:
                    if ddp is not None:
                        ddp.share_stop(False, failed=True)
                    raise
            if ddp is not None:
                stopped = ddp.share_stop(stopped)
            if ckpt_path is not None and (stopped or step % ckpt_every == 0 or step == steps):
                write_checkpoint(step)
            if stopped:
                break
    finally:
        batches.close()

    steps_done = step
    if stopped and history:
        history[-1]["stopped"] = True
    elapsed = time.perf_counter() - started

    # ---------------------------------------------------------------- result
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    final_loss = history[-1]["loss"] if history else None
    val_entries = [h for h in history if "val_psnr" in h]
    provenance = {
        "finetuned": True,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "steps": steps_done,
        "steps_planned": steps,
        "stopped_early": stopped,
        "patch_size": args["patch_size"],
        "batch_size": args["batch_size"],
        "learning_rate": args["learning_rate"],
        "min_learning_rate": args["min_learning_rate"],
        "warmup_steps": warmup,
        "edge_weight": args["edge_weight"],
        "grad_clip": args["grad_clip"],
        "seed": args["seed"],
        "device": str(dev),
        "precision": prec,
        "final_loss": final_loss,
        "base_val_psnr": base_val["val_psnr"],
        "base_val_ssim": base_val["val_ssim"],
        "best_val_psnr": best["val_psnr"],
        "best_val_ssim": best["val_ssim"],
        "best_step": best["step"],
        "final_val_psnr": val_entries[-1]["val_psnr"] if val_entries else None,
        "final_val_ssim": val_entries[-1]["val_ssim"] if val_entries else None,
        "n_train_planes": len(train),
        "n_val_planes": len(val),
        "world_size": 1 if ddp is None else ddp.world_size,
        "global_batch_size": args["batch_size"] * (1 if ddp is None else ddp.world_size),
        "torch_version": torch.__version__,
    }
    metadata = {
        **{k: v for k, v in base_meta.items() if k not in ("provenance", "summary")},
        "task": task,
        "trained": True,
        "summary": f"{task} model fine-tuned from {base_source} for {steps_done} steps on "
                   f"{len(train)} planes",
        "normalization": _normalization_meta(norm, normalize),
        "base_model": base_source,
        "provenance": provenance,
    }
    net.metadata = _plain(metadata)
    saved = None
    if save_to is not None:
        from ..weights import save_model

        if ddp is None:
            saved = str(save_model(net, save_to, metadata))
        else:
            written = ddp.on_main(lambda: save_model(net, save_to, metadata))
            saved = str(written if written is not None else Path(save_to))
    return FinetuneResult(
        model=net,
        history=history,
        best_val_psnr=best["val_psnr"],
        stopped=stopped,
        steps_done=steps_done,
        best_val_ssim=best["val_ssim"],
        best_step=best["step"],
        base_val_psnr=base_val["val_psnr"],
        base_val_ssim=base_val["val_ssim"],
        final_loss=final_loss,
        n_train=len(train),
        n_val=len(val),
        device=str(dev),
        precision=prec,
        elapsed_s=elapsed,
        metadata=net.metadata,
        saved_to=saved,
        checkpoint_path=str(ckpt_path) if ckpt_path is not None and last_ckpt_step is not None
        else None,
        world_size=1 if ddp is None else ddp.world_size,
        rank=0 if ddp is None else ddp.rank,
    )

"""Fine-tuning an MPRNet on paired (degraded, clean) images.

:func:`finetune` trains a *copy* of a bundled or user model with the paper's loss, Adam and a
short linear warm-up followed by cosine annealing, validates on held-out planes (PSNR/SSIM),
keeps the best model, writes resumable checkpoints and saves a self-describing safetensors
file that :func:`napari_mprnet.restore` uses with the same intensity normalisation.

The trainer is assembled from parts with one job each: ``options`` (argument checks), ``data``
and ``sampling`` (planes, patches), ``prefetch`` (batches prepared in a worker thread),
``objectives`` (target and loss of a batch), ``schedule`` (learning rate), ``precision``
(autocast), ``sources`` (the planes and the starting network), ``validation``, ``checkpoints``
(write, read, resume checks), ``loop`` (the steps) and ``results`` (what is returned and
stored with the model).
"""

from __future__ import annotations

import copy
import os
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.devices import resolve_device
from ..engine.normalize import Normalization
from ..model.arch import MPRNet
from . import distributed as _ddp
from .checkpoints import (
    CHECKPOINT_FORMAT,
    SCHEDULE_ARGS,
    Checkpointer,
    check_resume,
    check_same_data,
    cpu_state,
    from_checkpoint,
    load_checkpoint,
    plain,
)
from .data import fingerprint
from .loop import Callback, RunState, StepLoop, restore_state
from .objectives import Objective
from .options import check_args, check_writable
from .precision import MixedPrecision, choose_channels_last, choose_precision
from .prefetch import BatchPrefetcher
from .results import (
    FinetuneResult,
    StopTraining,
    TrainingDiverged,
    describe_plan,
    describe_source,
    describe_start,
    normalization_meta,
    provenance,
    task_of,
)
from .sampling import PatchSampler
from .schedule import Schedule, learning_rate_at
from .self_supervised import default_learning_rate, resolve_objective
from .sources import base_network, load_training_data
from .validation import Validator, validation_crops

__all__ = [
    "CHECKPOINT_FORMAT",
    "FinetuneResult",
    "StopTraining",
    "TrainingDiverged",
    "finetune",
    "learning_rate_at",
    "load_checkpoint",
]


@_ddp.with_process_group
def finetune(
    inputs: Any,
    targets: Any = None,
    *,
    model: str | os.PathLike | MPRNet = "denoise",
    steps: int = 1000,
    patch_size: int = 128,
    batch_size: int = 8,
    learning_rate: float | None = None,
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
    objective: Objective | None = None,
    resume_other_data: bool = False,
    method: str | None = None,
    pairs_from_series: bool = False,
    blind_spot_mask: str = "pixel",
    blind_spot_span: int = 2,
    blind_spot_distance: str = "mse",
) -> FinetuneResult:
    """Fine-tune an MPRNet on paired degraded/clean images, or on noisy images alone.

    Parameters
    ----------
    inputs, targets : array, list of arrays, folder path or napari Image layer(s)
        Degraded and clean images (anything :func:`~napari_mprnet.training.data.load_pairs`
        accepts); stacks contribute every plane. ``targets`` None: self-supervised (see
        ``method``); with ``method="noise2noise"`` the targets are independent noisy
        acquisitions of the same scenes.
    model : str, path or MPRNet
        Starting point: a task name for the bundled model, a model file or a loaded network.
        It is copied; the original (possibly cached) model is never modified.
    steps : int
        Optimisation steps (batches).
    patch_size, batch_size : int
        Random training crops per step (patch a multiple of 8, >= 16).
    learning_rate, min_learning_rate : float
        Adam's peak learning rate and the end of the cosine schedule; ``learning_rate``
        None: 2e-4 for supervised training, 5e-5 for the self-supervised methods.
    warmup_steps : int, optional
        Linear warm-up length; default ``min(100, steps // 20)``.
    edge_weight : float
        Weight of the edge loss (the paper's lambda).
    val_fraction : float
        Fraction held out for validation (ignored with ``val_inputs``): whole planes (at
        least one) when there are several, a band of the plane along its longer side when
        there is one (:func:`~.data.split_region`), so that quality is always reported.
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
        settings; the continued run follows the same trajectory. A damaged checkpoint (its
        checksum does not match), one written for other data (plane counts, shapes, hash)
        or settings, or one beyond ``steps`` is refused with a ValueError that says why.
    callback : callable, optional
        Called after every step with a dict (``step``, ``steps``, ``loss``, ``lr``, plus
        ``val_psnr``/``val_ssim`` after validation and ``steps_per_s`` once measured).
        Returning False or raising :class:`StopTraining` stops training after that step.
        It also receives info events, without ``loss``, with ``event`` and a one-line
        ``message`` (also logged at INFO): ``"plan"`` before training (planes, steps,
        device, precision) and ``"rate"`` after the first steps (``steps_per_s``, ``eta_s``);
        their return value is ignored.
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
    objective : Objective, optional
        What each batch is trained towards and with which loss
        (:mod:`napari_mprnet.training.objectives`); default
        ``Supervised(edge_weight=edge_weight)``: the paper's loss on (degraded, clean) pairs.
    resume_other_data : bool
        Resume although the training data differ from the checkpoint's (e.g. training pairs
        regenerated between chunks of one schedule).
    method : {"supervised", "noise2noise", "noise2void"}, optional
        Names an objective (:mod:`napari_mprnet.training.self_supervised`); default
        "supervised" with targets, "noise2void" (blind spot) without, "noise2noise" with
        ``pairs_from_series``. Self-supervised runs score held-out planes with their own
        loss (``val_loss``) and keep the best model by it, the starting one included;
        ``val_inputs``/``val_targets`` are then clean images, scored by PSNR/SSIM, which
        decide instead (docs/self_supervised.md).
    pairs_from_series : bool
        Noise2Noise pairs ``(t, t + 1)`` from the neighbouring frames of the inputs (stacks
        along their first axis), validated on held-out blocks of frames
        (:func:`~napari_mprnet.training.series.series_pairs`).
    blind_spot_mask, blind_spot_span, blind_spot_distance
        Noise2Void settings: hide the masked pixel alone (``"pixel"``) or with its ``span``
        neighbours along x / y / in a block (``"horizontal"``, ``"vertical"``,
        ``"square"``: camera noise correlated between pixels); the loss ``"mse"`` (unbiased
        for any zero-mean noise, photon counts included) or the paper's ``"charbonnier"``
        (robust to outliers, symmetric noise only). See
        :class:`~napari_mprnet.training.self_supervised.Noise2Void`.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    ValueError
        Invalid arguments (naming the argument), unusable data, mismatched checkpoints,
        ``save_to`` or ``checkpoint_path`` not writable (checked before training).
    TrainingDiverged
        The loss or gradient became NaN/infinite (a ``FloatingPointError``).
    """
    objective = resolve_objective(method, objective, targets, bool(pairs_from_series),
                                  edge_weight, blind_spot_mask, blind_spot_span,
                                  blind_spot_distance)
    if learning_rate is None:
        learning_rate = default_learning_rate(objective)
    args = check_args({
        "steps": steps, "patch_size": patch_size, "batch_size": batch_size,
        "learning_rate": learning_rate, "min_learning_rate": min_learning_rate,
        "warmup_steps": warmup_steps, "edge_weight": edge_weight, "val_fraction": val_fraction,
        "val_inputs": val_inputs, "val_targets": val_targets, "val_every": val_every,
        "checkpoint_every": checkpoint_every, "checkpoint_path": checkpoint_path,
        "grad_clip": grad_clip, "seed": seed, "callback": callback,
    })
    steps = args["steps"]
    val_every = args["val_every"] or max(1, steps // 10)
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    ckpt_every = args["checkpoint_every"] or (max(1, steps // 10) if ckpt_path else None)
    dev = resolve_device(device)
    ddp = _ddp.session(distributed, device)
    if ddp is not None:
        dev = ddp.device
    world_size = 1 if ddp is None else ddp.world_size
    prec = choose_precision(precision, dev)
    use_channels_last = choose_channels_last(channels_last, dev, prec)
    if save_to is not None and Path(save_to).suffix.lower() not in (".safetensors", ".pth",
                                                                      ".pt"):
        raise ValueError(f"save_to must end in .safetensors (or .pth), got '{save_to}'")
    if save_to is not None:
        check_writable(Path(save_to), "save_to")
    if ckpt_path is not None:
        check_writable(ckpt_path, "checkpoint_path")

    ckpt = load_checkpoint(resume_from) if resume_from is not None else None
    normalize_arg: Any = normalize
    if ckpt is not None:
        check_resume(ckpt, {**args, "objective": plain(objective.describe())}, world_size,
                     path=resume_from)
        normalize_arg = from_checkpoint(resume_from, Normalization.from_dict,
                                         ckpt["normalization"])

    # ---------------------------------------------------------------- data and model
    train, val = load_training_data(inputs, targets, val_inputs, val_targets, normalize_arg,
                                    args["val_fraction"], args["seed"], bool(pairs_from_series),
                                    min_train=args["patch_size"])
    norm = train.normalization
    data_print = fingerprint(train, val) if ckpt is not None or ckpt_path is not None else None
    if ckpt is not None and not resume_other_data:
        check_same_data(ckpt, data_print, path=resume_from)
    base, net = base_network(model)
    task = task_of(model, base)
    base_source = describe_source(model, base)
    base_meta = dict(getattr(base, "metadata", None) or {})
    channels = net.config.in_c
    # the starting network, kept apart for the blind-spot validation's paired comparison
    start_copy = copy.deepcopy(net) if not objective.needs_targets else None
    if ckpt is not None:
        if ckpt.get("config") != net.config.to_dict():
            raise ValueError(
                f"resume_from: the checkpoint holds a network with configuration "
                f"{ckpt.get('config')}, but the base model is {net.config.to_dict()}; "
                "pass the same base model as the interrupted run"
            )
        from_checkpoint(resume_from, net.load_state_dict, ckpt["model"])
    net = net.to(dev)
    if use_channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()

    # ---------------------------------------------------------------- parts
    sampler = PatchSampler(train, args["patch_size"], args["batch_size"], augment=True,
                           seed=args["seed"], channels=channels)
    if ddp is not None and ddp.rank > 0:  # rank 0 keeps the single-process stream
        sampler.load_state_dict(np.random.default_rng([args["seed"], ddp.rank])
                                .bit_generator.state)
    optimizer = torch.optim.Adam(net.parameters(), lr=args["learning_rate"])
    amp = MixedPrecision(prec, dev)
    schedule = Schedule(steps, args["learning_rate"], args["min_learning_rate"],
                        args["warmup_steps"])
    self_supervised = objective.name != "supervised"
    validator = Validator(validation_crops(val, channels, args["patch_size"]), val_every, steps,
                          dev, amp.validation_autocast, use_channels_last, ddp,
                          objective=objective, seed=args["seed"],
                          clean=not self_supervised or val_targets is not None,
                          reference=None if start_copy is None else start_copy.to(dev))
    run_args = {
        **{name: args[name] for name in SCHEDULE_ARGS},
        "val_every": val_every, "checkpoint_every": ckpt_every,
        "normalize": normalize if isinstance(normalize, str) else "given",
        "model": base_source, "task": task, "device": str(dev), "precision": prec,
        "channels_last": use_channels_last, "compile": bool(compile),
        "world_size": world_size, "objective": plain(objective.describe()),
    }
    checkpointer = None if ckpt_path is None else Checkpointer(ckpt_path, ckpt_every, {
        "steps": steps, "config": net.config.to_dict(), "normalization": norm.to_dict(),
        "normalization_meta": normalization_meta(norm, normalize), "task": task,
        "base_model": base_source, "args": plain(run_args), "n_train": len(train),
        "n_val": len(val), "data": data_print,
    }, ddp)
    loop = StepLoop(net=net, trained=net if ddp is None else ddp.wrap(net), optimizer=optimizer,
                    amp=amp, objective=objective, schedule=schedule, validator=validator,
                    grad_clip=args["grad_clip"], device=dev, channels_last=use_channels_last,
                    checkpointer=checkpointer, callback=callback, session=ddp,
                    compile=compile)

    # ---------------------------------------------------------------- run
    loop.inform(describe_plan(
        task=task, base=base_source, train_shapes=[p.shape for p in train.inputs],
        n_val=len(val), args=args, start_step=int(ckpt["step"]) if ckpt is not None else 0,
        device=dev, precision=prec, channels_last=use_channels_last, world_size=world_size,
        objective=objective.name, checkpoint=ckpt_path, checkpoint_every=ckpt_every))
    if ckpt is not None:
        state = from_checkpoint(resume_from, restore_state, ckpt, optimizer, amp, sampler, ddp,
                                dev)
    else:
        state = RunState(sampler=sampler.state_dict())
        if validator:
            state.base_val = validator.score(net)
            loop.inform(describe_start(state.base_val))
            if self_supervised:  # kept unless a step beats it: fine-tuning cannot drift off
                state.best, state.best_state = {"step": 0, **state.base_val}, cpu_state(net)
    started = time.perf_counter()

    def draw() -> Any:
        inputs_batch, targets_batch = sampler.sample()
        return objective.prepare(inputs_batch, targets_batch, sampler.generator)

    with closing(BatchPrefetcher(draw, sampler.state_dict)) as batches:
        loop.run(state, batches)
    elapsed = time.perf_counter() - started

    # ---------------------------------------------------------------- result
    if state.best_state is not None:
        net.load_state_dict(state.best_state)
    net.eval()
    history, best, steps_done = state.history, state.best, state.step
    metadata = {
        **{k: v for k, v in base_meta.items() if k not in ("provenance", "summary")},
        "task": task,
        "trained": True,
        "summary": f"{task} model fine-tuned from {base_source} for {steps_done} steps on "
                   f"{len(train)} planes",
        "normalization": normalization_meta(norm, normalize),
        "base_model": base_source,
        "provenance": provenance(args, steps_done=steps_done, stopped=state.stopped,
                                 device=dev, precision=prec, history=history, best=best,
                                 base_val=state.base_val, n_train=len(train), n_val=len(val),
                                 world_size=world_size, objective=objective.describe()),
    }
    net.metadata = plain(metadata)
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
        best_val_psnr=best.get("val_psnr"),
        stopped=state.stopped,
        steps_done=steps_done,
        best_val_ssim=best.get("val_ssim"),
        best_step=best["step"],
        base_val_psnr=state.base_val.get("val_psnr"),
        base_val_ssim=state.base_val.get("val_ssim"),
        best_val_loss=best.get("val_loss"),
        base_val_loss=state.base_val.get("val_loss"),
        final_loss=history[-1]["loss"] if history else None,
        n_train=len(train),
        n_val=len(val),
        device=str(dev),
        precision=prec,
        elapsed_s=elapsed,
        metadata=net.metadata,
        saved_to=saved,
        checkpoint_path=str(ckpt_path) if ckpt_path is not None
        and state.last_checkpoint is not None else None,
        world_size=world_size,
        rank=0 if ddp is None else ddp.rank,
    )

"""The step loop of fine-tuning: one optimisation step after another, until done or stopped.

Each step: the learning rate from the schedule, the next prepared batch from the worker,
forward (autocast), the objective's loss, the non-finite guard, backward, gradient clipping,
the optimiser step; then validation when due (keeping the best weights), the callback (which
may stop the run) and a checkpoint when due. Everything a checkpoint needs to continue the
same trajectory lives in :class:`RunState`.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .checkpoints import Checkpointer, cpu_state, plain
from .objectives import Batch, Objective
from .precision import MixedPrecision
from .prefetch import BatchPrefetcher
from .results import StopTraining, TrainingDiverged
from .sampling import PatchSampler
from .schedule import Schedule
from .validation import Validator

__all__ = ["RunState", "StepLoop", "compile_forward", "restore_state"]

Callback = Callable[[dict], Any]
log = logging.getLogger(__name__)
#: The step rate is reported after this many steps beyond the first (which also pays for
#: warm-up costs: allocations, kernel selection).
RATE_AFTER = 3


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class RunState:
    """Where a run stands after ``step`` (what a checkpoint stores and resume restores)."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"step": None, "val_psnr": None,
                                                "val_ssim": None})
    best_state: dict[str, torch.Tensor] | None = None
    base_val: dict = field(default_factory=lambda: {"val_psnr": None, "val_ssim": None})
    #: the sampler's state after the last batch a step used (the worker draws ahead of it)
    sampler: dict = field(default_factory=dict)
    stopped: bool = False
    last_checkpoint: int | None = None


def restore_state(ckpt: dict, optimizer: torch.optim.Optimizer, amp: MixedPrecision,
                  sampler: PatchSampler, session: Any, device: torch.device) -> RunState:
    """Put the optimiser, sampler and RNGs where the checkpoint left them."""
    optimizer.load_state_dict(ckpt["optimizer"])
    amp.load_scaler_state(ckpt.get("scaler"))
    own = ckpt["ranks"][session.rank] if session is not None else ckpt
    sampler.load_state_dict(own["sampler"])
    torch.set_rng_state(own["torch_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng"):
        try:
            torch.cuda.set_rng_state_all(list(ckpt["cuda_rng"]))
        except (RuntimeError, IndexError):
            pass
    step = int(ckpt["step"])
    return RunState(step=step, history=[dict(entry) for entry in ckpt["history"]],
                    best=dict(ckpt["best"]), best_state=ckpt.get("best_state") or None,
                    base_val=dict(ckpt.get("base_val", RunState().base_val)),
                    sampler=sampler.state_dict(), last_checkpoint=step)


def compile_forward(module: torch.nn.Module) -> Callable | None:
    """``torch.compile(module)``, or None (with a warning) where it is unavailable."""
    compiler = getattr(torch, "compile", None)
    if compiler is None:
        return None
    try:
        return compiler(module)
    except Exception as err:  # noqa: BLE001 - compilation is an optional speed-up
        warnings.warn(f"torch.compile unavailable ({err}); training without it", stacklevel=3)
        return None


class StepLoop:
    """Runs the steps of one fine-tuning run (see the module docstring).

    Parameters
    ----------
    net : torch.nn.Module
        The network being trained (its state is what checkpoints and the best model keep).
    trained : torch.nn.Module
        What the forward pass calls: ``net`` or its distributed wrapper.
    optimizer, amp, objective, schedule, validator
        The run's parts.
    grad_clip : float or None
        Gradient-norm clip (None: no clipping).
    device : torch.device
    channels_last : bool
        Batches in channels-last memory format.
    checkpointer : Checkpointer or None
    callback : callable or None
        Called (on rank 0) after every step with the step's event.
    session : distributed.Session or None
    compile : bool
        Forward through ``torch.compile`` (eager again if it fails at the first step).
    """

    def __init__(self, *, net: torch.nn.Module, trained: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, amp: MixedPrecision, objective: Objective,
                 schedule: Schedule, validator: Validator, grad_clip: float | None,
                 device: torch.device, channels_last: bool,
                 checkpointer: Checkpointer | None = None, callback: Callback | None = None,
                 session: Any = None, compile: bool = False) -> None:
        self.net, self.trained = net, trained
        self.optimizer, self.amp, self.objective = optimizer, amp, objective
        self.schedule, self.validator = schedule, validator
        self.max_norm = grad_clip if grad_clip is not None else math.inf
        self.device, self.channels_last = device, channels_last
        self.checkpointer, self.callback, self.session = checkpointer, callback, session
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.steps_per_s: float | None = None
        self._stop_pending = False
        self.forward: Callable = trained
        self.compiled = False
        if compile:
            compiled = compile_forward(trained)
            if compiled is not None:
                self.forward, self.compiled = compiled, True

    # ------------------------------------------------------------------ one step

    def _outputs(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        try:
            with self.amp.autocast():
                return self.forward(inputs)
        except Exception as err:
            if not self.compiled:
                raise
            warnings.warn(f"torch.compile failed ({err}); training without it", stacklevel=3)
            self.forward, self.compiled = self.trained, False
            with self.amp.autocast():
                return self.forward(inputs)

    def diverged(self, state: RunState, step: int, what: str, lr: float) -> TrainingDiverged:
        """The error for a non-finite loss or gradient at ``step``."""
        kept = self.checkpointer is not None and state.last_checkpoint is not None
        where = (f"; the last good checkpoint (step {state.last_checkpoint}) is kept at "
                 f"'{self.checkpointer.path}'" if kept else "")
        return TrainingDiverged(
            f"training diverged at step {step}: {what}; lower learning_rate (now "
            f"{self.schedule.learning_rate:g}, {lr:.3g} at this step) or check the data{where}",
            step, str(self.checkpointer.path) if kept else None,
        )

    def step(self, state: RunState, step: int, batch: Batch) -> dict:
        """One optimisation step; returns its history entry."""
        lr = self.schedule.at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(self.device, self.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self._outputs(batch.inputs)
        loss = self.objective.loss([o.float() for o in outputs], batch)
        loss_value = float(loss.detach())
        if self.session is not None:  # the mean over ranks: non-finite on every rank if on any
            loss_value = self.session.mean(loss_value)
        if not math.isfinite(loss_value):
            raise self.diverged(state, step, f"loss is {loss_value}", lr)
        scaler = self.amp.scaler
        scaler.scale(loss).backward()
        if self.amp.uses_scaler:
            scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_norm))
        if not math.isfinite(grad_norm) and not self.amp.uses_scaler:
            raise self.diverged(state, step, f"gradient norm is {grad_norm}", lr)
        scaler.step(self.optimizer)
        scaler.update()
        return {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm}

    # ------------------------------------------------------------------ after a step

    def _validate(self, state: RunState, entry: dict) -> None:
        scores = self.validator.score(self.net)
        entry.update(scores)
        if self.validator.better(scores, state.best):
            state.best = {"step": entry["step"], **scores}
            state.best_state = cpu_state(self.net)

    def inform(self, event: dict) -> None:
        """An info event (``event`` and ``message``, no ``loss``) for the log and the callback.

        Its return value is ignored; a :class:`StopTraining` it raises stops the run after
        the next step.
        """
        log.info("%s", event["message"])
        if self.callback is not None and (self.session is None or self.session.is_main):
            try:
                self.callback(dict(event))
            except StopTraining:
                self._stop_pending = True

    def _report_rate(self, step: int, seconds: float) -> None:
        self.steps_per_s = RATE_AFTER / seconds if seconds > 0 else None
        if self.steps_per_s is None:
            return
        left = self.schedule.steps - step
        self.inform({
            "event": "rate", "step": step, "steps": self.schedule.steps,
            "steps_per_s": self.steps_per_s, "eta_s": left / self.steps_per_s,
            "message": f"{1 / self.steps_per_s:.2f} s per step ({self.steps_per_s:.2f} "
                       f"steps/s); about {_duration(left / self.steps_per_s)} for the "
                       f"remaining {left} steps" + (" plus validation" if self.validator
                                                   else ""),
        })

    def _ask_callback(self, entry: dict) -> bool:
        """True when the callback asks to stop (shared with every rank)."""
        stop, self._stop_pending = self._stop_pending, False
        if self.callback is not None and (self.session is None or self.session.is_main):
            event = {"steps": self.schedule.steps, **entry}
            if self.steps_per_s is not None:
                event["steps_per_s"] = self.steps_per_s
            try:
                stop = self.callback(event) is False or stop
            except StopTraining:
                stop = True
            except BaseException:
                if self.session is not None:
                    self.session.share_stop(False, failed=True)
                raise
        if self.session is not None:
            stop = self.session.share_stop(stop)
        return stop

    def write_checkpoint(self, state: RunState) -> None:
        """Write the checkpoint of ``state.step`` (when the run has a checkpoint path)."""
        if self.checkpointer is None:
            return
        dev = self.device
        shared = {
            "model": cpu_state(self.net),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.to_dict(state.step),
            "scaler": self.amp.scaler_state(),
            "cuda_rng": list(torch.cuda.get_rng_state_all()) if dev.type == "cuda" else [],
            "history": plain(state.history),
            "best": plain(state.best),
            "best_state": state.best_state if state.best_state is not None else {},
            "base_val": plain(state.base_val),
        }
        own = {"sampler": plain(state.sampler), "torch_rng": torch.get_rng_state()}
        self.checkpointer.write(state.step, shared, own)
        state.last_checkpoint = state.step

    def run(self, state: RunState, batches: BatchPrefetcher) -> RunState:
        """Steps from ``state.step + 1`` to the schedule's last one, or until stopped."""
        steps = self.schedule.steps
        first_done = 0.0
        start = state.step
        for step in range(start + 1, steps + 1):
            batch, state.sampler = batches.next()
            entry = self.step(state, step, batch)
            state.step = step
            if self.validator.due(step):
                self._validate(state, entry)
            state.history.append(entry)
            state.stopped = self._ask_callback(entry)
            done_here = step - start
            if done_here == 1:
                first_done = time.perf_counter()
            elif done_here == RATE_AFTER + 1:
                self._report_rate(step, time.perf_counter() - first_done)
            if self.checkpointer is not None and self.checkpointer.due(step, steps,
                                                                       state.stopped):
                self.write_checkpoint(state)
            if state.stopped:
                break
        if state.stopped and state.history:
            state.history[-1]["stopped"] = True
        return state

"""Training objectives: what a batch is trained towards, and with which loss.

The trainer (:func:`napari_mprnet.training.trainer.finetune`) is the same for every objective:
it samples aligned patch pairs (``inputs``, ``targets``) from the training planes, hands them
to the objective's :meth:`Objective.prepare` (in the batch worker thread, on the CPU), runs the
network on ``batch.inputs`` and back-propagates :meth:`Objective.loss`.

Adding an objective
-------------------
Subclass :class:`Objective` (a frozen dataclass whose fields are the objective's settings):

- ``name``: a short identifier, stored in checkpoints and the model's provenance; a resumed
  run must use the same objective with the same settings (:meth:`Objective.describe`).
- ``needs_targets``: False when the objective trains on the inputs alone (the data loader
  then pairs every plane with itself, so ``targets`` is the noisy patch again).
- ``prepare(inputs, targets, rng)``: build the :class:`Batch` from the sampled patches
  (float32 CPU tensors ``(B, C, P, P)``, already cropped, flipped and rotated alike). Draw
  every random number from ``rng`` (the sampler's generator: a resumed run then repeats the
  same batches). Return new tensors; do not modify the ones given.
- ``loss(stages, batch)``: a scalar tensor from the network's stage outputs (float32, finest
  stage first, each shaped like ``batch.inputs``) and the batch (moved to the device).

Two objectives this interface is designed for (issue: self-supervised fine-tuning):

- **noise2noise**: ``targets`` are a second, independent noisy acquisition of the same scene;
  ``prepare`` returns them unchanged and ``loss`` is the supervised loss, i.e. the
  :class:`Supervised` objective applied to (noisy, noisy) pairs, under its own ``name``.
- **noise2void** (blind spot): ``needs_targets = False``; ``prepare`` replaces a few pixels
  of ``inputs`` (by a neighbour or a local statistic, positions drawn from ``rng``), sets
  ``targets`` to the unmasked noisy patch and ``mask`` to 1 at the replaced pixels; ``loss``
  compares the stages with ``targets`` at ``mask`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from .losses import mprnet_loss

__all__ = ["Batch", "Objective", "Supervised"]


@dataclass
class Batch:
    """One training batch as an objective prepared it.

    Attributes
    ----------
    inputs : torch.Tensor
        What the network sees, ``(B, C, P, P)``.
    targets : torch.Tensor
        What the loss compares the outputs with, ``(B, C, P, P)``.
    mask : torch.Tensor or None
        ``(B, 1, P, P)``, 1 where the loss is taken (None: everywhere).
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor | None = None

    def to(self, device: torch.device, channels_last: bool = False) -> Batch:
        """The batch on ``device`` (channels-last when asked), as a new Batch."""
        def move(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=torch.channels_last) if channels_last else t

        return Batch(move(self.inputs), move(self.targets), move(self.mask))


@dataclass(frozen=True)
class Objective:
    """Base class of training objectives (see the module docstring for how to add one)."""

    name = "objective"
    needs_targets = True

    def prepare(self, inputs: Tensor, targets: Tensor, rng: np.random.Generator) -> Batch:
        """Build the batch from aligned patches; random choices from ``rng`` only."""
        raise NotImplementedError

    def loss(self, stages: Sequence[Tensor], batch: Batch) -> Tensor:
        """Scalar loss of the network's stage outputs on ``batch``."""
        raise NotImplementedError

    def describe(self) -> dict:
        """``name`` and settings: stored with checkpoints and the model's provenance."""
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class Supervised(Objective):
    """(degraded, clean) pairs: the paper's Charbonnier + edge loss over the stages.

    Parameters
    ----------
    edge_weight : float
        Weight of the edge (Laplacian) loss, the paper's lambda.
    """

    edge_weight: float = 0.05
    name = "supervised"

    def prepare(self, inputs: Tensor, targets: Tensor, rng: np.random.Generator) -> Batch:
        return Batch(inputs, targets)

    def loss(self, stages: Sequence[Tensor], batch: Batch) -> Tensor:
        return mprnet_loss(list(stages), batch.targets, self.edge_weight)

"""The learning-rate schedule of fine-tuning: linear warm-up, then half a cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Schedule", "default_warmup", "learning_rate_at"]


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


def default_warmup(steps: int) -> int:
    """The default warm-up length: 5 % of the steps, at most 100."""
    return min(100, steps // 20)


@dataclass(frozen=True)
class Schedule:
    """A run's schedule: :func:`learning_rate_at` with its settings bound."""

    steps: int
    learning_rate: float
    min_learning_rate: float
    warmup_steps: int

    def at(self, step: int) -> float:
        """Learning rate of (1-based) ``step``."""
        return learning_rate_at(step, self.steps, self.learning_rate, self.min_learning_rate,
                                self.warmup_steps)

    def to_dict(self, last_step: int) -> dict:
        """The checkpoint's record of the schedule."""
        return {"kind": "linear_warmup_cosine", "last_step": last_step, "steps": self.steps,
                "warmup_steps": self.warmup_steps, "learning_rate": self.learning_rate,
                "min_learning_rate": self.min_learning_rate}

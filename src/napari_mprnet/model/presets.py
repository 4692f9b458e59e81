"""Named MPRNet configurations: the three official releases."""

from __future__ import annotations

from .arch import MPRNetConfig
from .tasks import TASKS

#: Configurations of the officially released checkpoints, by task.
OFFICIAL_PRESETS: dict[str, MPRNetConfig] = {
    "denoise": MPRNetConfig(n_feat=80, scale_unetfeats=48, scale_orsnetfeats=32),
    "deblur": MPRNetConfig(n_feat=96, scale_unetfeats=48, scale_orsnetfeats=32),
    "derain": MPRNetConfig(n_feat=40, scale_unetfeats=20, scale_orsnetfeats=16),
}

assert tuple(OFFICIAL_PRESETS) == TASKS


def official_config(task: str) -> MPRNetConfig:
    """Return the official configuration for ``task`` ("denoise", "deblur" or "derain")."""
    try:
        return OFFICIAL_PRESETS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}") from None

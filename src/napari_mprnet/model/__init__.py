"""The MPRNet network and its named configurations (loaded on first use: torch is heavy)."""

from __future__ import annotations

import importlib
from typing import Any

from .tasks import TASKS

_LAZY = {
    "MPRNet": ".arch",
    "MPRNetConfig": ".arch",
    "OFFICIAL_PRESETS": ".presets",
    "official_config": ".presets",
}

__all__ = ["OFFICIAL_PRESETS", "TASKS", "MPRNet", "MPRNetConfig", "official_config"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

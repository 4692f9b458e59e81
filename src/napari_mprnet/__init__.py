"""napari-mprnet: MPRNet image restoration for napari, Python and the command line.

The public names are loaded on first use, so that ``napari-mprnet --help`` and the napari
plugin manifest do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> module (relative to this package) that defines it.
_LAZY = {
    "MPRNet": ".model.arch",
    "MPRNetConfig": ".model.arch",
    "finetune": ".training.trainer",
    "iter_restore": ".api",
    "restore": ".api",
    "removed_part": ".engine.removed",
    "load_model": ".weights",
    "save_model": ".weights",
}

__all__ = ["MPRNet", "MPRNetConfig", "__version__", "finetune", "iter_restore", "load_model",
           "losses", "removed_part", "restore", "save_model"]


def __getattr__(name: str) -> Any:
    if name == "losses":
        return importlib.import_module(".losses", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Models registered at run time (e.g. by the fine-tune widget) for the restore widget.

>>> register_weights("my cells", "/path/to/finetuned.safetensors")  # doctest: +SKIP
>>> register_weights("in memory", model)  # an MPRNet  # doctest: +SKIP

Registered models appear in the restore widget's weights selector as
``"Fine-tuned: <name>"`` for as long as the napari session lasts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from psygnal import Signal

__all__ = ["register_weights", "registered_weights", "registry_events", "unregister_weights"]


class _RegistryEvents:
    """Emits ``changed()`` whenever a model is registered or removed."""

    changed = Signal()


#: Connect to ``registry_events.changed`` to hear about new or removed models.
registry_events = _RegistryEvents()
_REGISTRY: dict[str, Any] = {}


def register_weights(name: str, model_or_path: Any, *, replace: bool = True) -> None:
    """Make a model available in the restore widget's weights selector.

    Parameters
    ----------
    name : str
        Label shown to the user (non-empty).
    model_or_path : MPRNet, str or path
        A loaded network or a model file.
    replace : bool
        Replace a model already registered under ``name`` (default) instead of raising.
    """
    from ..model.arch import MPRNet

    if not isinstance(name, str) or not name.strip():
        raise ValueError("a registered model needs a non-empty name")
    name = name.strip()
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file '{path}' does not exist")
        model_or_path = str(path)
    elif not isinstance(model_or_path, MPRNet):
        raise TypeError(
            f"register an MPRNet or a model file path, got {type(model_or_path).__name__}"
        )
    if name in _REGISTRY and not replace:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = model_or_path
    registry_events.changed.emit()


def unregister_weights(name: str) -> None:
    """Remove a registered model (no error if it is not registered)."""
    if _REGISTRY.pop(name, None) is not None:
        registry_events.changed.emit()


def registered_weights() -> dict[str, Any]:
    """A copy of the registered models, by name."""
    return dict(_REGISTRY)

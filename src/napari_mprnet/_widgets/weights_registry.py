"""Models offered in the Restore widget beside the bundled ones: fine-tuned models.

>>> persist_weights("my cells", model)  # saved, and offered in later sessions  # doctest: +SKIP
>>> register_weights("in memory", model)  # this session only  # doctest: +SKIP

Registered models appear in the restore widget's weights selector as
``"Fine-tuned: <name>"``. The Fine-tune widget *persists* its models: each is saved (with its
metadata) in a ``finetuned`` folder next to the settings file and listed in its
``index.json``, so a model chosen in the Restore widget still works from the menu after
napari restarts. Models registered with :func:`register_weights` last for the session.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from psygnal import Signal

from ..io.atomic import atomic_write_bytes
from .settings import settings_path

__all__ = ["models_dir", "persist_weights", "register_weights", "registered_weights",
           "registry_events", "unregister_weights"]

log = logging.getLogger(__name__)


class _RegistryEvents:
    """Emits ``changed()`` whenever a model is registered or removed."""

    changed = Signal()


#: Connect to ``registry_events.changed`` to hear about new or removed models.
registry_events = _RegistryEvents()
_REGISTRY: dict[str, Any] = {}
_INDEX = "index.json"


def models_dir() -> Path:
    """Where persisted fine-tuned models live (next to the settings file)."""
    return settings_path().parent / "finetuned"


def _read_index() -> dict[str, str]:
    try:
        data = json.loads((models_dir() / _INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("ignoring an unreadable list of fine-tuned models: %s", err)
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str) and "/" not in v}


def _write_index(index: dict[str, str]) -> None:
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / _INDEX, json.dumps(index, indent=1).encode("utf-8"),
                       overwrite=True)


def _persisted() -> dict[str, str]:
    """Persisted models whose files still exist, by name (paths as strings)."""
    folder = models_dir()
    return {name: str(folder / file) for name, file in _read_index().items()
            if (folder / file).is_file()}


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a registered model needs a non-empty name")
    return name.strip()


def register_weights(name: str, model_or_path: Any, *, replace: bool = True) -> None:
    """Make a model available in the restore widget's weights selector for this session.

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

    name = _check_name(name)
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file '{path}' does not exist")
        model_or_path = str(path)
    elif not isinstance(model_or_path, MPRNet):
        raise TypeError(
            f"register an MPRNet or a model file path, got {type(model_or_path).__name__}"
        )
    if name in registered_weights() and not replace:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = model_or_path
    registry_events.changed.emit()


def persist_weights(name: str, model: Any) -> Path:
    """Save ``model`` (an MPRNet) among the persisted fine-tuned models and register it
    under ``name`` (replacing one of that name); return the file written.

    Raises
    ------
    OSError
        If the models folder cannot be written (nothing is registered then).
    """
    from ..weights import save_model

    name = _check_name(name)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    index = _read_index()
    file = index.get(name) or f"{slug}.safetensors"
    taken = set(index.values()) - {index.get(name)}
    number = 2
    while file in taken:
        file, number = f"{slug}_{number}.safetensors", number + 1
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(save_model(model, folder / file))
    _write_index({**index, name: path.name})
    _REGISTRY[name] = str(path)
    registry_events.changed.emit()
    return path


def unregister_weights(name: str) -> None:
    """Remove a registered model (no error if it is not registered); a persisted one is
    deleted from disk too."""
    changed = _REGISTRY.pop(name, None) is not None
    index = _read_index()
    if name in index:
        file = models_dir() / index.pop(name)
        _write_index(index)
        file.unlink(missing_ok=True)
        changed = True
    if changed:
        registry_events.changed.emit()


def registered_weights() -> dict[str, Any]:
    """The registered models by name: persisted ones (file paths) and this session's."""
    return {**_persisted(), **_REGISTRY}

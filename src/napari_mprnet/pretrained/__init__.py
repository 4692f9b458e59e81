"""The default models bundled with the package, one per task, checked by SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache, lru_cache
from pathlib import Path

__all__ = ["REGISTRY_FILE", "bundled_info", "bundled_name", "bundled_path", "is_bundled_name"]

_HERE = Path(__file__).parent
REGISTRY_FILE = _HERE / "registry.json"


@lru_cache(maxsize=1)
def _registry() -> dict[str, dict]:
    return json.loads(REGISTRY_FILE.read_text())


def is_bundled_name(name: str) -> bool:
    """Whether ``name`` names a bundled default model (a task such as "denoise")."""
    return isinstance(name, str) and name in _registry()


def bundled_name(source: object) -> str | None:
    """The bundled model ``source`` names, or None: a bare task name such as "denoise" (a str,
    or a path whose text is exactly that) always means the bundled model; any other text,
    e.g. "./denoise", is a path."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    name = os.fspath(source)
    return name if is_bundled_name(name) else None


def bundled_info(task: str) -> dict:
    """Registry entry of the bundled model for ``task`` (file, sha256, trained, summary)."""
    registry = _registry()
    if task not in registry:
        raise ValueError(
            f"no bundled model for {task!r}; bundled tasks: {', '.join(sorted(registry))}"
        )
    return dict(registry[task])


@cache
def _verified(path: Path, sha256: str) -> bool:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest == sha256


def bundled_path(task: str) -> Path:
    """Path of the bundled weights for ``task``, after checking their recorded SHA-256.

    Raises
    ------
    ValueError
        If the file is missing or its checksum differs from the registry (a damaged install).
    """
    info = bundled_info(task)
    path = _HERE / info["file"]
    if not path.is_file():
        raise ValueError(f"bundled weights for {task!r} are missing ({path}); reinstall the package")
    if not _verified(path, info["sha256"]):
        raise ValueError(
            f"bundled weights for {task!r} at {path} fail their SHA-256 check; the install is "
            "damaged: reinstall napari-mprnet"
        )
    return path

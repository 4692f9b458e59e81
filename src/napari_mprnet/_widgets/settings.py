"""Restore settings remembered between uses, in a small JSON file.

The file is ``settings.json`` in the user config directory (``platformdirs``), or
``~/.config/napari-mprnet/`` without it. The environment variable
``NAPARI_MPRNET_SETTINGS`` names another file (tests point it into a temporary folder).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._layers import OUTPUT_TYPES
from ..io.atomic import atomic_write_bytes
from ..model.tasks import TASKS

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "SETTINGS_ENV",
    "RestoreSettings",
    "WeightsChoice",
    "load_settings",
    "save_settings",
    "settings_path",
]

log = logging.getLogger(__name__)

SETTINGS_ENV = "NAPARI_MPRNET_SETTINGS"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
WEIGHT_SOURCES = ("bundled", "file", "registered")


def settings_path() -> Path:
    """Where the settings live (``$NAPARI_MPRNET_SETTINGS`` if set)."""
    override = os.environ.get(SETTINGS_ENV)
    if override:
        return Path(override).expanduser()
    try:
        from platformdirs import user_config_dir
    except ImportError:
        return Path.home() / ".config" / "napari-mprnet" / "settings.json"
    return Path(user_config_dir("napari-mprnet", appauthor=False)) / "settings.json"


@dataclass
class WeightsChoice:
    """Which model a task uses: the bundled default, a file, or a registered model."""

    source: str = "bundled"
    file: str = ""
    name: str = ""

    @classmethod
    def from_dict(cls, value: Any) -> WeightsChoice:
        if not isinstance(value, dict):
            return cls()
        source = value.get("source", "bundled")
        return cls(
            source=source if source in WEIGHT_SOURCES else "bundled",
            file=str(value.get("file") or ""),
            name=str(value.get("name") or ""),
        )


def _default_weights() -> dict[str, WeightsChoice]:
    return {task: WeightsChoice() for task in TASKS}


@dataclass
class RestoreSettings:
    """Everything the restore widget and the menu commands need besides the layer."""

    task: str = "denoise"
    weights: dict[str, WeightsChoice] = field(default_factory=_default_weights)
    tile_size: int | str = "auto"
    tile_overlap: int = 32
    device: str = "auto"
    precision: str = "auto"
    stages: bool = False
    #: the Restore widget's strength ("auto" or a number >= 0); menu commands use "auto"
    strength: float | str = "auto"
    #: the Restore widget's noise: "auto" or a Gaussian sd > 0 in the layer's units (used
    #: with strength "auto" when denoising); menu commands use "auto"
    noise: float | str = "auto"
    #: result dtype in napari: "auto" (8-bit stays 8-bit, else float32), "same as input",
    #: "float32" (see :func:`napari_mprnet._layers.napari_output_dtype`)
    output_type: str = "auto"
    #: the Restore widget's "show what was removed" (menu commands never add it)
    show_removed: bool = False

    def weights_for(self, task: str) -> WeightsChoice:
        return self.weights.setdefault(task, WeightsChoice())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RestoreSettings:
        """Build settings from stored values; anything invalid falls back to its default."""
        settings = cls()
        if not isinstance(data, dict):
            return settings
        if data.get("task") in TASKS:
            settings.task = data["task"]
        if isinstance(data.get("weights"), dict):
            for task, choice in data["weights"].items():
                if task in TASKS:
                    settings.weights[task] = WeightsChoice.from_dict(choice)
        tile = data.get("tile_size")
        if tile == "auto" or (isinstance(tile, int) and not isinstance(tile, bool) and tile >= 16):
            settings.tile_size = tile
        overlap = data.get("tile_overlap")
        if isinstance(overlap, int) and not isinstance(overlap, bool) and overlap >= 0:
            settings.tile_overlap = overlap
        if isinstance(data.get("device"), str) and data["device"]:
            settings.device = data["device"]
        if data.get("precision") in PRECISIONS:
            settings.precision = data["precision"]
        if isinstance(data.get("stages"), bool):
            settings.stages = data["stages"]
        if isinstance(data.get("show_removed"), bool):
            settings.show_removed = data["show_removed"]
        strength = data.get("strength")
        if strength == "auto" or (isinstance(strength, (int, float))
                                  and not isinstance(strength, bool) and 0 <= strength <= 10):
            settings.strength = strength
        noise = data.get("noise")
        if noise == "auto" or (isinstance(noise, (int, float)) and not isinstance(noise, bool)
                               and math.isfinite(noise) and noise > 0):
            settings.noise = noise
        if data.get("output_type") in OUTPUT_TYPES:
            settings.output_type = data["output_type"]
        return settings


def load_settings(path: Path | None = None) -> RestoreSettings:
    """The saved settings, or the defaults if none are saved or the file is unreadable."""
    path = settings_path() if path is None else Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RestoreSettings()
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable napari-mprnet settings %s: %s", path, err)
        return RestoreSettings()
    return RestoreSettings.from_dict(data)


def save_settings(settings: RestoreSettings, path: Path | None = None) -> None:
    """Write ``settings`` (failures are logged, never raised: settings are a convenience)."""
    path = settings_path() if path is None else Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(settings.to_dict(), indent=1).encode("utf-8"),
                           overwrite=True)
    except OSError as err:
        log.warning("could not save napari-mprnet settings to %s: %s", path, err)

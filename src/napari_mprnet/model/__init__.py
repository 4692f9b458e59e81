"""The MPRNet network and its named configurations."""

from .arch import MPRNet, MPRNetConfig
from .presets import OFFICIAL_PRESETS, TASKS, official_config

__all__ = ["OFFICIAL_PRESETS", "TASKS", "MPRNet", "MPRNetConfig", "official_config"]

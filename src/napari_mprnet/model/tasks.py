"""The restoration tasks, without importing torch (the CLI's parser needs them)."""

from __future__ import annotations

__all__ = ["TASKS"]

#: Tasks with an official MPRNet release and a bundled default model.
TASKS: tuple[str, ...] = ("denoise", "deblur", "derain")

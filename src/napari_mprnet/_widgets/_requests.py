"""What a restoration job is asked to do, fixed when it starts: shared by the Restore widget
and the *Layers > Filter > Restore* menu commands (no torch, no numerics here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._layers import LayerSnapshot, napari_output_dtype
from ._controls import noise_applies
from .settings import RestoreSettings, WeightsChoice
from .weights_registry import registered_weights

__all__ = ["RestoreRequest", "build_request", "resolve_weights"]


@dataclass(frozen=True)
class RestoreRequest:
    """Everything a job needs, fixed when it starts."""

    source: LayerSnapshot
    task: str
    model: Any  # None: bundled default; a file path; or an MPRNet
    model_label: str
    tile_size: int | str = "auto"
    tile_overlap: int = 32
    device: str = "auto"
    precision: str | None = None
    stages: bool = False
    strength: float | str = "auto"
    noise: float | str = "auto"
    #: the result's dtype (None: float32), from the "Output type" choice
    output_dtype: Any = None
    #: "the Restore widget" or "the menu": who started it (said when another is refused)
    origin: str = "the Restore widget"
    #: add the removed part (input - result) as a layer, with its noise check
    show_removed: bool = False


def resolve_weights(choice: WeightsChoice, task: str) -> tuple[Any, str]:
    """The ``model`` argument for :func:`iter_restore` and a label for the user.

    Raises
    ------
    ValueError
        If no file is chosen, or the registered model is not (or no longer) registered.
    """
    if choice.source == "file":
        if not choice.file:
            raise ValueError("choose a model file, or select the bundled default weights")
        path = Path(choice.file).expanduser()
        if not path.exists():  # (a file, or a bioimage.io package folder)
            raise ValueError(f"model file '{path}' does not exist")
        return str(path), path.name
    if choice.source == "registered":
        models = registered_weights()
        if choice.name not in models:
            raise ValueError(
                f"the fine-tuned model {choice.name!r} is no longer available (its file was "
                "removed); choose other weights in the Restore widget"
            )
        return models[choice.name], f"fine-tuned: {choice.name}"
    return None, f"bundled {task} model"


def build_request(
    source: LayerSnapshot, settings: RestoreSettings, task: str | None = None,
    strength: float | str = "auto", noise: float | str = "auto",
    origin: str = "the Restore widget", show_removed: bool = False,
) -> RestoreRequest:
    """A request from saved/selected settings (``task`` overrides the settings' task;
    ``strength`` and ``noise`` are the widget's, "auto" for menu commands; ``noise`` is
    dropped, as its control is disabled, where it is not used: another task or a fixed
    strength)."""
    task = settings.task if task is None else task
    model, label = resolve_weights(settings.weights_for(task), task)
    return RestoreRequest(
        source=source,
        task=task,
        model=model,
        model_label=label,
        tile_size=settings.tile_size,
        tile_overlap=settings.tile_overlap,
        device=settings.device,
        precision=None if settings.precision == "auto" else settings.precision,
        stages=settings.stages,
        strength=strength,
        noise=noise if noise_applies(task, strength) else "auto",
        output_dtype=napari_output_dtype(settings.output_type, source.data.dtype),
        origin=origin,
        show_removed=show_removed,
    )

"""napari layers in and out of :func:`napari_mprnet.restore` (napari imported lazily)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LayerSnapshot", "is_napari_layer", "output_name", "restore_layer", "snapshot"]

_STAGE_LABELS = (None, "stage 2", "stage 1")


def is_napari_layer(obj: Any) -> bool:
    """Whether ``obj`` is a napari layer (without importing napari)."""
    return any(cls.__module__.startswith("napari.layers") for cls in type(obj).__mro__)


@dataclass(frozen=True)
class LayerSnapshot:
    """What an output layer needs from its input, captured when a job starts."""

    name: str
    data: Any
    rgb: bool
    scale: tuple
    translate: tuple
    metadata: dict = field(default_factory=dict)
    #: display settings copied to the results (same intensity scale as the input)
    display: dict = field(default_factory=dict)


def snapshot(layer: Any) -> LayerSnapshot:
    """Capture an Image layer's data and placement.

    Raises
    ------
    TypeError
        If ``layer`` is not a napari Image layer.
    """
    from napari.layers import Image

    if not isinstance(layer, Image):
        raise TypeError(
            f"restoration needs an Image layer, got the {type(layer).__name__} layer "
            f"'{getattr(layer, 'name', '?')}'"
        )
    data = layer.data[0] if layer.multiscale else layer.data
    display = {"contrast_limits": list(layer.contrast_limits), "gamma": float(layer.gamma)}
    if not layer.rgb:
        display["colormap"] = layer.colormap
    return LayerSnapshot(
        name=layer.name,
        data=data,
        rgb=bool(layer.rgb),
        scale=tuple(layer.scale),
        translate=tuple(layer.translate),
        display=display,
    )


def output_name(name: str, task: str, stage: str | None = None) -> str:
    """E.g. ``"cells (denoised)"`` or ``"cells (denoised, stage 1)"``."""
    from .engine.pipeline import TASK_SUFFIX

    label = TASK_SUFFIX.get(task, task)
    return f"{name} ({label}, {stage})" if stage else f"{name} ({label})"


def make_layers(source: LayerSnapshot, results: list[Any], task: str,
                record: dict | None = None) -> list[Any]:
    """Image layers for ``results`` (``[final]`` or ``[final, stage2, stage1]``), placed and
    displayed like the input (results are on the input's intensity scale, so its contrast
    limits, colormap and gamma make a fair side-by-side comparison). ``record`` joins their
    ``metadata["napari_mprnet"]`` (e.g. the noise level used, see
    :func:`~.engine.noise_level.noise_record`)."""
    from napari.layers import Image

    layers = []
    for data, stage in zip(results, _STAGE_LABELS):
        layers.append(
            Image(
                data,
                name=output_name(source.name, task, stage),
                rgb=source.rgb,
                scale=source.scale,
                translate=source.translate,
                **source.display,
                metadata={"napari_mprnet": {"task": task, "source": source.name,
                                            "stage": stage or "final", **(record or {})}},
            )
        )
    return layers


def restore_layer(layer: Any, *, axes=None, progress=None, stages: bool = False,
                  task: str | None = None, model: Any = None, **options: Any) -> Any:
    """Restore a napari Image layer; return a new layer (or ``[final, stage2, stage1]``)."""
    from .engine.models import resolve_task
    from .engine.noise_level import noise_record
    from .engine.pipeline import Restorer, check_progress
    from .scale import lazy

    check_progress(progress)
    task = resolve_task(task, model)
    source = snapshot(layer)
    if lazy.is_dask_array(source.data):
        results = lazy.restore_dask(source.data, axes=axes, rgb=source.rgb, stages=stages,
                               task=task, model=model, **options)
        results = results if stages else [results]
    else:
        restorer = Restorer(model, task, stages=stages, **options)
        results = restorer.run(source.data, axes, source.rgb, progress)
    record = noise_record(options.get("noise"), options.get("strength", "auto"), task)
    layers = make_layers(source, results, task, record)
    return layers if stages else layers[0]

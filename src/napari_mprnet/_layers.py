"""napari layers in and out of :func:`napari_mprnet.restore` (napari imported lazily)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["OUTPUT_TYPES", "LayerSnapshot", "is_napari_layer", "layer_key", "layer_type_name",
           "make_layers", "napari_output_dtype", "notify_removed", "output_name",
           "restore_layer", "snapshot"]

_STAGE_LABELS = (None, "stage 2", "stage 1")
#: Output type choices of the napari front ends (see :func:`napari_output_dtype`).
OUTPUT_TYPES = ("auto", "same as input", "float32")


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
    #: which layer this is (napari's ``unique_id``): one job per layer at a time
    key: str = ""


def layer_key(layer: Any) -> str:
    """What identifies a layer while it exists (napari's ``unique_id``)."""
    return str(getattr(layer, "unique_id", id(layer)))


def layer_type_name(layer: Any) -> str:
    """"Labels", "Shapes", "Image"...: the layer's class as a user knows it (napari hands
    plugins its layers behind a proxy, whose own type name means nothing to a user)."""
    return layer.__class__.__name__


def napari_output_dtype(choice: str, input_dtype: Any) -> Any:
    """The ``output_dtype`` of a napari run for an "Output type" choice
    (:data:`OUTPUT_TYPES`): "auto" keeps 8-bit images (grey or RGB) 8-bit, as napari shows
    and saves them (a float RGB layer looks washed out and cannot be saved as PNG), and gives
    float32 for 16-bit and float images (keeping sub-count precision); "same as input" keeps
    every integer dtype; "float32" always gives float32 (None: the engine's default).

    Raises
    ------
    ValueError
        If ``choice`` is not one of :data:`OUTPUT_TYPES`.
    """
    import numpy as np

    if choice not in OUTPUT_TYPES:
        raise ValueError(f"output type must be one of {', '.join(OUTPUT_TYPES)}, got {choice!r}")
    dtype = np.dtype(input_dtype)
    if choice == "float32" or not np.issubdtype(dtype, np.integer):
        return None
    if choice == "same as input" or dtype.itemsize == 1:
        return dtype
    return None


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
            f"restoration needs an Image layer, got the {layer_type_name(layer)} layer "
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
        key=layer_key(layer),
    )


def output_name(name: str, task: str, stage: str | None = None) -> str:
    """E.g. ``"cells (denoised)"`` or ``"cells (denoised, stage 1)"``."""
    from .engine.pipeline import TASK_SUFFIX

    label = TASK_SUFFIX.get(task, task)
    return f"{name} ({label}, {stage})" if stage else f"{name} ({label})"


def make_layers(source: LayerSnapshot, results: list[Any], task: str,
                record: dict | None = None, removed: Any = None) -> list[Any]:
    """Image layers for ``results`` (``[final]`` or ``[final, stage2, stage1]``), placed and
    displayed like the input (results are on the input's intensity scale, so its contrast
    limits, colormap and gamma make a fair side-by-side comparison). ``record`` joins their
    ``metadata["napari_mprnet"]`` (how they were made: weights, strength, noise, version;
    see :func:`~.provenance.run_record`). ``removed`` (a
    :class:`~.engine.removed.RemovedPart`) adds a last layer "<name> (removed)" and its check
    to every layer's metadata."""
    from napari.layers import Image

    if removed is not None:
        record = {**(record or {}), "removed_check": removed.record()}
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
                metadata={"napari_mprnet": {**(record or {}), "task": task,
                                            "source": source.name, "stage": stage or "final"}},
            )
        )
    if removed is not None:
        layers.append(_removed_layer(source, removed, task, record))
    return layers


def _removed_layer(source: LayerSnapshot, removed: Any, task: str, record: dict) -> Any:
    """The removed part as a grey layer, contrast symmetric about 0 (white: removed
    brightness, black: added)."""
    import numpy as np
    from napari.layers import Image

    data = removed.data
    finite = np.abs(data[np.isfinite(data)])
    limit = float(np.percentile(finite, 99.5)) if finite.size else 0.0
    return Image(data, name=f"{source.name} (removed)", rgb=source.rgb, scale=source.scale,
                 translate=source.translate, colormap="gray",
                 contrast_limits=[-limit, limit] if limit > 0 else [-1.0, 1.0],
                 metadata={"napari_mprnet": {**record, "task": task, "source": source.name,
                                             "stage": "removed"}})


def notify_removed(removed: Any, source_name: str) -> None:
    """A napari warning when the denoiser removed structure (see
    :meth:`~.engine.removed.RemovedPart.message`)."""
    message = removed.message() if removed is not None else None
    if message:
        from napari.utils import notifications

        notifications.show_warning(f"'{source_name}': {message}")


def _as_rgb(source: LayerSnapshot, rgb: bool) -> LayerSnapshot:
    """``source`` read with the other ``rgb`` flag: its last axis becomes (or stops being)
    colour samples, so the spatial placement loses (or gains) that axis."""
    display = {k: v for k, v in source.display.items() if k != "colormap"}
    if rgb:
        scale, translate = source.scale[:-1], source.translate[:-1]
    else:
        scale, translate = (*source.scale, 1.0), (*source.translate, 0.0)
    return replace(source, rgb=rgb, scale=scale, translate=translate, display=display)


def restore_layer(layer: Any, *, axes=None, rgb: bool | None = None, progress=None,
                  stages: bool = False, task: str | None = None, model: Any = None,
                  return_removed: bool = False, **options: Any) -> Any:
    """Restore a napari Image layer; return a new layer (or ``[final, stage2, stage1]``;
    ``return_removed``: the list of them and the removed layer).

    ``rgb`` (True/False) overrides the layer's own ``rgb`` flag; the results carry the one
    used."""
    from .engine.models import resolve_task
    from .engine.pipeline import Restorer, check_progress, check_rgb
    from .engine.removed import check_return_removed, refuse_lazy_removed, removed_part
    from .provenance import run_record
    from .scale import lazy

    check_progress(progress)
    return_removed = check_return_removed(return_removed)
    rgb = check_rgb(rgb)
    task = resolve_task(task, model)
    source = snapshot(layer)
    if rgb is not None and rgb != source.rgb:
        source = _as_rgb(source, rgb)
    if lazy.is_dask_array(source.data):
        refuse_lazy_removed(return_removed)
        results = lazy.restore_dask(source.data, axes=axes, rgb=source.rgb, stages=stages,
                               task=task, model=model, **options)
        results = results if stages else [results]
    else:
        restorer = Restorer(model, task, stages=stages, **options)
        results = restorer.run(source.data, axes, source.rgb, progress)
    record = run_record(model, task, options.get("strength", "auto"), options.get("noise"))
    removed = None
    if return_removed:
        removed = removed_part(source.data, results[0], task=task, axes=axes, rgb=source.rgb)
        notify_removed(removed, source.name)
    layers = make_layers(source, results, task, record, removed)
    return layers if stages or return_removed else layers[0]

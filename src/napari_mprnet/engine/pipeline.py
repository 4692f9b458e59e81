"""The restoration pipeline: one image array in, restored arrays out.

:class:`Restorer` holds a network and the run settings (all validated when it is made) and
takes an image through every step: validation, axes, planes, intensity normalisation, the
tiled run, the check of the network's output, the inverse map, back to the input's axes and
the final cast. :func:`napari_mprnet.restore` and the adapters (napari layers, dask) use it;
the dask adapter calls the step methods (:meth:`Restorer.planes_in`,
:meth:`Restorer.planes_out`) block by block.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from ..model.arch import MPRNet
from .axes import PlaneLayout, from_planes, infer_axes, parse_axes, to_planes
from .casting import cast_output, check_output_dtype, output_limits
from .devices import resolve_device
from .impulses import replace_impulses
from .inputs import as_image_array, check_image_type, refuse_masked, refuse_non_finite
from .models import prepare_model, resolve_task
from .noise_level import NoiseLevel, check_noise, check_noise_use, network_noise
from .normalize import DEFAULT_PERCENTILES, Normalization, check_percentiles, choose_normalization
from .progress import FollowingWork
from .runner import Progress, TiledRunner, drive
from .strength import (
    blend,
    check_strength,
    fixed_weight,
    iter_probe_weights,
    probe_pixels,
    probe_window,
)

__all__ = [
    "TASK_SUFFIX",
    "Restorer",
    "as_image_array",
    "cast_output",
    "check_image_type",
    "check_progress",
    "check_rgb",
    "normalization_for",
    "output_limits",
    "refuse_masked",
    "refuse_non_finite",
    "resolve_axes",
]

#: How each task is named in output layer and file names.
TASK_SUFFIX = {"denoise": "denoised", "deblur": "deblurred", "derain": "derained"}
ProgressCallback = Callable[[int, int], Any]


def check_progress(progress: Any) -> None:
    """Refuse a ``progress`` that is neither None nor callable."""
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a function called as progress(done, total), or "
                        f"None; got {progress!r}")


def check_rgb(rgb: Any) -> bool | None:
    """``rgb`` as True, False or None; anything else (``"yes"``, 1) is a ``TypeError``."""
    if rgb is not None and not isinstance(rgb, (bool, np.bool_)):
        raise TypeError(f"rgb must be True, False or None, got {rgb!r}")
    return None if rgb is None else bool(rgb)


def resolve_axes(shape: tuple[int, ...], axes: str | None, rgb: bool | None) -> str:
    """The axes of data with ``shape``: ``axes`` validated, or guessed (napari's RGB rule).

    Raises
    ------
    ValueError
        If ``axes`` and ``rgb`` disagree (an S axis with ``rgb=False`` or none with True).
    """
    rgb = check_rgb(rgb)
    if axes is None:
        return infer_axes(shape, rgb=rgb)
    parsed = parse_axes(axes, shape)
    if rgb is not None and ("S" in parsed) != rgb:
        raise ValueError(f"axes={axes!r} and rgb={rgb} disagree: an RGB image has an S axis "
                         "(e.g. 'YXS'); give one of the two")
    return parsed


def _stored_percentiles(model: MPRNet) -> tuple[float, float] | None:
    """The percentiles a model was trained with (from its metadata), validated."""
    stored = (getattr(model, "metadata", None) or {}).get("normalization") or {}
    if not isinstance(stored, dict) or stored.get("mode") != "percentile":
        return None
    where = f"model '{getattr(model, 'source', None) or 'in memory'}'"
    try:
        return check_percentiles(stored.get("percentiles") or DEFAULT_PERCENTILES)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} stores unusable normalisation percentiles: {err}") from None


def normalization_for(
    data: np.ndarray, normalize: Any, percentiles: tuple[float, float], model: MPRNet
) -> Normalization:
    """The intensity map for ``data``: as ``normalize`` says, except that "auto" follows the
    percentile normalisation a model was trained with (stored in its metadata)."""
    stored = _stored_percentiles(model)
    if normalize == "auto" and stored is not None:
        return choose_normalization(data, "percentile", stored)
    return choose_normalization(data, normalize, percentiles)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class Restorer:
    """A network with its run settings; :meth:`run` restores arrays.

    Takes the arguments of :func:`napari_mprnet.restore` other than the image, its axes and
    the progress callback (see there); every setting is checked here, before any work.
    """

    def __init__(
        self,
        model: str | os.PathLike | MPRNet | None = None,
        task: str | None = None,
        *,
        tile_size: int | str = "auto",
        tile_overlap: int = 32,
        batch_size: int | None = None,
        device: str | torch.device = "auto",
        precision: str | None = None,
        stages: bool = False,
        normalize: str | Normalization = "auto",
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        output_dtype: Any = None,
        clip: bool = True,
        backend: str | None = None,
        backend_options: dict | None = None,
        strength: float | str = "auto",
        split_patches: bool = False,
        noise: Any = None,
    ) -> None:
        self.strength = check_strength(strength)
        self.noise: NoiseLevel | None = check_noise(noise)
        self.task = resolve_task(task, model)  # None: the model's own task
        check_noise_use(self.noise, self.strength, self.task)
        self.stages = _check_bool("stages", stages)
        self.split_patches = _check_bool("split_patches", split_patches)
        self.clip = _check_bool("clip", clip)
        self.percentiles = check_percentiles(percentiles)
        choose_normalization(np.zeros(1, np.float32), normalize, self.percentiles)  # validate
        self.normalize = normalize
        self.output_dtype = check_output_dtype(output_dtype)
        # a model file or name is loaded (and cached) for the run's device: the shared cached
        # network is then never moved between devices by runs in other threads
        self.model = prepare_model(model, self.task, resolve_device(device))
        _stored_percentiles(self.model)  # a model with unusable metadata fails here
        self.runner = TiledRunner(self.model, device=device, precision=precision,
                                  tile_size=tile_size, tile_overlap=tile_overlap,
                                  batch_size=batch_size, backend=backend,
                                  backend_options=backend_options,
                                  split_patches=self.split_patches)
        if self.runner.device.type == "cpu" and isinstance(backend, str) \
                and backend.lower() == "compile":
            warnings.warn("backend='compile' on the CPU: the first call compiles the network "
                          "for minutes, worth it only for long runs of one tile shape; "
                          "backend='eager' starts at once", UserWarning, stacklevel=2)

    # ----------------------------------------------------------------- the steps

    def layout(self, shape: tuple[int, ...], axes: str | None = None,
               rgb: bool | None = None) -> PlaneLayout:
        """The plane layout of data with ``shape``, checked against the network's channels."""
        layout = PlaneLayout.from_axes(resolve_axes(tuple(shape), axes, rgb), tuple(shape))
        net_channels = self.model.config.in_c
        if not self._splits_rgb(layout) and (
            layout.channels not in (net_channels, 1) or net_channels not in (1, 3)
        ):
            raise ValueError(
                f"this model has {net_channels} input channels and cannot restore "
                f"{layout.channels}-channel planes"
            )
        return layout

    def _splits_rgb(self, layout: PlaneLayout) -> bool:
        """RGB through a one-channel network: each colour channel as its own plane."""
        return layout.channels == 3 and self.model.config.in_c == 1

    def normalization(self, sample: np.ndarray) -> Normalization:
        """The intensity map for an image of which ``sample`` is (a representative part)."""
        return normalization_for(sample, self.normalize, self.percentiles, self.model)

    def planes_in(self, data: np.ndarray, layout: PlaneLayout,
                  norm: Normalization) -> np.ndarray:
        """``data`` as normalised network planes ``(P, H, W, c)`` (float32)."""
        planes, _ = to_planes(data, layout.axes)
        if self._splits_rgb(layout):
            planes = np.moveaxis(planes, -1, 1).reshape(-1, layout.height, layout.width, 1)
        return norm.apply(planes)

    def check_network_output(self, outputs: list[np.ndarray]) -> None:
        """Raise ``ValueError`` if the network turned finite input into NaN or infinity."""
        for out in outputs:
            if not np.isfinite(out).all():
                source = getattr(self.model, "source", None) or "given in memory"
                precision = self.runner.precision
                hint = ("its weights may be damaged" if precision == "fp32" else
                        f"{precision} may have overflowed: try precision='fp32'")
                raise ValueError(f"the model ({source}) produced NaN or infinite values from "
                                 f"a finite image; {hint}")

    def planes_out(self, outputs: list[np.ndarray], layout: PlaneLayout, norm: Normalization,
                   source: np.ndarray) -> list[np.ndarray]:
        """Network outputs back to ``source``'s axes, intensity scale and the output dtype."""
        self.check_network_output(outputs)
        limits = output_limits(source.dtype, self.clip)
        results = []
        for out in outputs:
            if self._splits_rgb(layout):
                out = np.moveaxis(out.reshape(-1, 3, layout.height, layout.width), 1, -1)
            restored = from_planes(norm.invert(out, source.dtype), layout, alpha_source=source)
            results.append(np.ascontiguousarray(cast_output(restored, self.output_dtype,
                                                            limits)))
        return results

    def needs_probe(self) -> bool:
        """Whether the strength is measured per plane (``strength="auto"``, denoising)."""
        return fixed_weight(self.strength, self.task) is None

    def network_noise(self, norm: Normalization | None) -> tuple[float, float] | None:
        """The given noise as ``(a_n, b_n)`` in the network's domain under ``norm`` (None:
        estimated); raises ``ValueError`` if its variance is not positive there."""
        if self.noise is None:
            return None
        if norm is None:
            raise ValueError("a given noise level needs the run's normalisation")
        return network_noise(self.noise, norm)

    def plane_weights(self, crops: np.ndarray, layout: PlaneLayout,
                      norm: Normalization | None = None) -> np.ndarray:
        """The band weights ``(N, 2)`` (``w_hi, w_lo``) of every data plane from its normalised
        probe window ``(P, h, w, c)`` (network planes: the colour planes of a split RGB image
        share them); ``norm``, the map that normalised them, converts a given noise level."""
        return drive(self.iter_plane_weights(crops, layout, norm, FollowingWork(0, 0)))

    def iter_plane_weights(self, crops: np.ndarray, layout: PlaneLayout,
                           norm: Normalization | None, work: FollowingWork
                           ) -> Generator[Progress, None, np.ndarray]:
        """:meth:`plane_weights` step by step: a :class:`Progress` from ``work`` after every
        data plane measured."""
        group = 3 if self._splits_rgb(layout) else 1
        noise = self.network_noise(norm)
        forward = self.runner.forward_window
        steps = iter_probe_weights(forward, crops, group, noise=noise, with_impulses=True)
        while True:
            try:
                pixels = next(steps)
            except StopIteration as stop:
                return stop.value
            yield work.advance(pixels)

    def probe_work(self, layout: PlaneLayout) -> FollowingWork:
        """The work of measuring the strength of ``layout``'s planes (none unless "auto")."""
        if not self.needs_probe():
            return FollowingWork(0, 0)
        ys, xs = probe_window(layout.height, layout.width)
        group = 3 if self._splits_rgb(layout) else 1
        planes = layout.n_planes * group
        window = (planes, ys.stop - ys.start, xs.stop - xs.start)
        return FollowingWork(planes // group, probe_pixels(window))

    def network_weights(self, weights: np.ndarray, layout: PlaneLayout) -> np.ndarray:
        """Per-data-plane ``weights`` repeated for the network planes they cover."""
        weights = np.asarray(weights)
        return np.repeat(weights, 3, axis=0) if self._splits_rgb(layout) else weights

    def apply_strength(self, normalised: np.ndarray, outputs: list[np.ndarray],
                       layout: PlaneLayout, weights: np.ndarray | None = None,
                       norm: Normalization | None = None,
                       neighbours: np.ndarray | None = None) -> list[np.ndarray]:
        """The runner's ``outputs`` (run with ``low_band=self.needs_probe()``) with the final
        planes moved towards the input by the strength: fixed, the given per-data-plane band
        ``weights`` or those measured on ``normalised``'s probe windows (normalised by
        ``norm``); the low band the runner appended is dropped. With "auto", impulses take
        the network output (:func:`~.impulses.replace_impulses`; ``neighbours``: their
        neighbour medians where ``normalised`` is the inside of a chunk with a halo)."""
        fixed = fixed_weight(self.strength, self.task)
        if fixed == 1.0:
            return list(outputs)
        if fixed is not None:
            return [blend(normalised, outputs[0], np.full(len(normalised), fixed)),
                    *outputs[1:]]
        *outputs, low = outputs
        if weights is None:
            ys, xs = probe_window(layout.height, layout.width)
            weights = self.plane_weights(normalised[:, ys, xs], layout, norm)
        weights = self.network_weights(weights, layout)
        final = blend(normalised, outputs[0], weights, low)
        if weights.ndim == 2 and weights.shape[1] > 2:
            final = replace_impulses(normalised, final, outputs[0], weights[:, 2:], neighbours)
        return [final, *outputs[1:]]

    # ----------------------------------------------------------------- whole images

    def iter_run(self, image: Any, axes: str | None = None, rgb: bool | None = None
                 ) -> Generator[Progress, None, list[np.ndarray]]:
        """Restore an array step by step: a generator of :class:`Progress` after every tile
        batch, returning ``[final]`` or ``[final, stage2, stage1]``. Closing it early cancels
        the run; the input is never modified."""
        data = as_image_array(image)
        layout = self.layout(data.shape, axes, rgb)
        norm = self.normalization(data)
        self.network_noise(norm)  # a given noise level that fails here fails before any run
        normalised = self.planes_in(data, layout, norm)
        work = self.probe_work(layout)
        outputs = yield from work.around(self.runner.iter_run(
            normalised, stages=self.stages, low_band=self.needs_probe()))
        weights = None
        if work.units:  # the strength's probe passes, counted in the same progress
            ys, xs = probe_window(layout.height, layout.width)
            weights = yield from self.iter_plane_weights(normalised[:, ys, xs], layout, norm,
                                                         work)
        outputs = self.apply_strength(normalised, outputs, layout, weights, norm)
        del normalised
        return self.planes_out(outputs, layout, norm, data)

    def run(self, image: Any, axes: str | None = None, rgb: bool | None = None,
            progress: ProgressCallback | None = None) -> list[np.ndarray]:
        """Restore an array; ``progress(done, total)`` is called after every tile batch."""
        check_progress(progress)
        return drive(self.iter_run(image, axes, rgb), progress)

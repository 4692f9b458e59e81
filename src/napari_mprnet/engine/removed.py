"""What a restoration removed: ``input - result``, and a per-plane check that it is noise.

Camera noise is white: neighbouring pixels' noise is independent, whatever its level, so the
noise a good denoiser removes is white too (or a little high-pass: the denoiser keeps some of
the coarsest noise). Structure that a denoiser removes (texture it smoothed, edges it
softened, peaks it lowered) is spread over the optics' blur and several pixels, so it carries
energy at low spatial frequencies. The check compares the removed part's energy after a
Gaussian smoothing of 1 px with what white noise keeps after it (``1 / (4 pi)`` of its
energy): the excess, scaled to a fraction of the removed energy, estimates how much of what
was removed is structure rather than noise,

    structure = (smoothed energy / (white share * energy) - 1) / (1 / white share - 1)

(0 for white noise, below 0 for high-passed noise, 1 when everything removed is smooth).
A plane is flagged when that fraction exceeds :data:`STRUCTURE_THRESHOLD`, calibrated on
generated microscopy (``benchmarks/calibrate_removed_check.py``, docs/removed.md). The
check applies to denoising only: a deblurred or derained image is meant to lose structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .axes import PlaneLayout, infer_axes, parse_axes, to_planes

__all__ = ["STRUCTURE_THRESHOLD", "PlaneCheck", "RemovedPart", "check_return_removed",
           "refuse_lazy_removed", "removed_part", "structure_fraction"]

#: Flag a plane when more than this fraction of what was removed looks like structure.
STRUCTURE_THRESHOLD = 0.10
_SMOOTHING_PX = 1.0
#: Share of white noise's energy a Gaussian smoothing of sd s keeps: 1 / (4 pi s^2).
_WHITE_SHARE = 1.0 / (4.0 * np.pi * _SMOOTHING_PX**2)
#: Planes whose removed part is below this fraction of the image's range (rms) are not
#: judged: nothing worth a warning was removed.
_NEGLIGIBLE = 1e-4


def check_return_removed(value: Any) -> bool:
    """``return_removed`` as a bool; TypeError for anything else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"return_removed must be True or False, got {value!r}")
    return bool(value)


def refuse_lazy_removed(return_removed: bool) -> None:
    """The removed part of a dask array is not made lazily: say what to do instead."""
    if return_removed:
        raise ValueError("return_removed=True needs an in-memory image: compute the dask "
                         "array first (or call removed_part(block, restored_block) per block)")


def structure_fraction(removed: np.ndarray) -> float:
    """The share of a 2-D removed part's energy that is not white, in [-0.09, 1]."""
    plane = np.asarray(removed, np.float64)
    energy = float(np.mean(plane * plane))
    if energy <= 0:
        return 0.0
    smooth = ndimage.gaussian_filter(plane, _SMOOTHING_PX, mode="reflect")
    ratio = float(np.mean(smooth * smooth)) / (_WHITE_SHARE * energy)
    return (ratio - 1.0) / (1.0 / _WHITE_SHARE - 1.0)


@dataclass(frozen=True)
class PlaneCheck:
    """The check of one plane: ``position`` along the non-image axes (e.g. ``{"Z": 3}``)."""

    plane: int
    position: dict
    structure: float
    flagged: bool

    def label(self) -> str:
        return ", ".join(f"{axis} {index}" for axis, index in self.position.items())


@dataclass(frozen=True)
class RemovedPart:
    """``data``: input - result (float32, the input's shape and units); ``planes``: the
    per-plane checks (empty unless the task is denoising)."""

    data: np.ndarray
    planes: tuple[PlaneCheck, ...]
    task: str

    @property
    def flagged(self) -> list[PlaneCheck]:
        """The planes where the removed part looks like structure."""
        return [p for p in self.planes if p.flagged]

    def message(self) -> str | None:
        """A one-line warning naming the flagged planes, or None."""
        flagged = self.flagged
        if not flagged:
            return None
        where = ""
        if any(p.position for p in flagged):
            names = [p.label() for p in flagged[:5]] + (["..."] if len(flagged) > 5 else [])
            where = f" on plane{'s' if len(flagged) > 1 else ''} {'; '.join(names)}"
        return (f"the denoiser removed structure{where}: compare with strength 0.5 "
                "(the removed part is not only noise)")

    def record(self) -> dict[str, Any]:
        """The check as plain data, for a result's metadata."""
        if self.task != "denoise":
            return {"checked": False, "reason": f"{self.task} removes structure by design"}
        return {
            "checked": True, "threshold": STRUCTURE_THRESHOLD,
            "flagged_planes": [p.plane for p in self.flagged],
            "planes": [{"plane": p.plane, **({"position": p.position} if p.position else {}),
                        "structure": round(p.structure, 4), "flagged": p.flagged}
                       for p in self.planes],
        }


def _plane_positions(layout: PlaneLayout) -> list[dict]:
    """Each plane's index along the leading axes, e.g. ``{"T": 0, "Z": 3}`` (2-D: ``{}``)."""
    lead = [a for a in layout.axes if a not in "YXS"]
    return [dict(zip(lead, (int(i) for i in np.unravel_index(k, layout.lead_shape))))
            for k in range(layout.n_planes)]


def removed_part(image: Any, result: Any, *, task: str = "denoise", axes: str | None = None,
                 rgb: bool | None = None) -> RemovedPart:
    """What a restoration removed from ``image``, with the per-plane noise check.

    Parameters
    ----------
    image, result : array-like
        The input and the restored image, same shape (the result in the input's units, as
        :func:`napari_mprnet.restore` returns it).
    task : str
        The check runs for "denoise" only.
    axes, rgb
        As for :func:`napari_mprnet.restore` (planes are checked one by one; RGB samples
        together).

    Returns
    -------
    RemovedPart
    """
    data = np.asarray(image)
    restored = np.asarray(result)
    if data.shape != restored.shape:
        raise ValueError(f"the result's shape {restored.shape} is not the input's {data.shape}")
    removed = data.astype(np.float32) - restored.astype(np.float32)
    if task != "denoise":
        return RemovedPart(removed, (), task)
    axes = infer_axes(data.shape, rgb=rgb) if axes is None else parse_axes(axes, data.shape)
    planes, layout = to_planes(removed, axes)
    reference, _ = to_planes(restored.astype(np.float32), axes)
    checks = []
    for k, position in enumerate(_plane_positions(layout)):
        plane = planes[k].mean(axis=-1)
        span = float(np.ptp(reference[k])) or 1.0
        structure = structure_fraction(plane)
        judged = np.sqrt(np.mean(plane.astype(np.float64) ** 2)) > _NEGLIGIBLE * span
        checks.append(PlaneCheck(k, position, structure,
                                 bool(judged and structure > STRUCTURE_THRESHOLD)))
    return RemovedPart(removed, tuple(checks), task)

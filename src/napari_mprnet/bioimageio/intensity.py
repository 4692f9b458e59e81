"""How a bioimage.io package maps intensities as restore() does.

``restore()`` maps an input to the network's 0..1 range and maps the result back with the
inverse (see :mod:`napari_mprnet.engine.normalize`). For uint8 images and for models trained
with a fixed range that map is fixed: the package declares it (``scale_linear`` in, its exact
inverse out, then the clip restore() applies to integer inputs). For other images it is the
image's own percentiles, and bioimage.io 0.5 has no processing step that inverts a per-image
``scale_range`` (its ``scale_mean_variance`` matches the output's mean and spread to the
input's, which brightens a denoised image by the noise it removed). So the packaged network
(``MPRNetFinal`` with ``percentiles``) normalises each input itself and inverts exactly: the
package declares only the cast to float32 and the clip. Whole-image prediction then gives
restore()'s result for any intensity range; in blockwise prediction each block is mapped by
its own percentiles (measured in ``benchmarks/bench_bioimageio_blocks.py``). A fixed range
can still be asked for (``input_range``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.normalize import DEFAULT_PERCENTILES, choose_normalization

__all__ = ["IntensityMapping", "choose_mapping"]

#: Data types a package input may declare (the rest are read as float32).
_INPUT_DTYPES = ("uint8", "uint16", "float32")


@dataclass(frozen=True)
class IntensityMapping:
    """Input intensities ``low``..``high`` -> 0..1 before the network, the inverse after.

    Parameters
    ----------
    low, high : float
        Input intensities mapped to 0 and 1 (``None``: no fixed map).
    dtype : str
        The input data type the package declares ("uint8", "uint16" or "float32").
    clip : (float, float) or None
        Output range (an integer input dtype's range, as restore() clips), or None.
    note : str
        One paragraph for the README.
    percentiles : (float, float) or None
        Each image's (low, high) percentiles mapped to 0 and 1 inside the packaged network
        (with no fixed map), or None.
    """

    low: float | None
    high: float | None
    dtype: str = "float32"
    clip: tuple[float, float] | None = None
    note: str = ""
    percentiles: tuple[float, float] | None = None

    @property
    def is_identity(self) -> bool:
        """No fixed map (the data goes in as given, or the network normalises it itself)."""
        return self.low is None

    @property
    def network_kwargs(self) -> dict:
        """Keyword arguments of the packaged ``MPRNetFinal`` for this mapping."""
        return {"percentiles": None if self.percentiles is None else list(self.percentiles)}

    def preprocessing(self) -> list[dict]:
        """bioimage.io steps for the input (ending in float32: bioimage.io otherwise casts the
        result back to the declared input type)."""
        steps = []
        if not self.is_identity:
            span = self.high - self.low
            steps.append({"id": "scale_linear",
                          "kwargs": {"gain": 1.0 / span, "offset": -self.low / span}})
        if self.dtype != "float32":
            steps.append({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}})
        return steps

    def postprocessing(self) -> list[dict]:
        """bioimage.io steps for the output: the inverse map, then the clip."""
        steps = []
        if not self.is_identity:
            steps.append({"id": "scale_linear",
                          "kwargs": {"gain": self.high - self.low, "offset": self.low}})
        if self.clip is not None:
            steps.append({"id": "clip", "kwargs": {"min": self.clip[0], "max": self.clip[1]}})
        return steps

    def apply_pre(self, x: np.ndarray) -> np.ndarray:
        """The preprocessing in numpy (float32; a per-image map is the network's own)."""
        x = np.asarray(x, dtype=np.float32)
        for step in self.preprocessing():
            if step["id"] == "scale_linear":
                x = x * np.float32(step["kwargs"]["gain"]) + np.float32(step["kwargs"]["offset"])
        return x.astype(np.float32)

    def apply_post(self, y: np.ndarray) -> np.ndarray:
        """The postprocessing in numpy (float32)."""
        y = np.asarray(y, dtype=np.float32)
        for step in self.postprocessing():
            kwargs = step["kwargs"]
            if step["id"] == "clip":
                y = np.clip(y, kwargs["min"], kwargs["max"])
            else:
                y = y * np.float32(kwargs["gain"]) + np.float32(kwargs["offset"])
        return y.astype(np.float32)


def _declared_dtype(dtype: np.dtype) -> str:
    name = np.dtype(dtype).name
    return name if name in _INPUT_DTYPES else "float32"


def _clip_for(dtype: str) -> tuple[float, float] | None:
    if dtype in ("uint8", "uint16"):
        return 0.0, float(np.iinfo(dtype).max)
    return None


def choose_mapping(metadata: dict, reference: np.ndarray,
                   input_range: tuple[float, float] | None = None) -> IntensityMapping:
    """The mapping a package declares for images like ``reference``.

    Parameters
    ----------
    metadata : dict
        The model's metadata (its stored ``normalization``, if any).
    reference : numpy.ndarray
        An image in the intensities users will feed (its dtype is the declared input type).
    input_range : (float, float), optional
        Input intensities mapped to 0 and 1, instead of restore()'s choice for ``reference``.
    """
    dtype = _declared_dtype(reference.dtype)
    clip = _clip_for(dtype)
    stored = (metadata or {}).get("normalization") or {}
    stored = stored if isinstance(stored, dict) else {}
    if input_range is not None:
        low, high = (float(v) for v in input_range)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise ValueError(f"input_range must be two finite numbers, low < high, got "
                             f"{input_range!r}")
        how = "the range given at export"
    elif stored.get("mode") in ("uint8", "range") and float(stored.get("high", 1)) > float(
            stored.get("low", 0)):
        low, high = float(stored["low"]), float(stored["high"])
        how = "the fixed range the model was trained with"
    else:
        if stored.get("mode") == "percentile":  # what restore() does for such models
            percentiles = tuple(stored.get("percentiles") or DEFAULT_PERCENTILES)
            norm = choose_normalization(reference, "percentile", percentiles)
        else:
            norm = choose_normalization(reference, "auto")
        if norm.mode == "identity":
            return IntensityMapping(None, None, dtype, clip, note=(
                "The network works on intensities in 0..1: inputs are used as given (scale "
                "your images to 0..1 first), as napari-mprnet does for such images."))
        if norm.mode == "percentile":
            return _per_image(dtype, clip, percentiles if stored.get("mode") == "percentile"
                              else DEFAULT_PERCENTILES)
        low, high = norm.low, norm.high
        how = "uint8 intensities, as napari-mprnet maps them"
    note = (
        f"Input intensities {low:g}..{high:g} are mapped to 0..1 (`scale_linear`), from "
        f"{how}, and the output is mapped back with the exact inverse"
        + (f" and clipped to {clip[0]:g}..{clip[1]:g}" if clip else "") + ", so results are "
        "on the input's intensity scale, as napari-mprnet gives them."
    )
    return IntensityMapping(low, high, dtype, clip, note=note)


def _per_image(dtype: str, clip: tuple[float, float] | None,
               percentiles: tuple[float, float]) -> IntensityMapping:
    low_p, high_p = (float(p) for p in percentiles)
    note = (
        f"Each image is normalised as napari-mprnet does it, by its own {low_p:g} and "
        f"{high_p:g} percentiles mapped to 0..1, and the result is mapped back with the exact "
        f"inverse, so results are on the input's intensity scale whatever its range. "
        "bioimage.io 0.5 has no processing step that inverts a per-image percentile "
        f"normalisation, so the packaged network (`percentiles` in its kwargs) does both "
        "itself; the package declares only the cast to float32"
        + (f" and, after the network, the clip to {clip[0]:g}..{clip[1]:g}" if clip else "")
        + ". In blockwise (tiled) prediction each block is normalised by its own "
        "percentiles (with its halo), which is close to, but not exactly, the whole image's "
        "map; for exactly one fixed map export with `--input-range LOW HIGH`."
    )
    return IntensityMapping(None, None, dtype, clip, note=note, percentiles=(low_p, high_p))

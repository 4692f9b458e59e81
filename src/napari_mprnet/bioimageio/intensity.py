"""How a bioimage.io package maps intensities as restore() does.

``restore()`` maps an input to the network's 0..1 range and maps the result back with the
exact inverse (see :mod:`napari_mprnet.engine.normalize`): uint8 images by /255, images
already within 0..1 as they are, everything else (uint16, floats beyond 0..1) by the image's
own percentiles; integer results are clipped to their type's range.

bioimage.io 0.5 has no processing step that inverts a per-image map (``scale_range`` has no
inverse; ``scale_mean_variance`` matches the output's mean and spread to the input's, which
brightens a denoised image by the noise it removed), and it casts every input to the declared
type before the network. So by default a package declares float32 input (uint8, uint16 and
float32 images are cast to it without loss) and the packaged network (``MPRNetFinal`` with
``intensity="auto"``) maps each input itself, reading the kind of image from its values
(whole numbers within 0..255: 8-bit), and inverts exactly. Models trained with per-image
percentiles always use them (``intensity="percentile"``). A fixed map is declared
(``scale_linear`` in, its exact inverse out) only when asked for (``input_range``) or when the
model was trained on a fixed range (its stored normalisation was asked for as "range" or
given). In blockwise prediction each block is mapped on its own (measured in
``tests/test_bioimageio_dtypes.py`` and ``benchmarks/bench_bioimageio_blocks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.normalize import DEFAULT_PERCENTILES, check_percentiles

__all__ = ["IntensityMapping", "choose_mapping", "fixed_range"]

#: The type every package input declares: uint8, uint16 and float32 images cast to it exactly.
INPUT_DTYPE = "float32"

_AUTO_NOTE = (
    "**Inputs:** uint8, uint16 and float32 images of any intensity range (bioimage.io tools "
    "cast them to the declared float32 without loss). Each image is mapped to the network's "
    "0..1 range as napari-mprnet's `restore()` maps it, and the result is mapped back with the "
    "exact inverse, so results are on the input's intensity scale: 8-bit images are divided "
    "by 255; images already within 0..1 are used as they are; anything else (16-bit images, "
    "floats beyond 0..1) is mapped by its own {low:g} and {high:g} percentiles. Results of "
    "integer images are clipped to 0..255 (8-bit) or 0..65535. bioimage.io casts the image "
    "before the network sees it, so the network reads the kind of image from its values: "
    "whole numbers within 0..255 count as 8-bit (a 16-bit image whose values all stay within "
    "0..255, or a float image of such whole numbers, is mapped as 8-bit). bioimage.io 0.5 has "
    "no processing step that inverts a per-image map, so the packaged network (`intensity` in "
    "its kwargs) does both itself; the package declares no pre- or postprocessing. In "
    "blockwise (tiled) prediction each block is mapped on its own (with its halo), which is "
    "close to, but not exactly, the whole image's map; for exactly one fixed map export with "
    "`--input-range LOW HIGH`."
)

_PERCENTILE_NOTE = (
    "**Inputs:** uint8, uint16 and float32 images of any intensity range (bioimage.io tools "
    "cast them to the declared float32 without loss). The model was trained with per-image "
    "normalisation: each image is mapped as napari-mprnet does it, by its own {low:g} and "
    "{high:g} percentiles to 0..1, and the result is mapped back with the exact inverse, so "
    "results are on the input's intensity scale whatever its range; results of integer images "
    "(whole numbers, read from the values) are clipped to 0..255 or 0..65535. bioimage.io 0.5 "
    "has no processing step that inverts a per-image percentile normalisation, so the packaged "
    "network (`intensity` in its kwargs) does both itself. In blockwise (tiled) prediction "
    "each block is normalised by its own percentiles (with its halo), which is close to, but "
    "not exactly, the whole image's map; for exactly one fixed map export with "
    "`--input-range LOW HIGH`."
)


@dataclass(frozen=True)
class IntensityMapping:
    """Input intensities ``low``..``high`` -> 0..1 before the network, the inverse after, or a
    per-image map inside the packaged network.

    Parameters
    ----------
    low, high : float or None
        Input intensities mapped to 0 and 1 by the declared processing (``None``: no fixed
        map; the packaged network maps each image itself, see ``intensity``).
    dtype : str
        The input data type the package declares (float32: uint8, uint16 and float32 images
        are cast to it exactly).
    clip : (float, float) or None
        Output range after a fixed map (an integer test input's type range), or None.
    note : str
        One paragraph for the README.
    percentiles : (float, float)
        The (low, high) percentiles of the packaged network's per-image map.
    intensity : {"auto", "percentile"} or None
        The packaged network's own map (None: a fixed map is declared, or none at all).
    """

    low: float | None
    high: float | None
    dtype: str = INPUT_DTYPE
    clip: tuple[float, float] | None = None
    note: str = ""
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    intensity: str | None = None

    @property
    def is_identity(self) -> bool:
        """No fixed map (the data goes in as given, or the network maps it itself)."""
        return self.low is None

    @property
    def network_kwargs(self) -> dict:
        """Keyword arguments of the packaged ``MPRNetFinal`` for this mapping."""
        if self.intensity is None:
            return {"intensity": None}
        return {"intensity": self.intensity, "percentiles": list(self.percentiles)}

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


def _stored(metadata: dict | None) -> dict:
    stored = (metadata or {}).get("normalization") or {}
    return stored if isinstance(stored, dict) else {}


def fixed_range(metadata: dict | None) -> tuple[float, float] | None:
    """The fixed input range a model was trained on, or None: its stored normalisation was
    asked for as "range" or given as a map (a uint8 model trained with "auto" divided its
    8-bit data by 255, which the per-image map does for 8-bit images too, and maps other
    images as restore() does)."""
    stored = _stored(metadata)
    fixed = stored.get("mode") == "range" or (
        stored.get("mode") == "uint8" and stored.get("requested") in ("range", "given"))
    if not fixed:
        return None
    try:
        low, high = float(stored.get("low", 0.0)), float(stored.get("high", 1.0))
    except (TypeError, ValueError):
        return None
    return (low, high) if np.isfinite(low) and np.isfinite(high) and high > low else None


def _clip_for(dtype: np.dtype) -> tuple[float, float] | None:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def choose_mapping(metadata: dict, reference: np.ndarray | None = None,
                   input_range: tuple[float, float] | None = None) -> IntensityMapping:
    """The mapping a package declares.

    Parameters
    ----------
    metadata : dict
        The model's metadata (its stored ``normalization``, if any).
    reference : numpy.ndarray, optional
        The test input: with a fixed map, an integer type sets the clip of the results.
    input_range : (float, float), optional
        Input intensities mapped to 0 and 1 (one fixed map) instead of restore()'s per-image
        map.
    """
    stored = _stored(metadata)
    if input_range is not None:
        low, high = (float(v) for v in input_range)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise ValueError(f"input_range must be two finite numbers, low < high, got "
                             f"{input_range!r}")
        how = "the range given at export"
    elif fixed_range(metadata) is not None:
        low, high = fixed_range(metadata)
        how = "the fixed range the model was trained with"
    else:
        if stored.get("mode") == "percentile":
            percentiles = check_percentiles(stored.get("percentiles") or DEFAULT_PERCENTILES)
            return IntensityMapping(None, None, percentiles=percentiles,
                                    intensity="percentile",
                                    note=_PERCENTILE_NOTE.format(low=percentiles[0],
                                                                 high=percentiles[1]))
        low_p, high_p = DEFAULT_PERCENTILES
        return IntensityMapping(None, None, intensity="auto",
                                note=_AUTO_NOTE.format(low=low_p, high=high_p))
    clip = None if reference is None else _clip_for(np.asarray(reference).dtype)
    note = (
        f"**Inputs:** uint8, uint16 and float32 images (cast to the declared float32 without "
        f"loss). Input intensities {low:g}..{high:g} are mapped to 0..1 (`scale_linear`), from "
        f"{how}, and the output is mapped back with the exact inverse"
        + (f" and clipped to {clip[0]:g}..{clip[1]:g}" if clip else "") + ", so results are "
        "on the input's intensity scale. This one map is used for every image and every "
        "block, whatever its range: images of other intensities are not mapped as "
        "napari-mprnet's `restore()` maps them."
    )
    return IntensityMapping(low, high, clip=clip, note=note)

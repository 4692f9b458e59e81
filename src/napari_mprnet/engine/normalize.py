"""Intensity normalisation into the network's [0, 1] range and back.

``choose_normalization`` looks at the data once and returns a :class:`Normalization`, a
linear map ``(x - low) / (high - low)`` whose inverse brings results back to the input's
intensity scale. The same object is used for inference and fine-tuning and is stored in
saved models' metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["NORMALIZE_MODES", "Normalization", "choose_normalization"]

NORMALIZE_MODES = ("auto", "percentile", "range", "none")
DEFAULT_PERCENTILES = (0.5, 99.8)
#: Percentiles of very large arrays are estimated from about this many samples.
_MAX_SAMPLES = 4_000_000


@dataclass(frozen=True)
class Normalization:
    """A linear intensity map ``(x - low) / (high - low)``.

    Parameters
    ----------
    mode : str
        How it was chosen: "identity", "uint8", "range" or "percentile".
    low, high : float
        Input intensities mapped to 0 and 1.
    """

    mode: str = "identity"
    low: float = 0.0
    high: float = 1.0

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Map ``data`` to the network's range as float32 (not clipped)."""
        out = np.asarray(data, dtype=np.float32)
        if self.mode == "identity":
            return out
        return (out - np.float32(self.low)) / np.float32(self.high - self.low)

    def invert(self, data: np.ndarray) -> np.ndarray:
        """Map network outputs back to the input's intensity scale (float32)."""
        out = np.asarray(data, dtype=np.float32)
        if self.mode == "identity":
            return out
        return out * np.float32(self.high - self.low) + np.float32(self.low)

    def to_dict(self) -> dict:
        """Return a JSON-serialisable description."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Normalization:
        """Rebuild from :meth:`to_dict` output."""
        return cls(mode=str(values["mode"]), low=float(values["low"]), high=float(values["high"]))


def _sample(data: np.ndarray) -> np.ndarray:
    flat = np.asarray(data).reshape(-1)
    if flat.size > _MAX_SAMPLES:
        step = int(np.ceil(flat.size / _MAX_SAMPLES))
        flat = flat[::step]
    return flat


def _percentile_normalization(
    data: np.ndarray, percentiles: tuple[float, float]
) -> Normalization:
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(
            f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}"
        )
    # NaN pixels (e.g. masked regions) are ignored rather than poisoning the whole map.
    low, high = np.nanpercentile(_sample(data).astype(np.float64), [lo_p, hi_p])
    if not high > low:
        # Nearly constant data: fall back to the full range, then to a unit span.
        low, high = float(np.nanmin(data)), float(np.nanmax(data))
        if not np.isfinite(low):
            low = 0.0
        if not high > low:
            high = low + 1.0
    return Normalization("percentile", float(low), float(high))


def choose_normalization(
    data: np.ndarray,
    normalize: str | Normalization = "auto",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> Normalization:
    """Pick the intensity map for ``data``.

    Parameters
    ----------
    data : numpy.ndarray
        The image (any shape); only its dtype and intensity distribution are used.
    normalize : {"auto", "percentile", "range", "none"} or Normalization
        "auto": uint8 divided by 255, floats already within [0, 1] untouched, anything
        else percentile-normalised. "percentile": always percentiles. "range": divide by
        the dtype's maximum (integers) or leave floats untouched. "none": no change. A
        :class:`Normalization` is returned unchanged (e.g. one stored with a model).
    percentiles : (float, float)
        Low and high percentiles mapped to 0 and 1.

    Returns
    -------
    Normalization
    """
    if isinstance(normalize, Normalization):
        return normalize
    if normalize not in NORMALIZE_MODES:
        raise ValueError(
            f"normalize must be one of {', '.join(NORMALIZE_MODES)} or a Normalization, "
            f"got {normalize!r}"
        )
    dtype = np.dtype(data.dtype) if hasattr(data, "dtype") else np.asarray(data).dtype
    if normalize == "none":
        return Normalization()
    if normalize == "percentile":
        return _percentile_normalization(data, percentiles)
    if normalize == "range":
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return Normalization("range", float(min(info.min, 0)), float(info.max))
        return Normalization()
    # auto
    if dtype == np.uint8:
        return Normalization("uint8", 0.0, 255.0)
    if (
        np.issubdtype(dtype, np.floating)
        and float(np.nanmin(data)) >= 0.0
        and float(np.nanmax(data)) <= 1.0
    ):
        return Normalization()
    return _percentile_normalization(data, percentiles)

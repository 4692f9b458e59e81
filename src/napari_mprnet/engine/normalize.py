"""Intensity normalisation into the network's [0, 1] range and back.

``choose_normalization`` looks at the data once and returns a :class:`Normalization`, a
linear map ``(x - low) / (high - low)`` whose inverse brings results back to the input's
intensity scale. The same object is used for inference and fine-tuning and is stored in
saved models' metadata.

The map is computed in float64 where float32 would lose the image: wide input types (float64,
32/64-bit integers) and intensities beyond float32's exact range (magnitudes of 2**24 or
more, spans beyond float32); normalised values are clipped to +-1e6 (extreme outliers only),
so the network never sees values that overflow it. A constant image maps to zeros with a unit
(or, for huge values, the smallest representable) span, so it comes back as its value (at
float64's maximum it maps to ones, the span lying below it). Maps whose intensities come near
float64's limit are applied and inverted in halves, and inverted results saturate there; an
image whose percentile range itself overflows float64 is a ``ValueError``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["NORMALIZE_MODES", "Normalization", "check_percentiles", "choose_normalization"]

NORMALIZE_MODES = ("auto", "percentile", "range", "none")
DEFAULT_PERCENTILES = (0.5, 99.8)
#: Percentiles of very large arrays are estimated from about this many samples.
_MAX_SAMPLES = 4_000_000
#: Input types whose every value float32 represents exactly.
_FLOAT32_EXACT = tuple(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "float16",
                                             "float32"))
#: Normalised values are clipped to +-this: pixels a million spans outside [0, 1] are extreme
#: outliers, and beyond it the network's activations could overflow.
NETWORK_INPUT_LIMIT = 1e6
#: From this magnitude on, float32 no longer holds every integer: work in float64.
_FLOAT32_EXACT_LIMIT = 2.0**24
_FLOAT64_MAX = float(np.finfo(np.float64).max)


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

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str):
            raise TypeError(f"Normalization mode must be a string, got {self.mode!r}")
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not np.isfinite(value):
                raise ValueError(f"Normalization {name} must be a finite number, got {value!r}")
        if self.mode != "identity" and not float(self.high) > float(self.low):
            raise ValueError(
                f"Normalization high ({self.high!r}) must be greater than low ({self.low!r})"
            )
        if not np.isfinite(float(self.high) - float(self.low)):
            raise ValueError(f"Normalization span high - low ({self.high!r} - {self.low!r}) "
                             "overflows float64; scale the image down first")

    def work_dtype(self, input_dtype: np.dtype | None = None) -> np.dtype:
        """float32, or float64 where float32 would lose data of ``input_dtype`` or this
        map's intensities (see the module docstring)."""
        if self.mode == "identity":
            wide = input_dtype is not None and np.dtype(input_dtype) not in _FLOAT32_EXACT
            return np.dtype(np.float64 if wide else np.float32)
        scale = max(abs(float(self.low)), abs(float(self.high)))
        if scale >= _FLOAT32_EXACT_LIMIT or (
            input_dtype is not None and np.dtype(input_dtype) not in _FLOAT32_EXACT
        ):
            return np.dtype(np.float64)
        return np.dtype(np.float32)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Map ``data`` to the network's range as float32, clipped to
        :data:`NETWORK_INPUT_LIMIT` (only extreme outliers are clipped)."""
        data = np.asarray(data)
        if self.mode == "identity" and data.dtype == np.float32 and (
            data.size == 0 or -NETWORK_INPUT_LIMIT <= data.min() <= data.max()
            <= NETWORK_INPUT_LIMIT
        ):
            return data  # nothing to change: no copy of a large float32 image
        out = data.astype(self.work_dtype(data.dtype))  # a copy: the input is never modified
        if self.mode != "identity":
            halve = self._near_overflow()  # x - low may overflow where x/2 - low/2 cannot
            with np.errstate(over="ignore"):
                if halve:
                    out *= 0.5
                out -= out.dtype.type(float(self.low) * (0.5 if halve else 1.0))
                out /= out.dtype.type(self._span() * (0.5 if halve else 1.0))
        np.clip(out, -NETWORK_INPUT_LIMIT, NETWORK_INPUT_LIMIT, out=out)
        return out.astype(np.float32, copy=False)

    def _span(self) -> float:
        return float(self.high) - float(self.low)

    def _near_overflow(self) -> bool:
        """Whether intensities of this map come within a factor 4 of float64's limit."""
        return max(abs(float(self.low)), abs(float(self.high)), self._span()) \
            > _FLOAT64_MAX / 4

    def invert(self, data: np.ndarray, input_dtype: np.dtype | None = None) -> np.ndarray:
        """Map network outputs back to the input's intensity scale: float32, or float64 where
        :meth:`work_dtype` of ``input_dtype`` (the restored image's type) says so."""
        work = self.work_dtype(input_dtype)
        out = np.asarray(data, dtype=work)
        if self.mode == "identity":
            return out
        if not self._near_overflow():
            return out * work.type(self._span()) + work.type(self.low)
        # at float64's limit: in halves, then saturated (network overshoot or the float32
        # rounding of a pixel at the very top must not turn into infinity)
        with np.errstate(over="ignore"):
            half = out * work.type(self._span() * 0.5) + work.type(float(self.low) * 0.5)
            return np.clip(half, -_FLOAT64_MAX / 2, _FLOAT64_MAX / 2) * 2.0

    def to_dict(self) -> dict:
        """Return a JSON-serialisable description."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Normalization:
        """Rebuild from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``values`` is not such a description.
        """
        try:
            return cls(mode=str(values["mode"]), low=float(values["low"]),
                       high=float(values["high"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a stored normalisation ({err!s}): {values!r}"[:300]) from None


def check_percentiles(percentiles: object) -> tuple[float, float]:
    """Validate ``(low, high)`` percentiles: two numbers with ``0 <= low < high <= 100``.

    Raises
    ------
    TypeError, ValueError
        Saying what is wrong and what is expected.
    """
    try:
        low, high = percentiles  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(f"percentiles must be two numbers (low, high) such as (0.5, 99.8), "
                        f"got {percentiles!r}") from None
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)):
            raise TypeError(f"percentiles must be two numbers (low, high) such as (0.5, 99.8),"
                            f" got {percentiles!r}")
    if not 0 <= low < high <= 100:
        raise ValueError(
            f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}"
        )
    return float(low), float(high)


def _sample(data: np.ndarray) -> np.ndarray:
    flat = np.asarray(data).reshape(-1)
    if flat.size > _MAX_SAMPLES:
        step = int(np.ceil(flat.size / _MAX_SAMPLES))
        flat = flat[::step]
    return flat


def _percentile_normalization(
    data: np.ndarray, percentiles: tuple[float, float]
) -> Normalization:
    lo_p, hi_p = check_percentiles(percentiles)
    # NaN pixels (e.g. masked regions) are ignored rather than poisoning the whole map; the
    # percentiles are taken of the halved values, whose differences cannot overflow float64
    halved = _sample(data).astype(np.float64) * 0.5
    low, high = (2.0 * np.nanpercentile(halved, [lo_p, hi_p])).tolist()
    if not high > low:
        # Nearly constant data: fall back to the full range, then to a unit span (or, for
        # values so large that adding 1 changes nothing, the smallest span that differs),
        # below the value where above it would overflow
        low, high = float(np.nanmin(data)), float(np.nanmax(data))
        if not np.isfinite(low):
            low = 0.0
        if not high > low:
            magnitude = abs(low)
            ulp = float(np.spacing(magnitude)) if magnitude < _FLOAT64_MAX else \
                magnitude - float(np.nextafter(magnitude, 0.0))  # the step below the top
            step = max(1.0, 16 * ulp)
            low, high = (low, low + step) if np.isfinite(low + step) else (low - step, low)
    if not np.isfinite(high - low):
        raise ValueError(
            f"the image's intensities run from {low:.4g} to {high:.4g}, a range wider than "
            "float64 can hold (their difference overflows); scale the image down first "
            "(e.g. image / 1e10)")
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

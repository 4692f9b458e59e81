"""A noise level the user gives, for ``strength="auto"`` (``restore(noise=...)``).

``strength="auto"`` needs the noise variance at every pixel (see :mod:`.strength`). By default
it is estimated from the image (:func:`~.noise.estimate_noise`); where the user knows it,
``noise=`` gives it instead, in the image's own intensity units (the units of the pixel values
passed in: 0-255 for uint8, ADU for a camera's uint16 image, whatever a float image holds):

* a number ``sd > 0``: Gaussian noise of that standard deviation;
* a pair ``(gain, offset_variance)``: Poisson-Gaussian noise of variance
  ``gain * I + offset_variance`` at intensity ``I`` (``gain >= 0`` in intensity units per
  photo-electron; ``offset_variance`` is the read-noise variance minus ``gain`` times the
  camera offset, so it may be negative). The variance must be positive at the intensity the
  run's normalisation maps to 1 (:func:`network_noise` checks it); where the line falls below
  zero (pixels darker than the offset) the variance is taken as zero.

:class:`NoiseLevel` holds either form (a number ``sd`` is ``NoiseLevel(0, sd**2)``);
:func:`network_noise` maps it to the network's intensity domain through the run's
:class:`~.normalize.Normalization` ``x_n = (x - low) / s``, ``s = high - low``: the variance
``gain * (s x_n + low) + offset_variance`` over ``s**2`` is ``a_n x_n + b_n`` with
``a_n = gain / s`` and ``b_n = (gain * low + offset_variance) / s**2``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .normalize import Normalization
from .strength import check_strength

__all__ = ["NoiseLevel", "check_noise", "check_noise_use", "network_noise", "noise_record"]

_WHAT = ("noise must be 'auto', a Gaussian standard deviation > 0, or a pair (gain, "
         "offset_variance) for Poisson-Gaussian noise, in the image's intensity units")


class NoiseLevel(NamedTuple):
    """Noise of variance ``gain * I + offset_variance`` at intensity ``I`` (image units)."""

    gain: float
    offset_variance: float

    @classmethod
    def gaussian(cls, sd: float) -> NoiseLevel:
        """Gaussian noise of standard deviation ``sd``."""
        return cls(0.0, float(sd) * float(sd))

    def variance(self, intensity: Any) -> Any:
        """The variance at ``intensity`` (image units), clipped at zero."""
        return np.maximum(self.gain * np.asarray(intensity, np.float64)
                          + self.offset_variance, 0.0)


def _number(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{_WHAT}; {what} is not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{_WHAT}; {what} must be finite, got {value!r}")
    return number


def check_noise(noise: Any) -> NoiseLevel | None:
    """Validate ``noise``: None or "auto" (estimated: None), a standard deviation > 0 or a
    pair ``(gain, offset_variance)`` with ``gain >= 0`` (and ``offset_variance > 0`` where
    ``gain`` is 0).

    Raises
    ------
    TypeError
        If it is not a string, a number or a pair of numbers.
    ValueError
        If it is another string, NaN or infinite, a standard deviation <= 0, a negative gain,
        a pair with no positive variance, or a sequence of another length.
    """
    if noise is None:
        return None
    if isinstance(noise, str):
        if noise.strip().lower() != "auto":
            raise ValueError(f"{_WHAT}, e.g. noise=5.0 or noise=(2.0, 25.0); got {noise!r}")
        return None
    if isinstance(noise, np.ndarray) and noise.ndim == 0:
        noise = noise.item()
    if isinstance(noise, (tuple, list, np.ndarray)):
        if len(noise) != 2:
            raise ValueError(f"{_WHAT}; a sequence must hold exactly two numbers (gain, "
                             f"offset_variance), got {len(noise)}: {noise!r}")
        gain = _number(noise[0], "the gain")
        offset = _number(noise[1], "the offset variance")
        if gain < 0:
            raise ValueError(f"{_WHAT}; the gain must be >= 0, got {gain!r}")
        if gain == 0 and offset <= 0:
            raise ValueError(f"{_WHAT}; with gain 0 the offset variance is the whole variance "
                             f"and must be > 0, got {offset!r}")
        return NoiseLevel(gain, offset)
    sd = _number(noise, "noise")
    if sd <= 0:
        raise ValueError(f"{_WHAT}; a standard deviation must be > 0, got {noise!r} "
                         "(for noise-free images use strength=0)")
    if not math.isfinite(sd * sd):
        raise ValueError(f"{_WHAT}; a standard deviation of {sd:g} has a variance beyond "
                         "float64 (scale the image and the noise down together)")
    return NoiseLevel.gaussian(sd)


def check_noise_use(level: NoiseLevel | None, strength: float | str, task: str) -> None:
    """Refuse a given noise level where nothing would use it (another task than denoise, or
    a fixed strength): silently ignoring it would mislead.

    Raises
    ------
    ValueError
        Saying what to change.
    """
    if level is None:
        return
    if task != "denoise":
        raise ValueError(f"noise is used by strength='auto' when denoising; task {task!r} "
                         "does not use it: leave noise at 'auto'")
    if strength != "auto":
        raise ValueError(f"noise is used by strength='auto' when denoising; a fixed strength "
                         f"({strength!r}) does not use it: pass strength='auto' or leave "
                         "noise at 'auto'")


def network_noise(level: NoiseLevel, norm: Normalization) -> tuple[float, float]:
    """``(a_n, b_n)``: ``level`` as the variance ``a_n x_n + b_n`` of normalised intensities
    ``x_n`` (see the module docstring; the identity map is ``low = 0``, ``s = 1``).

    Raises
    ------
    ValueError
        If the variance is not positive at the intensity ``norm`` maps to 1.
    """
    low, span = (0.0, 1.0) if norm.mode == "identity" else (
        float(norm.low), float(norm.high) - float(norm.low))
    gain, offset = float(level.gain), float(level.offset_variance)
    # divided twice, never squared: spans near float64's limits must not overflow
    a_n, b_n = gain / span, (gain * low + offset) / span / span
    if not (math.isfinite(a_n) and math.isfinite(b_n)):
        raise ValueError(f"the given noise level ({_describe(level)}) overflows float64 in "
                         f"the image's intensity span ({span:.4g}); scale the image and the "
                         "noise down together")
    if not a_n + b_n > 0 and gain * (low + span) + offset > 0:
        raise ValueError(f"the given noise level ({_describe(level)}) vanishes against the "
                         f"image's intensity span ({span:.4g} image units): it is below "
                         "float64's resolution there; use a fixed strength (e.g. strength=1.0)"
                         " or leave noise at 'auto'")
    if not a_n + b_n > 0:
        top = low + span
        raise ValueError(
            f"the noise variance {gain:g} * I + {offset:g} is not positive even at the bright "
            f"end of the image (I = {top:g}, where the normalisation maps to 1); check the "
            "gain and offset variance (image units), e.g. noise=(gain, read_sd**2 - gain * "
            "camera_offset)")
    return a_n, b_n


def _describe(level: NoiseLevel) -> str:
    if level.gain == 0:
        return f"sd {math.sqrt(level.offset_variance):g}"
    return f"gain {level.gain:g}, offset variance {level.offset_variance:g}"


def noise_record(noise: Any, strength: Any = "auto", task: str = "denoise") -> dict:
    """What a run records of its noise level (layer metadata, zarr attributes): ``{"noise":
    "estimated"}``, ``{"noise": {"sd": 5.0}}`` or ``{"noise": {"gain": 2.0,
    "offset_variance": 25.0}}``; ``{}`` where nothing uses it (another task, a fixed
    strength). ``noise`` as given to ``restore()`` (checked here)."""
    level = check_noise(noise)
    if task != "denoise" or check_strength(strength) != "auto":
        return {}
    if level is None:
        return {"noise": "estimated"}
    if level.gain == 0:
        return {"noise": {"sd": math.sqrt(level.offset_variance)}}
    return {"noise": {"gain": level.gain, "offset_variance": level.offset_variance}}

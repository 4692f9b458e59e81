"""Noise variance against intensity from the level sets of the network output.

The weak-texture estimate (:mod:`.noise`) measures the noise where the image is flat. On
sparse fluorescence that is the dark background, often nearly noise-free (photon counting,
a camera offset, 8-bit quantisation), while the bright structures, where shot noise is
largest, have no flat patch at all: the estimate is extrapolated there and can read 2 to
100 times too low, and "auto" then keeps much of the noise (issue 30). This module measures
the variance at every intensity level and decides whether to trust it.

The high-pass profile
---------------------
The image is filtered by ``K = k k^T`` with ``k = (1, -2, 1) / sqrt(6)`` (so ``sum K^2 = 1``:
white noise of variance ``v`` comes out with variance ``v``). ``K`` passes almost nothing of
what a microscope resolves: a Gaussian PSF of 0.7 px keeps under 1 % of its energy at the
frequencies where ``K`` is large. Pixels are grouped by the network output's 3 x 3 mean
(level sets of the denoised image, not of the noisy one) into :data:`BINS` bins, finer
towards the bright end where sparse structures live; each bin gives the mean square of its
filtered values, with values beyond :data:`CLIP` standard deviations left out in a few
rounds (hot pixels and other impulses are not the noise the risk models).

Structure that survives ``K`` (pixel-scale texture: fur, grass, chromatin at high photon
counts) only adds to a bin's value, so the profile is an upper bound; its *lower envelope*,
the highest line ``a I + b`` (``a >= 0``) below every bin, is the least variance that the
profile allows at every level.

Trust
-----
The envelope is used only where it agrees with the direct weak-texture measurements: at
every level where those exist, it may be at most :data:`AGREEMENT` times their variance
(:data:`SLOPED_AGREEMENT` for an envelope that rises with intensity: the flat patches between
a dark background and bright structures are few and the quietest, and read low).
Where texture leaks into ``K`` everywhere (a detailed photograph) it is far above them and
ignored; where the noise is what ``K`` sees (fluorescence, any camera) it agrees and raises
the extrapolated line at the bright levels. Texture only at the bright levels (chromatin
sampled without optical blur) is caught by a second check: there a narrower-band 5 x 5
filter sees less than ``K`` (:func:`whiteness`), while on noise both see the same. The
variance used is then the larger of the two lines at every intensity.
"""

from __future__ import annotations

from itertools import combinations, pairwise
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from .noise import WeakTexture

__all__ = ["AGREEMENT", "BINS", "CLIP", "ENVELOPE_MARGIN", "POOLED_AGREEMENT",
           "SLOPED_AGREEMENT", "WHITENESS", "NoiseModel", "highpass", "highpass_profile",
           "lower_envelope", "noise_model", "whiteness"]

#: Intensity bins of the high-pass profile (at most), and the fewest pixels in one.
BINS = 10
_MIN_BIN_PIXELS = 200
#: Filtered values beyond this many standard deviations of their bin are left out.
CLIP = 5.0
_CLIP_ROUNDS = 4
#: The envelope is trusted where it is at most this multiple of the weak-texture variance at
#: every level where that was measured (the same tolerance as the weak-texture line's own
#: check, :data:`~.noise._AGREEMENT`).
AGREEMENT = 1.3
#: The tolerance for an envelope that rises with intensity (a shot-noise slope): the weak-
#: texture bins between a dark background and bright structures hold few flat patches, the
#: quietest ones, and read up to 1.45 times low on EMCCD and photon-counting fields (the
#: generated microscopy bench, 126 cases); a flat envelope only restates the Gaussian level
#: the weak-texture patches measure directly, and keeps :data:`AGREEMENT` (up to 1.4 times
#: too high on textured photographs at sigma 5).
SLOPED_AGREEMENT = 1.5
#: The same where no intensity bin had enough flat patches and the only measurement is the
#: flattest patches of a textured image (a dense cytoplasm), which reads 0.6 times the noise
#: and less; :data:`WHITENESS` is then what keeps texture out (textured photographs: 0.86-0.87).
POOLED_AGREEMENT = 2.0
#: A rising envelope (a Poisson-Gaussian line) is raised by this factor, as the weak-texture
#: line is (:data:`~.strength.NOISE_MARGIN`): it is the highest line *below* every bin, so
#: it touches the quietest ones (EMCCD at 12 photons: 0.84 of the true variance, and "auto"
#: then 1.1 dB below strength 1). A flat one is used as it is.
ENVELOPE_MARGIN = 1.1
#: Ratios are taken after adding this share of the profile's largest bin to both sides, so
#: that a noise-free background (variance 0 in both) agrees with itself.
_FLOOR = 1e-3

#: The envelope needs the brightest levels' high-pass content to be this white
#: (:func:`whiteness`): pixel-scale texture is not noise.
WHITENESS = 0.9
_BRIGHT_SHARE = 0.2

_TAPS = np.array([1.0, -2.0, 1.0]) / np.sqrt(6.0)
_KERNEL = np.outer(_TAPS, _TAPS)
_WIDE_TAPS = np.array([1.0, -4.0, 6.0, -4.0, 1.0]) / np.sqrt(70.0)
_WIDE = np.outer(_WIDE_TAPS, _WIDE_TAPS)


def highpass(plane: np.ndarray, kernel: np.ndarray | None = None) -> np.ndarray:
    """``plane`` filtered by a unit-energy high-pass kernel (default the 3 x 3 one), without
    a 2-px border."""
    kernel = _KERNEL if kernel is None else kernel
    out = ndimage.correlate(np.asarray(plane, np.float64), kernel, mode="reflect")
    return out[2:-2, 2:-2]


def _clipped_mean_square(values: np.ndarray) -> float:
    square = float(np.mean(values * values))
    for _ in range(_CLIP_ROUNDS):
        kept = values[values * values <= CLIP * CLIP * square]
        updated = float(np.mean(kept * kept)) if kept.size else square
        if updated == square:
            break
        square = updated
    return square


def highpass_profile(plane: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(levels, variances)`` of the high-pass profile of a 2-D ``plane`` binned by the
    level sets of ``output`` (the network's output for it, same shape)."""
    filtered = highpass(plane).ravel()
    level = ndimage.uniform_filter(np.asarray(output, np.float64), 3)[2:-2, 2:-2].ravel()
    order = np.argsort(level, kind="stable")
    quantiles = 1.0 - (1.0 - np.linspace(0.0, 1.0, BINS + 1)) ** 2  # finer at the top
    cuts = np.unique(np.round(quantiles * order.size).astype(int))
    levels, variances = [], []
    for lo, hi in pairwise(cuts):
        if hi - lo < _MIN_BIN_PIXELS:
            continue
        chosen = order[lo:hi]
        levels.append(float(level[chosen].mean()))
        variances.append(_clipped_mean_square(filtered[chosen]))
    return np.array(levels), np.array(variances)


def lower_envelope(levels: np.ndarray, variances: np.ndarray) -> tuple[float, float]:
    """``(a, b)``, ``a >= 0``: of the lines below every ``(level, variance)`` point, the one
    highest on average over the points (a line through two of them, or a flat one)."""
    levels, variances = np.asarray(levels, np.float64), np.asarray(variances, np.float64)
    best, score = (0.0, float(variances.min())), float(variances.min()) * levels.size
    tolerance = 1e-9 * float(np.abs(variances).max())
    for i, j in combinations(range(levels.size), 2):
        if levels[j] == levels[i]:
            continue
        a = (variances[j] - variances[i]) / (levels[j] - levels[i])
        if a < 0:
            continue
        b = variances[i] - a * levels[i]
        line = a * levels + b
        if np.all(line <= variances + tolerance) and line.sum() > score:
            best, score = (float(a), float(b)), float(line.sum())
    return best


class NoiseModel(NamedTuple):
    """The variance ``max(margin * (a I + b), m2 * (a2 I + b2), 0)`` at intensity ``I``: the
    weak-texture line (with its margin) and, where trusted, the profile's envelope (``m2``
    :data:`ENVELOPE_MARGIN` where it rises, else 1)."""

    line: tuple[float, float]
    margin: float = 1.0
    envelope: tuple[float, float] | None = None

    def lines(self) -> np.ndarray:
        """``(2, 2)``: the two lines ``(a, b)``, margins applied, whose maximum (and 0) is the
        variance; the second is zero where there is no envelope."""
        envelope = np.zeros(2)
        if self.envelope is not None:
            a, b = self.envelope
            envelope = (ENVELOPE_MARGIN if a > 0 else 1.0) * np.array([a, b])
        return np.stack([self.margin * np.asarray(self.line, np.float64), envelope])

    def variance(self, intensity: np.ndarray) -> np.ndarray:
        """The variance at every value of ``intensity`` (clipped at zero)."""
        level = np.maximum(np.asarray(intensity, np.float64), 0.0)
        (a, b), (a2, b2) = self.lines()
        return np.maximum(np.maximum(a * level + b, a2 * level + b2), 0.0)


def noise_model(plane: np.ndarray, output: np.ndarray, weak: WeakTexture,
                margin: float = 1.0) -> NoiseModel:
    """The noise of a 2-D ``plane`` from its weak-texture measurements ``weak``
    (:func:`~.noise.weak_texture`, its line raised by ``margin``) and the high-pass profile
    over the level sets of ``output`` (see the module notes)."""
    levels, variances = highpass_profile(plane, output)
    if levels.size < 2:
        return NoiseModel(weak.line, margin)
    a, b = lower_envelope(levels, variances)
    floor = _FLOOR * float(variances.max())
    pooled_only = len(weak.points) == 1 and weak.points[0][1] == weak.variance
    tolerance = (AGREEMENT if a <= 0 else POOLED_AGREEMENT if pooled_only
                 else SLOPED_AGREEMENT)
    agrees = all(a * level + b + floor <= tolerance * (variance + floor)
                 for level, variance in weak.points)
    trusted = agrees and whiteness(plane, output) >= WHITENESS
    return NoiseModel(weak.line, margin, (a, b) if trusted else None)


def whiteness(plane: np.ndarray, output: np.ndarray) -> float:
    """How white the high-pass content of the brightest levels is: the mean square of the
    5 x 5 filter (taps ``(1, -4, 6, -4, 1)``, unit energy) over that of the 3 x 3 one, on the
    pixels whose ``output`` level is in the top :data:`_BRIGHT_SHARE`. White noise gives 1
    with both; structure gives less with the narrower-band 5 x 5 filter (about 0.83 for a
    nuclei field sampled with no optical blur at 3000 photons, where the envelope reads 7
    times the noise; 0.93-1.01 for noise-dominated fields)."""
    level = ndimage.uniform_filter(np.asarray(output, np.float64), 3)[2:-2, 2:-2]
    bright = level >= np.quantile(level, 1.0 - _BRIGHT_SHARE)
    narrow = _clipped_mean_square(highpass(plane, _WIDE)[bright])
    wide = _clipped_mean_square(highpass(plane)[bright])
    return narrow / wide if wide > 0 else 1.0

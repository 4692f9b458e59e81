"""Denoising strength: how far to move from the input towards the network's output.

A fixed strength ``s`` gives ``x + s * (f(x) - x)`` for input ``x`` and network output
``f(x)``: ``1`` is the network output, ``0`` the input.

``strength="auto"`` weighs two frequency bands of the residual ``h = f(x) - x`` apart
(:mod:`.bands`: ``G`` a Gaussian of 2 px)::

    x + w_hi * (h - G h) + w_lo * G h        (w_hi, w_lo) per 2-D plane, in [0, MAX_WEIGHT]

(the colour channels of an RGB plane share them). Both are chosen by Stein's unbiased risk
estimate (SURE): for noise of variance ``v_i`` at pixel ``i``, the expected squared error
against the unknown clean image is, as a function of ``w = (w_hi, w_lo)``, the quadratic
``w @ A @ w + 2 c @ w`` plus a constant, computable from the noisy image alone
(:func:`sure_terms`), and :func:`box_weights` finds its exact minimum over the box. The
divergence terms ``sum_i v_i [P J]_ii`` (``J`` the network's Jacobian, ``P`` a band's
filter) are estimated by one random probe: close to ``sum_i d_i v_i [P (f(x + eps d) -
f(x))]_i / eps`` for ``d`` a fixed normal random image. With one band (``G = 0``) this is
the single weight ``w = (sum_i v_i - sum_i v_i df_i/dx_i) / ||h||^2``. The variance
``v(f(x))`` is estimated (:func:`noise_models`): the weak-texture line ``a I + b``
(:func:`~.noise.weak_texture`), raised by :data:`NOISE_MARGIN` if it is Poisson-Gaussian,
and raised further at the intensities where the high-pass profile over the output's level
sets shows more noise and agrees with it where both measure (:mod:`.noise_profile`: sparse
fluorescence, whose bright structures have no flat patch). The user may give it instead
(``restore(noise=...)``, in image units, mapped to the network's domain by
:func:`~.noise_level.network_noise` and used without a margin). Either way, impulses (hot
pixels, cosmic rays: :func:`~.impulses.impulses`) are left out of the risk. A network that oversmooths
a nearly clean image gets weights well below 1 (detail comes back); one that shifts low
frequencies it should leave alone (flat backgrounds at high photon counts) gets a small
``w_lo``; where it is right both stay at 1.

So that results do not depend on tiling or chunking, the weights are measured on one window
per plane, the central :data:`PROBE_SIZE` square (or the whole plane if smaller), run
through the network whole (two forwards of that window: ``x`` and ``x + eps d``). The low
band of the image itself is filtered tile by tile and accumulated like the network output
(:func:`~.bands.residual_low_band`), then :func:`blend` combines them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from .bands import low_band, low_band_diagonal
from .impulses import IMPULSE_COLUMNS, impulse_model, impulses
from .noise import MIN_SIZE, WeakTexture, weak_texture
from .noise_profile import NoiseModel, highpass, noise_model

__all__ = [
    "MAX_WEIGHT",
    "PLANE_COLUMNS",
    "PROBE_SIZE",
    "blend",
    "box_weights",
    "check_strength",
    "estimated_noise",
    "fixed_weight",
    "iter_probe_weights",
    "noise_models",
    "probe_pixels",
    "probe_weights",
    "probe_window",
    "sure_terms",
]

#: Numbers per plane that "auto" measures: the two band weights and the impulse model.
PLANE_COLUMNS = 2 + IMPULSE_COLUMNS
#: Edge of the central window on which "auto" measures the noise and the weight.
PROBE_SIZE = 256
#: Probe step as a fraction of the estimated noise standard deviation (in bf16 on a CPU this
#: gives the weights of fp32 with a 5x smaller step within 0.002 on real photographs).
EPS_FACTOR = 0.05
#: Weights are clipped to [0, MAX_WEIGHT]: never smoothing more than the network does.
MAX_WEIGHT = 1.0
#: An estimated Poisson-Gaussian line ``a x + b`` (``a > 0``) is raised by this factor before
#: SURE; a Gaussian estimate (``a = 0``) is used as it is. The weight scales with the
#: variance, and an underestimate is costly on very noisy images (w = 0.9 instead of 1 puts a
#: tenth of the noise back). The weak-texture Gaussian estimate is unbiased on real
#: photographs (median ratio to the true sd 0.99-1.01 from sigma 5 to 50), while the
#: per-intensity-bin fit reads 2-3 % low on real fluorescence fields; 10 % (chosen on the
#: validation split, confirmed on the benchmark) keeps w at 1 where the network is right.
NOISE_MARGIN = 1.1
_PROBE_SEED = 20150611

Forward = Callable[[np.ndarray], np.ndarray]


def check_strength(strength: Any) -> float | str:
    """Validate ``strength``: "auto" or a finite number >= 0 (returned as a float).

    Raises
    ------
    TypeError
        If it is neither "auto" nor a number.
    ValueError
        If it is another string, negative, NaN or infinite.
    """
    if isinstance(strength, str):
        if strength.strip().lower() != "auto":
            raise ValueError(f"strength must be 'auto' or a number >= 0, got {strength!r}")
        return "auto"
    if isinstance(strength, (bool, np.bool_)) or not isinstance(
            strength, (int, float, np.integer, np.floating)):
        raise TypeError(f"strength must be 'auto' or a number >= 0, got {strength!r}")
    value = float(strength)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"strength must be 'auto' or a finite number >= 0, got {strength!r}")
    return value


def fixed_weight(strength: float | str, task: str) -> float | None:
    """The weight a checked ``strength`` fixes, or None where "auto" measures it (denoise;
    other tasks use the network output, 1.0)."""
    if strength == "auto":
        return None if task == "denoise" else 1.0
    return float(strength)


def probe_window(height: int, width: int, size: int = PROBE_SIZE) -> tuple[slice, slice]:
    """The central ``size`` x ``size`` window of a ``height`` x ``width`` plane (clipped)."""
    h, w = min(size, height), min(size, width)
    y0, x0 = (height - h) // 2, (width - w) // 2
    return slice(y0, y0 + h), slice(x0, x0 + w)


def sure_terms(x: np.ndarray, fx: np.ndarray, f_probe: np.ndarray, direction: np.ndarray,
               eps: float, variance: np.ndarray, bands: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """SURE of ``x + w_hi (h - G h) + w_lo G h`` (``h = fx - x``) for one ``(h, w, c)``
    window, as ``(A, c)``: up to a constant, SURE is ``w @ A @ w + 2 c @ w``.

    ``A[k, l] = <h_k, h_l>`` for the bands ``h_k = P_k h`` (``P_hi = I - G``, ``P_lo = G``);
    ``c[k] = sum_i d_i v_i [P_k (f_probe - fx) / eps]_i - sum_i v_i diag(P_k)_i``, the
    probe's estimate of ``<noise, h_k>`` with the sign SURE gives it. Sums over several
    windows give their common weights. ``f_probe`` is the network output for
    ``x + eps * direction``; ``variance`` the noise variance per pixel. ``bands=False``:
    ``G = 0``, one weight for the whole residual (the second row and column are zero).
    """
    x, fx = x.astype(np.float64), fx.astype(np.float64)
    residual = fx - x
    response = (f_probe.astype(np.float64) - fx) / eps  # J d, the probe's response
    if bands:
        low, low_response = low_band(residual), low_band(response)
        low_diag = low_band_diagonal(*x.shape[:2])[..., None]
    else:
        low = low_response = low_diag = np.zeros_like(residual)
    parts = (residual - low, low)
    weighted = direction * variance
    a = np.array([[float(np.sum(p * q)) for q in parts] for p in parts])
    c = np.array([float(np.sum(weighted * r)) - float(np.sum(variance * g)) for r, g in
                  ((response - low_response, 1.0 - low_diag), (low_response, low_diag))])
    return a, c


def _quadratic(a: np.ndarray, c: np.ndarray, w: np.ndarray) -> float:
    return float(w @ a @ w + 2.0 * c @ w)


def box_weights(a: np.ndarray, c: np.ndarray, upper: float = MAX_WEIGHT) -> np.ndarray:
    """``(w_hi, w_lo)`` minimising ``w @ a @ w + 2 c @ w`` over ``[0, upper]^2`` (``a``
    symmetric positive semi-definite, as :func:`sure_terms` gives it).

    The unconstrained minimum if it lies in the box, else the best of the four edges (each a
    clipped 1-D minimum): exact for a convex quadratic in two variables. A band the residual
    does not have (``a[k, k] == 0``) takes the other band's weight, so the blend is the
    one-weight blend; with no residual at all both are 1 (the network output).
    """
    a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
    active = np.diag(a) > 0
    if not active.any():
        return np.ones(2)
    if not active.all():
        k = int(np.argmax(active))
        return np.full(2, np.clip(-c[k] / a[k, k], 0.0, upper))
    det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
    if det > 0:
        w = np.array([a[0, 1] * c[1] - a[1, 1] * c[0], a[1, 0] * c[0] - a[0, 0] * c[1]]) / det
        if np.all((w >= 0) & (w <= upper)):
            return w
    edges = []
    for k in (0, 1):
        j = 1 - k
        for fixed in (0.0, upper):
            w = np.empty(2)
            w[j] = fixed
            w[k] = np.clip(-(c[k] + a[k, j] * fixed) / a[k, k], 0.0, upper)
            edges.append(w)
    return min(edges, key=lambda w: _quadratic(a, c, w))


def estimated_noise(crop: np.ndarray) -> np.ndarray:
    """``(a, b)`` per channel of a ``(h, w, c)`` crop, shape ``(c, 2)``: the weak-texture
    estimate (:func:`~.noise.estimate_noise`), a Poisson-Gaussian line raised by
    :data:`NOISE_MARGIN` (SURE starts from it; :func:`noise_models` adds the profile)."""
    return np.array([_margin(fit.line) * np.array(fit.line) for fit in _weak_fits(crop)])


def _weak_fits(crop: np.ndarray) -> list[WeakTexture]:
    return [weak_texture(crop[..., k]) for k in range(crop.shape[-1])]


def _margin(line: tuple[float, float]) -> float:
    return NOISE_MARGIN if line[0] > 0 else 1.0


def noise_models(crop: np.ndarray, output: np.ndarray,
                 weak: list[WeakTexture] | None = None) -> list[NoiseModel]:
    """The estimated noise of every channel of a ``(h, w, c)`` crop given the network's
    ``output`` for it: the weak-texture line (:data:`NOISE_MARGIN` on a Poisson-Gaussian
    one), raised where the high-pass profile over the output's level sets agrees with it
    (:func:`~.noise_profile.noise_model`)."""
    weak = _weak_fits(crop) if weak is None else weak
    return [noise_model(crop[..., k], output[..., k], fit, _margin(fit.line))
            for k, fit in enumerate(weak)]


def _direction(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(_PROBE_SEED).standard_normal(shape).astype(np.float32)


def _probe_sd(crop: np.ndarray, lines: np.ndarray) -> float:
    """The noise sd that sets the probe step: the lines' mean variance over the crop, or,
    where they see none (a noise-free flat background), the high-pass variance."""
    level = np.maximum(lines[:, 0] * crop + lines[:, 1], 0.0).mean()
    if level == 0.0:
        level = float(np.mean([np.mean(highpass(crop[..., k]) ** 2)
                               for k in range(crop.shape[-1])]))
    return float(np.sqrt(level))


def _plane_terms(forward: Forward, crop: np.ndarray, bands: bool,
                 noise: tuple[float, float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """SURE terms for one ``(h, w, c)`` crop and its impulse model
    (:func:`~.impulses.impulse_model`); None if it is too small to measure."""
    if min(crop.shape[:2]) < MIN_SIZE:
        return None
    weak = None
    if noise is None:
        weak = _weak_fits(crop)
        lines = np.array([_margin(fit.line) * np.array(fit.line) for fit in weak])
    else:  # given: the same for every channel, no margin (it offsets the estimator's bias)
        lines = np.tile(np.asarray(noise, np.float64), (crop.shape[-1], 1))
    # (a line a x + b may be negative below the camera offset: no variance there)
    sd = _probe_sd(crop.astype(np.float64), lines)
    if sd == 0.0:  # no measurable noise: nothing to remove (both weights 0, no impulses)
        return np.eye(2), np.zeros(2), np.full(IMPULSE_COLUMNS, np.nan)
    direction = _direction(crop.shape)
    eps = EPS_FACTOR * sd
    pair = np.stack([crop, crop + np.float32(eps) * direction]).astype(np.float32)
    fx, f_probe = forward(pair)
    envelopes = np.zeros_like(lines)
    if noise is None:
        models = noise_models(crop, fx, weak)
        variance = np.stack([m.variance(fx[..., k]) for k, m in enumerate(models)], -1)
        lines, envelopes = np.moveaxis(np.array([m.lines() for m in models]), 1, 0)
    else:
        variance = np.maximum(lines[:, 0] * np.maximum(fx, 0) + lines[:, 1], 0.0)
    # impulses are left out of the risk: their residual counts as neither loss nor gain
    spikes = impulses(crop, fx, variance)
    x = np.where(spikes, fx, crop)
    a, c = sure_terms(x, fx, f_probe, direction, eps, np.where(spikes, 0.0, variance), bands)
    return a, c, impulse_model(crop, lines, envelopes)


def probe_weights(forward: Forward, crops: np.ndarray, group: int = 1,
                  bands: bool = True, noise: tuple[float, float] | None = None,
                  with_impulses: bool = False) -> np.ndarray:
    """SURE weights of planes from their probe windows (:func:`iter_probe_weights` run to
    its end)."""
    steps = iter_probe_weights(forward, crops, group, bands, noise, with_impulses)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def probe_pixels(crops_shape: tuple[int, ...]) -> int:
    """Network pixels the probe of windows ``(N, h, w, c)`` runs: two forwards each."""
    return 2 * int(crops_shape[0]) * int(crops_shape[1]) * int(crops_shape[2])


def iter_probe_weights(forward: Forward, crops: np.ndarray, group: int = 1,
                       bands: bool = True, noise: tuple[float, float] | None = None,
                       with_impulses: bool = False) -> Generator[int, None, np.ndarray]:
    """SURE weights of planes from their probe windows, step by step: yields the network
    pixels of each group of planes once it is measured (:func:`probe_pixels` of its
    windows), so that a caller can report progress and stop between planes; returns the
    weights.

    Parameters
    ----------
    forward : callable
        Runs a batch ``(B, h, w, c)`` of normalised images through the network whole and
        returns the final outputs, same shape.
    crops : numpy.ndarray
        ``(N, h, w, c)``: the probe window (:func:`probe_window`) of every plane, in the
        network's intensity domain.
    group : int
        Consecutive planes that share their weights (3: the colour planes of an RGB image
        run through a one-channel network).
    bands : bool
        True: a weight for each band of the residual; False: one weight for the whole
        residual (both columns equal).
    noise : (float, float), optional
        ``(a, b)``: the noise variance ``a x + b`` of every plane in the network's intensity
        domain (:func:`~.noise_level.network_noise`), used as it is; None (default): estimated
        per plane and channel (:func:`estimated_noise`).
    with_impulses : bool
        Also return each plane's impulse model (:func:`~.impulses.impulse_model`) after its
        weights, for :func:`~.impulses.replace_impulses` (NaN where not measured).

    Returns
    -------
    numpy.ndarray
        ``(N // group, 2)``: ``(w_hi, w_lo)`` per plane in ``[0, MAX_WEIGHT]``; 1.0 for
        windows under 32 pixels; ``(N // group, 2 + IMPULSE_COLUMNS)`` ``with_impulses``.
    """
    if crops.ndim != 4 or len(crops) % group:
        raise ValueError(f"crops must be (N, h, w, c) with N a multiple of {group}, "
                         f"got {crops.shape}")
    weights = np.ones((len(crops) // group, 2 + IMPULSE_COLUMNS * with_impulses))
    weights[:, 2:] = np.nan
    for g in range(len(weights)):
        windows = crops[g * group:(g + 1) * group]
        terms = [_plane_terms(forward, window, bands, noise) for window in windows]
        if all(t is not None for t in terms):
            weights[g, :2] = box_weights(sum(t[0] for t in terms), sum(t[1] for t in terms))
            models = np.array([t[2] for t in terms])
            measured = models[np.isfinite(models[:, -1])]
            if with_impulses and len(measured):  # planes of a group: the largest of each
                weights[g, 2:] = measured.max(axis=0)
        yield probe_pixels(windows.shape)
    return weights


def blend(x: np.ndarray, fx: np.ndarray, weights: np.ndarray,
          low: np.ndarray | None = None) -> np.ndarray:
    """The blend of planes ``(P, H, W, c)`` (float32): ``x + w (fx - x)`` for one weight per
    plane, or ``x + w_hi (fx - x) + (w_lo - w_hi) low`` for ``(P, 2)`` weights, where
    ``low`` is the low band of ``fx - x`` (accumulated tile by tile by the runner)."""
    w = np.asarray(weights, np.float32)
    w = w[:, :2] if w.ndim == 2 else w  # impulse models, if any, follow the two weights
    if w.ndim == 1:
        return (x + w.reshape(-1, 1, 1, 1) * (fx - x)).astype(np.float32, copy=False)
    if low is None:
        raise ValueError("two-band weights need the low band of the residual")
    hi, step = w[:, 0].reshape(-1, 1, 1, 1), (w[:, 1] - w[:, 0]).reshape(-1, 1, 1, 1)
    return (x + hi * (fx - x) + step * low).astype(np.float32, copy=False)

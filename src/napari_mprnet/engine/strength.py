"""Denoising strength: how far to move from the input towards the network's output.

The result is ``x + w * (f(x) - x)`` for input ``x`` and network output ``f(x)``, with one
weight ``w`` per 2-D plane (the colour channels of an RGB plane share it). ``w = 1`` is the
network output, ``w = 0`` the input.

``strength="auto"`` chooses ``w`` by Stein's unbiased risk estimate (SURE): for noise of
variance ``v_i`` at pixel ``i``, the expected squared error against the unknown clean image,
as a function of ``w``, can be computed from the noisy image alone, and it is smallest at

    w = (sum_i v_i - sum_i v_i * df_i/dx_i) / ||f(x) - x||^2.

The divergence term is estimated by one random probe: ``sum_i v_i df_i/dx_i`` is close to
``sum_i d_i v_i (f(x + eps d) - f(x))_i / eps`` for ``d`` a fixed normal random image. The
variance ``v = a f(x) + b`` comes from :func:`~.noise.estimate_noise`, raised by
:data:`NOISE_MARGIN`. A network that oversmooths a nearly clean image gets ``w`` well below 1
(detail comes back); where it is right ``w`` stays at 1; weights are clipped to
``[0, MAX_WEIGHT]``.

So that results do not depend on tiling or chunking, ``w`` is measured on one window per
plane, the central :data:`PROBE_SIZE` square (or the whole plane if smaller), run through
the network whole (two forwards of that window: ``x`` and ``x + eps d``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .noise import MIN_SIZE, estimate_noise

__all__ = [
    "MAX_WEIGHT",
    "PROBE_SIZE",
    "blend",
    "check_strength",
    "fixed_weight",
    "probe_weights",
    "probe_window",
    "sure_weight",
]

#: Edge of the central window on which "auto" measures the noise and the weight.
PROBE_SIZE = 256
#: Probe step as a fraction of the estimated noise standard deviation (in bf16 on a CPU this
#: gives the weights of fp32 with a 5x smaller step within 0.002 on real photographs).
EPS_FACTOR = 0.05
#: Weights are clipped to [0, MAX_WEIGHT]: never smoothing more than the network does.
MAX_WEIGHT = 1.0
#: The estimated noise variance is raised by this factor before SURE. The weight scales with
#: the variance, and an underestimate is costly on very noisy images (w = 0.9 instead of 1
#: puts a tenth of the noise back), while the estimate tends to be low there (by 5-13% on
#: synthetic Poisson-Gaussian images); a margin of 15% keeps w at 1 where the network is right.
NOISE_MARGIN = 1.15
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


def sure_weight(x: np.ndarray, fx: np.ndarray, f_probe: np.ndarray, direction: np.ndarray,
                eps: float, variance: np.ndarray) -> tuple[float, float]:
    """The two sums of the SURE-optimal weight: ``(numerator, denominator)``.

    ``w = numerator / denominator`` minimises SURE for ``x + w (fx - x)``; sums over several
    planes give their common weight. ``f_probe`` is the network output for
    ``x + eps * direction``; ``variance`` the noise variance per pixel.
    """
    x, fx = x.astype(np.float64), fx.astype(np.float64)
    divergence = float(np.sum(direction * variance * (f_probe.astype(np.float64) - fx)) / eps)
    residual = fx - x
    return float(np.sum(variance)) - divergence, float(np.sum(residual * residual))


def _noise_parameters(crop: np.ndarray) -> np.ndarray:
    """``(a, b)`` per channel of a ``(h, w, c)`` crop, shape ``(c, 2)``."""
    return np.array([estimate_noise(crop[..., k]) for k in range(crop.shape[-1])])


def _direction(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(_PROBE_SEED).standard_normal(shape).astype(np.float32)


def _plane_sums(forward: Forward, crop: np.ndarray) -> tuple[float, float] | None:
    """SURE sums for one ``(h, w, c)`` crop; None if it is too small to measure."""
    if min(crop.shape[:2]) < MIN_SIZE:
        return None
    params = _noise_parameters(crop) * NOISE_MARGIN
    a, b = params[:, 0], params[:, 1]
    level = a * np.maximum(crop, 0).mean(axis=(0, 1)) + b
    sd = float(np.sqrt(level.mean()))
    if sd == 0.0:  # no measurable noise: nothing to remove
        return 0.0, 1.0
    direction = _direction(crop.shape)
    eps = EPS_FACTOR * sd
    pair = np.stack([crop, crop + np.float32(eps) * direction]).astype(np.float32)
    fx, f_probe = forward(pair)
    variance = a * np.maximum(fx, 0) + b
    return sure_weight(crop, fx, f_probe, direction, eps, variance)


def probe_weights(forward: Forward, crops: np.ndarray, group: int = 1) -> np.ndarray:
    """SURE weights of planes from their probe windows.

    Parameters
    ----------
    forward : callable
        Runs a batch ``(B, h, w, c)`` of normalised images through the network whole and
        returns the final outputs, same shape.
    crops : numpy.ndarray
        ``(N, h, w, c)``: the probe window (:func:`probe_window`) of every plane, in the
        network's intensity domain.
    group : int
        Consecutive planes that share one weight (3: the colour planes of an RGB image run
        through a one-channel network).

    Returns
    -------
    numpy.ndarray
        ``N // group`` weights in ``[0, MAX_WEIGHT]``; 1.0 for windows under 32 pixels.
    """
    if crops.ndim != 4 or len(crops) % group:
        raise ValueError(f"crops must be (N, h, w, c) with N a multiple of {group}, "
                         f"got {crops.shape}")
    weights = np.ones(len(crops) // group)
    for g in range(len(weights)):
        sums = [_plane_sums(forward, crops[g * group + k]) for k in range(group)]
        if any(s is None for s in sums):
            continue
        numerator = sum(s[0] for s in sums)
        denominator = sum(s[1] for s in sums)
        if denominator > 0:
            weights[g] = float(np.clip(numerator / denominator, 0.0, MAX_WEIGHT))
    return weights


def blend(x: np.ndarray, fx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``x + w (fx - x)`` for planes ``(P, H, W, c)`` and one weight per plane (float32)."""
    w = np.asarray(weights, np.float32).reshape(-1, 1, 1, 1)
    return (x + w * (fx - x)).astype(np.float32, copy=False)

"""Image-quality metrics for validation: PSNR and a Gaussian-window SSIM.

Both accept torch tensors and numpy arrays. The last two axes are height and width; every
leading axis (batch, channel, z...) is treated as a stack of planes. The SSIM follows the
usual definition (Wang et al. 2004) with an 11x11 Gaussian window of sigma 1.5 and population
statistics, and averages the SSIM map over the pixels whose window lies inside the image; with
these settings it matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=...)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]

#: SSIM stabilising constants (fractions of the data range).
K1, K2 = 0.01, 0.03
#: Gaussian window: sigma and truncation (in sigmas), as ``scipy.ndimage.gaussian_filter``.
SIGMA, TRUNCATE = 1.5, 3.5


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.from_numpy(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor or numeric array: {err}") from None
    if t.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    return t


def _pair(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _as_tensor(pred, "pred"), _as_tensor(target, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(p.shape)} and "
            f"{tuple(t.shape)}"
        )
    if p.ndim < 2:
        raise ValueError(f"images need at least 2 dimensions (H, W), got shape {tuple(p.shape)}")
    if p.numel() == 0:
        raise ValueError("pred and target are empty")
    dtype = torch.promote_types(p.dtype, t.dtype)
    return p.to(dtype), t.to(dtype=dtype, device=p.device)


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not data_range > 0 or not math.isfinite(data_range):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    return data_range


def psnr(pred: Any, target: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    Parameters
    ----------
    pred, target : torch.Tensor or numpy.ndarray
        Same shape (at least 2-D); the MSE is taken over all elements.
    data_range : float
        The peak value range (1 for images normalised to [0, 1]).

    Returns
    -------
    float
        ``inf`` when the arrays are identical.
    """
    data_range = _check_range(data_range)
    p, t = _pair(pred, target)
    mse = float(torch.mean((p.double() - t.double()) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def _gaussian_taps(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(TRUNCATE * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def ssim(
    pred: Any,
    target: Any,
    data_range: float = 1.0,
    *,
    channel_axis: int | None = None,
    sigma: float = SIGMA,
) -> float:
    """Mean structural similarity with a Gaussian window.

    Parameters
    ----------
    pred, target : torch.Tensor or numpy.ndarray
        Same shape. By default the last two axes are (H, W) and every leading axis is a stack
        of planes, e.g. (N, C, H, W) tensors; ``channel_axis`` names a channel axis elsewhere
        (e.g. -1 for (H, W, 3) images).
    data_range : float
        The value range (1 for normalised images).
    channel_axis : int, optional
        Axis holding channels, moved in front of (H, W) before computing.
    sigma : float
        Standard deviation of the Gaussian window (truncated at 3.5 sigma).

    Returns
    -------
    float
        The mean SSIM over every plane and every pixel whose window fits inside the image.
    """
    data_range = _check_range(data_range)
    p, t = _pair(pred, target)
    if channel_axis is not None:
        p, t = p.movedim(channel_axis, 0), t.movedim(channel_axis, 0)
    height, width = p.shape[-2:]
    p = p.reshape(-1, 1, height, width)
    t = t.reshape(-1, 1, height, width)
    taps = _gaussian_taps(float(sigma), p.dtype, p.device)
    size = taps.numel()
    if height < size or width < size:
        raise ValueError(
            f"SSIM needs images of at least {size}x{size} pixels, got {height}x{width}"
        )
    row, col = taps.view(1, 1, 1, size), taps.view(1, 1, size, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, row), col)  # "valid": only windows inside the image

    stack = torch.cat([p, t, p * p, t * t, p * t], dim=1)  # (planes, 5, H, W)
    n = stack.shape[0]
    filtered = blur(stack.reshape(n * 5, 1, height, width))
    filtered = filtered.reshape(n, 5, filtered.shape[-2], filtered.shape[-1])
    mu_p, mu_t, e_pp, e_tt, e_pt = filtered.unbind(1)
    var_p = e_pp - mu_p * mu_p
    var_t = e_tt - mu_t * mu_t
    cov = e_pt - mu_p * mu_t
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    numerator = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    denominator = (mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2)
    return float((numerator / denominator).double().mean())

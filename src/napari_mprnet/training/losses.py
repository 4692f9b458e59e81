"""The paper's training losses (MPRNet eq. 1-3).

Every stage output ``X_s`` is compared with the ground truth ``Y``:
``sum_s Charbonnier(X_s, Y) + lambda * Edge(X_s, Y)`` with ``lambda = 0.05``.
Charbonnier is ``mean(sqrt((x - y)^2 + eps^2))`` with ``eps = 1e-3``; the edge loss is the
Charbonnier distance of Laplacians, where the Laplacian is the band-pass
``x - g(up(down(g(x))))`` of a 5x5 Gaussian ``g`` (one level of a Laplacian pyramid).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["charbonnier_loss", "edge_loss", "laplacian", "mprnet_loss"]

#: 1-D taps of the separable 5x5 Gaussian used by the Laplacian.
GAUSS_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)


def _check_4d(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")


def _check_pair(pred: Tensor, target: Tensor) -> None:
    _check_4d(pred, "pred")
    _check_4d(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


def charbonnier_loss(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier (smooth L1) distance ``mean(sqrt((pred - target)^2 + eps^2))``.

    Parameters
    ----------
    pred, target : torch.Tensor
        Tensors of the same shape (N, C, H, W).
    eps : float
        Smoothing constant; identical inputs give exactly ``eps``.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    _check_pair(pred, target)
    diff = pred - target
    return torch.sqrt(diff * diff + eps * eps).mean()


def _gauss(x: Tensor) -> Tensor:
    """Depthwise 5x5 Gaussian blur with replicate padding of 2."""
    channels = x.shape[1]
    taps = torch.tensor(GAUSS_TAPS, device=x.device, dtype=x.dtype)
    kernel = torch.outer(taps, taps).expand(channels, 1, 5, 5)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    return F.conv2d(padded, kernel, groups=channels)


def laplacian(x: Tensor) -> Tensor:
    """Band-pass Laplacian ``x - g(up(down(g(x))))`` of every channel.

    ``down`` keeps every second pixel, ``up`` inserts zeros back to the original size and
    multiplies by 4 (the Gaussian then interpolates the missing pixels).

    Parameters
    ----------
    x : torch.Tensor
        (N, C, H, W), any number of channels, any (also odd) size.

    Returns
    -------
    torch.Tensor
        Same shape, device and dtype as ``x``.
    """
    _check_4d(x, "x")
    blurred = _gauss(x)
    down = blurred[..., ::2, ::2]
    up = torch.zeros_like(blurred)
    up[..., ::2, ::2] = down * 4
    return x - _gauss(up)


def edge_loss(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier distance between the Laplacians of ``pred`` and ``target`` (paper eq. 3)."""
    _check_pair(pred, target)
    return charbonnier_loss(laplacian(pred), laplacian(target), eps)


def mprnet_loss(
    stages: Sequence[Tensor], target: Tensor, edge_weight: float = 0.05, eps: float = 1e-3
) -> Tensor:
    """The paper's multi-stage loss (eq. 1), summed over all stage outputs.

    Parameters
    ----------
    stages : sequence of torch.Tensor
        Stage outputs (e.g. MPRNet's ``[final, stage2, stage1]``), each shaped like ``target``.
    target : torch.Tensor
        Ground truth (N, C, H, W).
    edge_weight : float
        Weight of the edge loss (the paper's lambda).
    eps : float
        Charbonnier constant.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    if isinstance(stages, Tensor):
        raise TypeError("stages must be a sequence of tensors (one per stage), not one tensor")
    stages = list(stages)
    if not stages:
        raise ValueError("stages is empty: need at least one stage output")
    target_lap = None
    total = None
    for index, stage in enumerate(stages):
        try:
            _check_pair(stage, target)
        except ValueError as err:
            raise ValueError(f"stage {index}: {err}") from None
        if target_lap is None:
            target_lap = laplacian(target)
        term = charbonnier_loss(stage, target, eps)
        term = term + edge_weight * charbonnier_loss(laplacian(stage), target_lap, eps)
        total = term if total is None else total + term
    return total

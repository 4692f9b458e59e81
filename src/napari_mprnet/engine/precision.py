"""Which arithmetic a model runs in: names, device defaults and the CPU bf16 check.

"auto" (or None) means fp16 autocast on CUDA; on a CPU, bf16 autocast where the processor
computes bf16 natively (:func:`~napari_mprnet.engine.devices.cpu_supports_bf16`) and the
model keeps its accuracy in it (:func:`bf16_keeps_accuracy`), fp32 elsewhere.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch
from torch import nn

from . import devices

__all__ = [
    "MIN_BF16_AGREEMENT_DB",
    "PRECISIONS",
    "bf16_agreement_db",
    "bf16_keeps_accuracy",
    "choose_precision",
    "default_precision",
    "normalize_precision",
    "probe_picture",
    "weights_version",
]

#: Precision names and the autocast dtype they stand for.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
#: Smallest PSNR (dB, data range 1) between a model's bf16 and fp32 outputs on the probe
#: image for "auto" to choose bf16 on a CPU. The bundled models agree to 60-63 dB on held-out
#: photographs, where bf16 changes their PSNR against the clean image by under 0.02 dB
#: (docs/benchmarks/restore_cpu.md); a disagreement of 50 dB could cost at most 0.05 dB on
#: a result of 30 dB, even if the bf16 error were unrelated to the model's own.
MIN_BF16_AGREEMENT_DB = 50.0
#: Edge of the probe image (pixels): one quick forward pass in each precision.
_PROBE_SIZE = 64
#: model -> (its parameters' in-place versions, agreement): re-checked when weights change
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_precision(device: torch.device) -> str:
    """fp16 autocast on CUDA; bf16 on a CPU that computes bf16 natively; fp32 elsewhere.

    This is the device's preference alone; :func:`choose_precision` also asks the model.
    """
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and devices.cpu_supports_bf16():
        return "bf16"
    return "fp32"


def normalize_precision(precision: str | None, device: torch.device) -> str:
    """Validate a precision name (fp32/fp16/bf16, or None/"auto" for the device's default).

    Raises
    ------
    TypeError
        If ``precision`` is not a string or None.
    ValueError
        If the name is unknown.
    """
    if precision is None:
        return default_precision(device)
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a string such as 'fp32', got {precision!r}")
    name = _ALIASES.get(precision.lower(), precision.lower())
    if name == "auto":
        return default_precision(device)
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of auto, fp32, fp16, bf16")
    return name


def choose_precision(precision: str | None, device: torch.device, model: nn.Module) -> str:
    """The precision ``model`` runs in on ``device``: an explicit name is kept; "auto"/None
    is :func:`default_precision`, except that on a CPU a model that loses accuracy in bf16
    (:func:`bf16_keeps_accuracy`) runs in fp32."""
    name = normalize_precision(precision, device)
    automatic = precision is None or precision.lower() == "auto"
    if automatic and name == "bf16" and device.type == "cpu" and not bf16_keeps_accuracy(model):
        return "fp32"
    return name


def probe_picture(channels: int) -> torch.Tensor:
    """A fixed noisy test picture ``(1, channels, 64, 64)`` in [0, 1]: smooth shading,
    sharp-edged shapes and Gaussian noise of sigma 0.1."""
    rng = np.random.default_rng(1234)
    size = _PROBE_SIZE
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = 0.3 + 0.3 * np.sin(3.0 * xx + 2.0 * yy)
    for _ in range(6):
        cy, cx, radius = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        clean = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2, rng.uniform(0, 1), clean)
    planes = [np.clip(clean + rng.normal(0.0, 0.1, clean.shape), 0.0, 1.0)
              for _ in range(channels)]
    return torch.from_numpy(np.stack(planes)[None].astype(np.float32))


def weights_version(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple((id(t), t._version) for t in (*model.parameters(), *model.buffers()))


def bf16_agreement_db(model: nn.Module) -> float:
    """PSNR (dB, range 1) between the model's bf16-autocast and fp32 outputs on a fixed
    probe picture, on the CPU; ``inf`` when they are equal. Cached per model until its
    weights change."""
    version = weights_version(model)
    cached = _CHECKED.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    config = getattr(model, "config", None)
    probe = probe_picture(int(getattr(config, "in_c", 3)))
    weight = next(model.parameters(), None)
    if weight is not None and weight.device.type != "cpu":
        raise ValueError("bf16_agreement_db checks a model on the CPU; move it there first")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            reference = model(probe)[0].float().clamp(0, 1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                reduced = model(probe)[0].float().clamp(0, 1)
    finally:
        model.train(was_training)
    mse = float(torch.mean((reference - reduced) ** 2))
    if not math.isfinite(mse):
        agreement = -math.inf
    else:
        agreement = math.inf if mse == 0 else -10.0 * math.log10(mse)
    _CHECKED[model] = (version, agreement)
    return agreement


def bf16_keeps_accuracy(model: nn.Module) -> bool:
    """Whether "auto" may run ``model`` in bf16 on a CPU: not when its metadata says
    ``"cpu_bf16": false``, nor when :func:`bf16_agreement_db` is below
    :data:`MIN_BF16_AGREEMENT_DB`."""
    metadata = getattr(model, "metadata", None) or {}
    if metadata.get("cpu_bf16") is False:
        return False
    return bf16_agreement_db(model) >= MIN_BF16_AGREEMENT_DB

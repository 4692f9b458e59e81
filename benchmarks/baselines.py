"""Classical denoising baselines and model loading shared by the benchmark scripts.

- :func:`anscombe` / :func:`inverse_anscombe`: the generalised Anscombe transform of photon
  counts with Gaussian read noise and its closed-form unbiased inverse;
- :func:`vst_denoise`: any Gaussian denoiser (BM3D, NL-means) run on Poisson-Gaussian data
  after that transform, given the true gain, offset and read noise (scalars or per-pixel maps),
  and mapped back to the image's units;
- :func:`bm3d_gaussian`, :func:`nl_means_gaussian`: the two denoisers at a known sd;
- :func:`load_bench_model`: a task name, a model file or a ``finetune`` checkpoint (``.pt``)
  as a ready network, and :func:`describe_model`.

Benchmark scripts import this module after putting their own folder on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

Denoiser = Callable[[np.ndarray, float], np.ndarray]


def anscombe(counts: np.ndarray, read_noise: np.ndarray | float) -> np.ndarray:
    """Generalised Anscombe transform of photon counts plus Gaussian read noise (gain 1):
    the result has a noise standard deviation of about 1."""
    return 2.0 * np.sqrt(np.maximum(counts + 3.0 / 8.0 + np.square(read_noise), 0.0))


def inverse_anscombe(value: np.ndarray, read_noise: np.ndarray | float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`anscombe`."""
    d = np.maximum(np.asarray(value, np.float64), 2.0 * np.sqrt(3.0 / 8.0))
    r = np.sqrt(1.5)
    out = 0.25 * d**2 + 0.25 * r / d - 11.0 / 8.0 / d**2 + 0.625 * r / d**3 - 0.125
    return np.maximum(out - np.square(read_noise), 0.0)


def bm3d_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (the ``bm3d`` package) for white Gaussian noise of sd ``sigma``."""
    import bm3d

    return np.asarray(bm3d.bm3d(np.asarray(image, np.float64), sigma_psd=float(sigma)),
                      np.float64)


def nl_means_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image NL-means (fast mode, 5x5 patches, 13x13 search, h = 0.8 sigma)."""
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(np.asarray(image, np.float64), h=0.8 * sigma, sigma=sigma,
                            fast_mode=True, patch_size=5, patch_distance=6)


def vst_denoise(noisy: np.ndarray, gain: np.ndarray | float, offset: np.ndarray | float,
                read_sd: np.ndarray | float, denoiser: Denoiser = bm3d_gaussian
                ) -> np.ndarray:
    """Denoise Poisson-Gaussian data through the generalised Anscombe transform.

    The data are ``offset + gain * (Poisson counts) + N(0, read_sd**2)`` (``gain`` the
    variance per unit of signal, so an EMCCD's excess factor belongs in it); all in the
    image's units. Returns the estimate of the expected value in those units.
    """
    counts = (np.asarray(noisy, np.float64) - offset) / gain
    read = np.asarray(read_sd, np.float64) / gain
    stabilised = anscombe(counts, read)
    return offset + gain * inverse_anscombe(denoiser(stabilised, 1.0), read)


def _model_from_checkpoint(path: str):
    """The network of a ``finetune`` checkpoint: its best validated state, else its last."""
    from napari_mprnet.model import MPRNet, MPRNetConfig
    from napari_mprnet.training.trainer import load_checkpoint

    ckpt = load_checkpoint(path)
    net = MPRNet(MPRNetConfig(**ckpt["config"]))
    net.load_state_dict(ckpt.get("best_state") or ckpt["model"])
    net.metadata = {"task": ckpt.get("task"), "trained": True}
    net.source = f"{path} (step {ckpt['step']}, best {ckpt.get('best', {}).get('step')})"
    return net.eval()


def load_bench_model(weights: str | None, task: str):
    """The network of ``weights`` (a model file or a ``finetune`` checkpoint ``.pt``), else
    the task's bundled model."""
    if weights and str(weights).endswith(".pt"):
        return _model_from_checkpoint(weights)
    from napari_mprnet.api import prepare_model

    return prepare_model(weights or task, task)


def shown_path(source: object) -> str:
    """A model's source as written in reports: relative to the working folder when inside it."""
    if not source:
        return "model"
    path = Path(str(source))
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def describe_model(model) -> str:
    """Source, trained state and size of a network, for reports."""
    meta = getattr(model, "metadata", None) or {}
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    trained = meta.get("trained")
    state = "trained" if trained else "UNTRAINED placeholder" if trained is False else "?"
    return (f"{shown_path(getattr(model, 'source', None))} ({state}; n_feat {cfg.n_feat}, "
            f"{params / 1e6:.2f} M params)")

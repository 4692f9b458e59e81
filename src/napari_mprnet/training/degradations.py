"""Synthetic degradations for training and benchmarking: noise, blur and rain.

All functions take float32 images in [0, 1], shaped (H, W) (grey) or (H, W, 3) (colour),
and a :class:`numpy.random.Generator`; results are deterministic for a given generator state.

Noise is **not clipped**: a clipped noisy image has a biased mean and a smaller variance
near 0 and 1, which would teach the network the wrong noise model (and breaks the variance
checks in the tests). Blurred and rained images stay within [0, 1] up to the (mild, unclipped)
noise added to them.

Grey data and 3-channel networks: degrade the single grey channel first and replicate it
afterwards (:class:`PairGenerator` does), never the other way round (DESIGN.md section 6).

Random degradation models (:func:`sample_params`, :func:`degrade`)
------------------------------------------------------------------
denoise
    Half of the images: Gaussian noise, sigma uniform in [0, 50]/255 (blind). The other half:
    Poisson-Gaussian noise of a photon-counting camera, photons at intensity 1 log-uniform in
    [5, 1000], Gaussian read noise uniform in [0, 4] photons (electrons) rms.
deblur
    One kernel per image, the kind uniform among Gaussian (sigma 0.5-3 px, anisotropic,
    rotated), defocus (disk radius 1-5 px) and motion (length 3-21 px, any angle, slightly
    curved); then mild Gaussian noise, sigma uniform in [0, 2]/255.
derain
    Rain streaks screen-blended over the image: density (streak seeds per pixel) log-uniform
    in [0.0005, 0.006], angle uniform in [-35, 35] degrees from vertical (one per image, varied
    per layer by up to 5 degrees), length 8-40 px, width 0.4-1.2 px, brightness 0.3-1,
    one or two layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import ndimage, signal

__all__ = [
    "DEGRADATION_MODEL",
    "TASK_NAMES",
    "PairGenerator",
    "apply_params",
    "blur",
    "blur_kernel",
    "degrade",
    "gaussian_noise",
    "poisson_gaussian",
    "rain_streaks",
    "sample_params",
    "streak_kernel",
]

TASK_NAMES = ("denoise", "deblur", "derain")

#: The random degradation model of each task (recorded in trained models' provenance).
DEGRADATION_MODEL: dict[str, dict[str, Any]] = {
    "denoise": {
        "gaussian_fraction": 0.5,
        "gaussian_sigma": [0.0, 50.0 / 255.0],
        "poisson_photons_loguniform": [5.0, 1000.0],
        "poisson_read_noise_photons": [0.0, 4.0],
        "clipped": False,
    },
    "deblur": {
        "kernels": ["gaussian", "defocus", "motion"],
        "gaussian_sigma": [0.5, 3.0],
        "defocus_radius": [1.0, 5.0],
        "motion_length": [3.0, 21.0],
        "motion_curvature_rad_per_px": [-0.04, 0.04],
        "noise_sigma": [0.0, 2.0 / 255.0],
    },
    "derain": {
        "density_loguniform": [0.0005, 0.006],
        "angle_deg_from_vertical": [-35.0, 35.0],
        "length": [8.0, 40.0],
        "width": [0.4, 1.2],
        "brightness": [0.3, 1.0],
        "layers": [1, 2],
        "blend": "screen",
    },
}


def _float_image(img: Any) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3)):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- noise


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``img`` plus white Gaussian noise of standard deviation ``sigma`` (not clipped)."""
    arr = _float_image(img)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    noise = rng.standard_normal(arr.shape, dtype=np.float32)
    return arr + np.float32(sigma) * noise


def poisson_gaussian(
    img: np.ndarray, photons: float, read_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Photon-counting noise: Poisson shot noise plus Gaussian read noise (not clipped).

    The image is scaled so that intensity 1 collects ``photons`` photons, counts are drawn
    from a Poisson distribution, Gaussian read noise of ``read_noise`` photons rms is added
    and the result is scaled back. In photon units the variance of a pixel is therefore
    ``img * photons + read_noise**2``.
    """
    arr = _float_image(img)
    if photons <= 0:
        raise ValueError(f"photons must be > 0, got {photons!r}")
    if read_noise < 0:
        raise ValueError(f"read_noise must be >= 0, got {read_noise!r}")
    rate = np.clip(arr, 0.0, None).astype(np.float64) * photons
    counts = rng.poisson(rate).astype(np.float32)
    counts += np.float32(read_noise) * rng.standard_normal(arr.shape, dtype=np.float32)
    return counts / np.float32(photons)


# --------------------------------------------------------------------------- blur kernels


def _odd(n: float) -> int:
    n = max(math.ceil(n), 1)
    return n if n % 2 else n + 1


def _fit(kernel: np.ndarray, size: int | None) -> np.ndarray:
    """Centre-crop or zero-pad to ``size`` (odd), then normalise to sum 1."""
    if size is not None:
        if int(size) != size or size < 1 or size % 2 == 0:
            raise ValueError(f"kernel size must be a positive odd integer, got {size!r}")
        current = kernel.shape[0]
        if current > size:
            cut = (current - size) // 2
            kernel = kernel[cut : cut + size, cut : cut + size]
        elif current < size:
            pad = (size - current) // 2
            kernel = np.pad(kernel, pad)
    kernel = np.clip(kernel, 0.0, None)
    total = kernel.sum()
    if total <= 0:
        kernel = np.zeros_like(kernel)
        kernel[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1.0
        total = 1.0
    return (kernel / total).astype(np.float32)


def _gaussian_kernel(sigma_y: float, sigma_x: float, theta: float) -> np.ndarray:
    half = _odd(3.5 * max(sigma_y, sigma_x, 0.3) * 2 + 1) // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    return np.exp(-0.5 * ((u / max(sigma_x, 1e-3)) ** 2 + (v / max(sigma_y, 1e-3)) ** 2))


def _disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    half = math.ceil(radius) + 1
    n = 2 * half + 1
    fine = (np.arange(n * supersample) + 0.5) / supersample - n / 2
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    inside = (yy**2 + xx**2 <= radius**2).astype(np.float64)
    return inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))


def _splat_path(ys: np.ndarray, xs: np.ndarray, half: int) -> np.ndarray:
    """Accumulate points (relative to the centre) bilinearly into a (2*half+1)^2 grid."""
    n = 2 * half + 1
    grid = np.zeros((n, n), np.float64)
    ys, xs = ys + half, xs + half
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yi, xi = y0 + dy, x0 + dx
            ok = (yi >= 0) & (yi < n) & (xi >= 0) & (xi < n)
            np.add.at(grid, (yi[ok], xi[ok]), (wy * wx)[ok])
    return grid


def _line(length: float, dy: float, dx: float, curvature: float = 0.0) -> np.ndarray:
    """A (slightly curved) line of ``length`` px through the centre, direction (dy, dx)."""
    steps = max(int(length * 8), 2)
    t = np.linspace(-length / 2, length / 2, steps)
    base = math.atan2(dy, dx)
    # integrate a direction that turns by `curvature` radians per pixel
    angle = base + curvature * t
    dt = t[1] - t[0]
    ys, xs = np.cumsum(np.sin(angle)) * dt, np.cumsum(np.cos(angle)) * dt
    ys, xs = ys - ys.mean(), xs - xs.mean()
    half = math.ceil(max(np.abs(ys).max(), np.abs(xs).max())) + 1
    return _splat_path(ys, xs, half)


def blur_kernel(
    kind: str = "gaussian",
    size: int | None = None,
    rng: np.random.Generator | None = None,
    *,
    sigma: float | tuple[float, float] | None = None,
    radius: float | None = None,
    length: float | None = None,
    angle: float | None = None,
    curvature: float | None = None,
) -> np.ndarray:
    """A normalised (sum 1, non-negative) 2-D blur kernel.

    Parameters
    ----------
    kind : {"gaussian", "defocus", "motion"}
        Gaussian (optionally anisotropic), an anti-aliased disk (defocus), or a line
        (linear motion, optionally slightly curved).
    size : int, optional
        Odd side of the returned kernel; default: just large enough for its support.
    rng : numpy.random.Generator, optional
        Draws every parameter not given, from the deblur ranges of :data:`DEGRADATION_MODEL`.
        Without ``rng``, missing parameters take fixed defaults (sigma 1.5, radius 3,
        length 9, angle 0, no curvature).
    sigma : float or (float, float)
        Gaussian standard deviation(s) (along the rotated y and x axes), in px.
    radius : float
        Defocus disk radius, in px.
    length : float
        Motion length, in px.
    angle : float
        Degrees, counter-clockwise from the image x axis (rows grow downwards): the motion
        direction, or the rotation of an anisotropic Gaussian.
    curvature : float
        Motion path curvature, radians per pixel.
    """
    model = DEGRADATION_MODEL["deblur"]
    if angle is None:
        angle = float(rng.uniform(0, 180)) if rng is not None else 0.0
    theta = math.radians(angle)
    if kind == "gaussian":
        if sigma is None:
            if rng is not None:
                lo, hi = model["gaussian_sigma"]
                sy = float(rng.uniform(lo, hi))
                sigma = (sy, sy * float(rng.uniform(0.5, 1.0)))
            else:
                sigma = 1.5
        sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
        kernel = _gaussian_kernel(float(sy), float(sx), theta)
    elif kind == "defocus":
        if radius is None:
            radius = float(rng.uniform(*model["defocus_radius"])) if rng is not None else 3.0
        kernel = _disk_kernel(float(radius))
    elif kind == "motion":
        if length is None:
            length = float(rng.uniform(*model["motion_length"])) if rng is not None else 9.0
        if curvature is None:
            curvature = (
                float(rng.uniform(*model["motion_curvature_rad_per_px"]))
                if rng is not None else 0.0
            )
        kernel = _line(float(length), -math.sin(theta), math.cos(theta), float(curvature))
    else:
        raise ValueError(f"kind must be 'gaussian', 'defocus' or 'motion', got {kind!r}")
    return _fit(kernel, size)


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel with ``kernel`` (reflecting the borders); float32."""
    arr = _float_image(img)
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got shape {k.shape}")
    pad_y, pad_x = k.shape[0] // 2, k.shape[1] // 2
    planes = arr[..., None] if arr.ndim == 2 else arr
    out = np.empty_like(planes)
    for c in range(planes.shape[-1]):
        padded = np.pad(planes[..., c], ((pad_y, pad_y), (pad_x, pad_x)), mode="symmetric")
        out[..., c] = signal.fftconvolve(padded, k, mode="valid")
    return out[..., 0] if arr.ndim == 2 else out


# --------------------------------------------------------------------------- rain


def streak_kernel(length: float, angle: float, width: float) -> np.ndarray:
    """One rain streak: a line of ``length`` px at ``angle`` degrees from vertical
    (positive: leaning right towards the bottom), blurred to ``width``, peak about 1."""
    theta = math.radians(angle)
    line = _line(float(length), math.cos(theta), math.sin(theta))
    line = line / max(line.max(), 1e-12)
    if width > 0:
        line = np.pad(line, 3)
        line = ndimage.gaussian_filter(line, width)
    return (line / max(line.max(), 1e-12)).astype(np.float32)


def rain_streaks(
    img: np.ndarray,
    rng: np.random.Generator,
    density: float = 0.005,
    angle: float = 0.0,
    length: float = 20.0,
    *,
    width: float = 0.8,
    brightness: float = 0.8,
    return_layer: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Screen-blend bright rain streaks over ``img``.

    Streak seeds fall at random pixels with probability ``density``, each with a random
    strength in [0.5, 1]; the seed map is convolved with a :func:`streak_kernel`, scaled by
    ``brightness`` and clipped to [0, 1], giving a rain layer ``R`` that is blended as
    ``1 - (1 - img) (1 - R)`` on every channel: streaks only brighten, most where the image
    is dark. ``angle`` is in degrees from vertical (positive: leaning right as it falls).

    Returns the rained image (float32), and the layer ``R`` (H, W) with ``return_layer``.
    """
    arr = _float_image(img)
    if not 0 <= density <= 1:
        raise ValueError(f"density must be in [0, 1], got {density!r}")
    height, width_px = arr.shape[:2]
    strength = rng.uniform(0.5, 1.0, (height, width_px)) * (
        rng.random((height, width_px)) < density
    )
    kernel = streak_kernel(length, angle, width)
    pad = kernel.shape[0] // 2
    seeds = np.pad(strength, pad, mode="wrap")  # streaks enter from beyond the borders
    layer = signal.fftconvolve(seeds, kernel, mode="valid")
    layer = np.clip(layer * brightness, 0.0, 1.0).astype(np.float32)
    blend_layer = layer if arr.ndim == 2 else layer[..., None]
    out = (1.0 - (1.0 - arr) * (1.0 - blend_layer)).astype(np.float32)
    return (out, layer) if return_layer else out


# --------------------------------------------------------------------------- random models


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_params(task: str, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one random degradation of ``task`` from :data:`DEGRADATION_MODEL`."""
    if task not in TASK_NAMES:
        raise ValueError(f"task must be one of {TASK_NAMES}, got {task!r}")
    model = DEGRADATION_MODEL[task]
    if task == "denoise":
        if rng.random() < model["gaussian_fraction"]:
            return {"noise": "gaussian", "sigma": float(rng.uniform(*model["gaussian_sigma"]))}
        return {
            "noise": "poisson_gaussian",
            "photons": _loguniform(rng, *model["poisson_photons_loguniform"]),
            "read_noise": float(rng.uniform(*model["poisson_read_noise_photons"])),
        }
    if task == "deblur":
        kind = str(rng.choice(model["kernels"]))
        return {
            "kernel_kind": kind,
            "kernel": blur_kernel(kind, rng=rng),
            "sigma": float(rng.uniform(*model["noise_sigma"])),
        }
    angle = float(rng.uniform(*model["angle_deg_from_vertical"]))
    layers = []
    for _ in range(int(rng.integers(model["layers"][0], model["layers"][1] + 1))):
        layers.append({
            "density": _loguniform(rng, *model["density_loguniform"]),
            "angle": angle + float(rng.uniform(-5, 5)),
            "length": float(rng.uniform(*model["length"])),
            "width": float(rng.uniform(*model["width"])),
            "brightness": float(rng.uniform(*model["brightness"])),
        })
    return {"layers": layers}


def apply_params(
    task: str, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Apply a degradation drawn by :func:`sample_params` (noise drawn from ``rng``)."""
    arr = _float_image(img)
    if task == "denoise":
        if params["noise"] == "gaussian":
            return gaussian_noise(arr, params["sigma"], rng)
        return poisson_gaussian(arr, params["photons"], params["read_noise"], rng)
    if task == "deblur":
        return gaussian_noise(blur(arr, params["kernel"]), params["sigma"], rng)
    if task == "derain":
        out = arr
        for layer in params["layers"]:
            out = rain_streaks(out, rng, **layer)
        return out
    raise ValueError(f"task must be one of {TASK_NAMES}, got {task!r}")


def degrade(
    task: str, img: np.ndarray, rng: np.random.Generator, *, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Apply a random degradation of ``task`` (see the module docstring for the ranges).

    Returns a float32 image shaped like ``img``; noise is not clipped (so its statistics
    stay exact), hence values may lie slightly outside [0, 1]. With ``return_params`` the
    drawn parameters (e.g. the blur kernel) are returned too.
    """
    params = sample_params(task, rng)
    out = apply_params(task, img, params, rng)
    return (out, params) if return_params else out


# --------------------------------------------------------------------------- pair stream


def _dihedral_np(batch: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Apply per-sample vertical flip, horizontal flip and transpose to (B, S, S, C)."""
    out = np.where(flips[:, 0, None, None, None], batch[:, ::-1], batch)
    out = np.where(flips[:, 1, None, None, None], out[:, :, ::-1], out)
    return np.where(flips[:, 2, None, None, None], out.transpose(0, 2, 1, 3), out)


class PairGenerator:
    """An endless stream of (degraded, clean) training pairs cut from a clean image pool.

    Parameters
    ----------
    task : {"denoise", "deblur", "derain"}
        The degradation model (:func:`degrade`).
    split : {"train", "val"}
        Which clean pool (:func:`~napari_mprnet.training.synthetic.clean_image_pool`).
    size : int
        Crop side (square).
    seed : int
        Seeds the pool and the sampling; the stream is reproducible for a given device.
    batch_size : int
        Pairs per :meth:`sample`.
    pool_size : int, optional
        Clean images in the pool; default 128 (train) or 32 (val).
    pool_image_size : int, optional
        Side of the pool images; default ``max(2 * size, 256)``.
    channels : {1, 3}
        Channels of the returned batches; grey images are degraded first and then
        replicated, so their channels are identical (3-channel networks).
    device : str or torch.device, optional
        None: numpy arrays, degraded image by image on the CPU. A torch device: crops,
        augmentation and degradation run batched with torch on that device (fast on a GPU)
        and :meth:`sample` returns tensors.
    families : dict, optional
        Family weights of the clean pool.
    corpus : path, optional
        A real-image corpus for the families ``photo`` and ``microscopy``
        (:mod:`~napari_mprnet.training.corpus`).
    """

    def __init__(
        self,
        task: str,
        split: str = "train",
        size: int = 128,
        seed: int = 0,
        *,
        batch_size: int = 16,
        pool_size: int | None = None,
        pool_image_size: int | None = None,
        channels: int = 3,
        device: Any = None,
        families: dict[str, float] | None = None,
        corpus: Any = None,
    ) -> None:
        from .synthetic import clean_image_pool

        if task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, got {task!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if int(size) != size or size < 16:
            raise ValueError(f"size must be an integer >= 16, got {size!r}")
        self.task, self.split, self.size, self.seed = task, split, int(size), int(seed)
        self.batch_size = int(batch_size)
        self.channels = channels
        pool_size = pool_size or (128 if split == "train" else 32)
        side = int(pool_image_size or max(2 * self.size, 256))
        if side < self.size:
            raise ValueError(f"pool_image_size ({side}) must be >= size ({self.size})")
        images = clean_image_pool(split, side, pool_size, seed, families=families,
                                  corpus=corpus)
        self.grey = np.array([img.ndim == 2 for img in images])
        self.pool = np.stack(
            [np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img for img in images]
        )
        # the sampling stream is keyed by (seed, split) and distinct from the pool's streams
        split_key = 0 if split == "train" else 1
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, split_key, 2**31]))
        self.device = None
        if device is not None:
            import torch

            self.device = torch.device(device)
            self._torch_pool = torch.from_numpy(self.pool).to(self.device)
            self._torch_grey = torch.from_numpy(self.grey).to(self.device)
            self._torch_gen = torch.Generator(device=self.device)
            self._torch_gen.manual_seed(int(self._rng.integers(2**62)))

    # ------------------------------------------------------------------ numpy path

    def _crops(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng, s = self._rng, self.size
        side = self.pool.shape[1]
        idx = rng.integers(0, len(self.pool), n)
        top = rng.integers(0, side - s + 1, n)
        left = rng.integers(0, side - s + 1, n)
        ar = np.arange(s)
        rows = (top[:, None] + ar)[:, :, None]
        cols = (left[:, None] + ar)[:, None, :]
        crops = self.pool[idx[:, None, None], rows, cols]  # (n, s, s, 3), vectorised gather
        crops = _dihedral_np(crops, rng.random((n, 3)) < 0.5)
        return np.ascontiguousarray(crops), self.grey[idx]

    def pairs(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``n`` pairs as lists of (H, W) grey or (H, W, 3) colour float32 arrays: what
        :func:`~napari_mprnet.training.data.load_pairs` and ``finetune`` accept (they
        replicate grey planes for 3-channel networks after the noise was added here)."""
        crops, grey = self._crops(int(n))
        degraded, clean = [], []
        for crop, is_grey in zip(crops, grey):
            img = crop[..., 0].copy() if is_grey else crop
            degraded.append(degrade(self.task, img, self._rng))
            clean.append(img)
        return degraded, clean

    def _sample_numpy(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        degraded, clean = self.pairs(n)

        def to_chw(img: np.ndarray) -> np.ndarray:
            chw = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
            if self.channels == 1 and chw.shape[0] == 3:
                raise ValueError("a colour image cannot be sampled for a 1-channel network")
            if chw.shape[0] == 1 and self.channels == 3:
                chw = np.repeat(chw, 3, axis=0)  # replicate AFTER the degradation
            return chw

        return (
            np.stack([to_chw(d) for d in degraded]).astype(np.float32),
            np.stack([to_chw(c) for c in clean]).astype(np.float32),
        )

    # ------------------------------------------------------------------ torch path

    def _sample_torch(self, n: int):
        import torch
        import torch.nn.functional as F

        rng, gen, dev, s = self._rng, self._torch_gen, self.device, self.size
        side = self.pool.shape[1]
        idx = torch.randint(0, len(self.pool), (n,), generator=gen, device=dev)
        top = torch.randint(0, side - s + 1, (n,), generator=gen, device=dev)
        left = torch.randint(0, side - s + 1, (n,), generator=gen, device=dev)
        ar = torch.arange(s, device=dev)
        rows = (top[:, None] + ar)[:, :, None]
        cols = (left[:, None] + ar)[:, None, :]
        x = self._torch_pool[idx[:, None, None], rows, cols].permute(0, 3, 1, 2)  # (n,3,s,s)
        flips = torch.rand((n, 3), generator=gen, device=dev) < 0.5
        x = torch.where(flips[:, 0, None, None, None], x.flip(-2), x)
        x = torch.where(flips[:, 1, None, None, None], x.flip(-1), x)
        x = torch.where(flips[:, 2, None, None, None], x.transpose(-1, -2), x).contiguous()
        grey = self._torch_grey[idx][:, None, None, None]

        def shared_grey(t: torch.Tensor) -> torch.Tensor:
            # grey images: one noise realisation for all three (identical) channels
            return torch.where(grey, t[:, :1].expand_as(t), t)

        def randn() -> torch.Tensor:
            return shared_grey(torch.randn(x.shape, generator=gen, device=dev))

        def grouped_conv(img: torch.Tensor, kernels: list[np.ndarray]) -> torch.Tensor:
            k = max(kk.shape[0] for kk in kernels)
            stack = np.stack([np.pad(kk, (k - kk.shape[0]) // 2) for kk in kernels])
            weight = torch.from_numpy(stack[:, ::-1, ::-1].copy()).to(dev, img.dtype)
            channels = img.shape[1]
            weight = weight[:, None].repeat_interleave(channels, 0)  # (n*c, 1, k, k)
            flat = img.reshape(1, -1, s, s)
            pad = k // 2
            mode = "reflect" if pad < s else "replicate"
            flat = F.pad(flat, (pad, pad, pad, pad), mode=mode)
            return F.conv2d(flat, weight, groups=flat.shape[1]).reshape(img.shape)

        params = [sample_params(self.task, rng) for _ in range(n)]
        if self.task == "denoise":
            gauss = torch.tensor([p["noise"] == "gaussian" for p in params], device=dev)
            sigma = torch.tensor([p.get("sigma", 0.0) for p in params], device=dev)
            photons = torch.tensor([p.get("photons", 1.0) for p in params], device=dev)
            read = torch.tensor([p.get("read_noise", 0.0) for p in params], device=dev)
            view = (n, 1, 1, 1)
            shot = shared_grey(torch.poisson(x.clamp(min=0) * photons.view(view), generator=gen))
            counted = (shot + read.view(view) * randn()) / photons.view(view)
            y = torch.where(gauss.view(view), x + sigma.view(view) * randn(), counted)
        elif self.task == "deblur":
            sigma = torch.tensor([p["sigma"] for p in params], device=dev).view(n, 1, 1, 1)
            y = grouped_conv(x, [p["kernel"] for p in params]) + sigma * randn()
        else:
            y = x
            depth = max(len(p["layers"]) for p in params)
            for level in range(depth):
                layers = [p["layers"][min(level, len(p["layers"]) - 1)] for p in params]
                active = torch.tensor([level < len(p["layers"]) for p in params], device=dev)
                density = torch.tensor([lay["density"] for lay in layers], device=dev)
                bright = torch.tensor([lay["brightness"] for lay in layers], device=dev)
                seeds = torch.rand((n, 1, s, s), generator=gen, device=dev)
                strength = torch.rand((n, 1, s, s), generator=gen, device=dev) * 0.5 + 0.5
                seeds = strength * (seeds < density.view(n, 1, 1, 1))
                kernels = [streak_kernel(la["length"], la["angle"], la["width"]) for la in layers]
                k = max(kk.shape[0] for kk in kernels)
                pad = k // 2
                seeds = F.pad(seeds, (pad, pad, pad, pad), mode="circular")
                stack = np.stack([np.pad(kk, (k - kk.shape[0]) // 2) for kk in kernels])
                weight = torch.from_numpy(stack[:, None, ::-1, ::-1].copy()).to(dev)
                layer = F.conv2d(seeds.reshape(1, n, s + 2 * pad, s + 2 * pad), weight,
                                 groups=n).reshape(n, 1, s, s)
                layer = (layer * bright.view(n, 1, 1, 1)).clamp(0, 1)
                layer = layer * active.view(n, 1, 1, 1)
                y = 1 - (1 - y) * (1 - layer)
        if self.channels == 1:
            x, y = x[:, :1], y[:, :1]
        return y.float().contiguous(), x.float().contiguous()

    # ------------------------------------------------------------------ public

    def sample(self, batch_size: int | None = None):
        """One batch ``(degraded, clean)``, each (B, channels, size, size) float32: numpy
        arrays, or torch tensors on ``device`` when one was given."""
        n = int(batch_size or self.batch_size)
        if self.device is None:
            return self._sample_numpy(n)
        if self.channels == 1 and not bool(self.grey.all()):
            raise ValueError("the pool holds colour images; use channels=3")
        return self._sample_torch(n)

    def __iter__(self) -> Iterator:
        while True:
            yield self.sample()

"""An endless stream of (degraded, clean) training pairs: numpy image by image, or batched
with torch on a device."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .common import TASK_NAMES
from .models import degrade, sample_params
from .rain import streak_kernel


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
        from ..synthetic import clean_image_pool

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

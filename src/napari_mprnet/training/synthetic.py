"""Clean training images: scikit-image's bundled photographs and procedural images.

Every generator is deterministic for a given :class:`numpy.random.Generator` and returns
float32 images in [0, 1], shaped (H, W) for grey or (H, W, 3) for colour.

Families
--------
natural
    The photographs bundled with scikit-image (no download needed), split by name into
    :data:`NATURAL_TRAIN` and :data:`NATURAL_VAL`.
dead_leaves
    Occluding disks with a power-law size distribution (radius density ~ r^-3): the classic
    model of natural-image statistics (scale invariance, sharp edges, flat regions).
fluorescence
    Synthetic fluorescence microscopy: blobs (puncta and nuclei), filaments (persistent random
    walks) and membranes (Voronoi cell borders) on a dim background, blurred by a Gaussian PSF.

:func:`clean_image_pool` mixes the families. Train and validation pools draw every image
from a seed sequence keyed by the split, so they never share a procedural image, and natural
images come from disjoint name lists.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage

__all__ = [
    "FAMILIES",
    "FLUORESCENCE_KINDS",
    "NATURAL_TRAIN",
    "NATURAL_VAL",
    "clean_image_pool",
    "dead_leaves",
    "fluorescence",
    "image_rng",
    "natural_images",
]

#: scikit-image images used for training (all bundled with the package, no download).
NATURAL_TRAIN: tuple[str, ...] = (
    "brick", "cat", "cell", "chelsea", "clock", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)
#: scikit-image images held out for validation and the quality benchmark.
NATURAL_VAL: tuple[str, ...] = ("camera", "astronaut", "coffee")

FLUORESCENCE_KINDS = ("blobs", "filaments", "membranes")
#: Families of :func:`clean_image_pool` and their default mixing weights.
FAMILIES: dict[str, float] = {"natural": 0.4, "dead_leaves": 0.3, "fluorescence": 0.3}
_SPLITS = {"train": 0, "val": 1}
#: Probability that a colour image (natural or dead leaves) is turned grey in the pool.
_GREY_FRACTION = 0.3


def _check_split(split: str) -> int:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return _SPLITS[split]


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    shape = (size, size) if np.isscalar(size) else tuple(size)
    if len(shape) != 2 or any(int(s) != s or s < 8 for s in shape):
        raise ValueError(f"size must be an integer >= 8 or (height, width), got {size!r}")
    return int(shape[0]), int(shape[1])


def image_rng(split: str, seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a pool: keyed by (seed, split, index), so the
    train and validation splits never draw the same random stream."""
    key = _check_split(split)
    return np.random.default_rng(np.random.SeedSequence([int(seed), key, int(index)]))


def _to_unit(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- dead leaves


def dead_leaves(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    *,
    color: bool = False,
    r_min: float | None = None,
    r_max: float | None = None,
    max_disks: int = 20000,
) -> np.ndarray:
    """A dead-leaves image: disks dropped front to back until the canvas is covered.

    Radii follow the scale-invariant density ``r^-3`` between ``r_min`` and ``r_max``
    (defaults 1.5 px and a quarter of the larger side); every disk has one random grey level
    (or colour) with a faint linear shading. Edges are anti-aliased by a slight blur.

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1], (H, W) or (H, W, 3) with ``color=True``.
    """
    height, width = _check_size(size)
    r_min = 1.5 if r_min is None else float(r_min)
    r_max = max(height, width) / 4 if r_max is None else float(r_max)
    channels = 3 if color else 1
    canvas = np.zeros((height, width, channels), np.float32)
    free = np.ones((height, width), bool)
    remaining = free.size
    # inverse-CDF sampling of p(r) ~ r^-3 on [r_min, r_max]
    batch = 512
    drawn = 0
    # the last uncovered pixels would need many tiny disks: stop at 99.5% coverage and let
    # the holes take their nearest leaf's value
    stop_at = int(0.005 * free.size)
    while remaining > stop_at and drawn < max_disks:
        u = rng.random(batch)
        radii = 1.0 / np.sqrt(r_min**-2 - u * (r_min**-2 - r_max**-2))
        centers_y = rng.uniform(-r_max / 2, height + r_max / 2, batch)
        centers_x = rng.uniform(-r_max / 2, width + r_max / 2, batch)
        if color:
            base = rng.random((batch, 1))
            tint = rng.random((batch, 3))
            saturation = rng.random((batch, 1)) ** 2
            values = (1 - saturation) * base + saturation * tint
        else:
            values = rng.random((batch, 1))
        shading = rng.normal(0.0, 0.15, (batch, 2))
        for r, cy, cx, value, shade in zip(radii, centers_y, centers_x, values, shading):
            drawn += 1
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, height)
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, width)
            if y0 >= y1 or x0 >= x1:
                continue
            yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
            xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
            mask = (yy * yy + xx * xx <= r * r) & free[y0:y1, x0:x1]
            if not mask.any():
                continue
            ramp = (shade[0] * yy + shade[1] * xx) / max(r, 1.0) * 0.5
            level = value[None, None, :] * (1.0 + ramp[..., None])
            canvas[y0:y1, x0:x1][mask] = level[mask]
            free[y0:y1, x0:x1] &= ~mask
            remaining -= int(mask.sum())
            if remaining <= stop_at:
                break
    if free.all():
        canvas[:] = rng.random(channels)
    elif remaining > 0:
        _, (iy, ix) = ndimage.distance_transform_edt(free, return_indices=True)
        canvas = canvas[iy, ix]
    canvas = ndimage.gaussian_filter(canvas, sigma=(0.6, 0.6, 0), mode="reflect")
    out = _to_unit(canvas)
    return out if color else out[..., 0]


# --------------------------------------------------------------------------- fluorescence


def _blobs(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((height, width), np.float32)
    area = height * width / 256**2
    # puncta: sub-resolution spots (become PSF-sized after blurring)
    n_puncta = int(rng.integers(0, int(200 * area) + 2))
    ys, xs = rng.integers(0, height, n_puncta), rng.integers(0, width, n_puncta)
    np.add.at(img, (ys, xs), rng.uniform(0.3, 1.0, n_puncta).astype(np.float32) * 6.0)
    # larger blobs (vesicles, nuclei): textured ellipses
    n_blobs = int(rng.integers(2, int(25 * area) + 4))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 2)
    texture /= max(float(np.abs(texture).max()), 1e-6)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry = rng.uniform(3, max(height, width) / 10)
        rx = ry * rng.uniform(0.6, 1.6)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u = ((yy - cy) * c + (xx - cx) * s) / ry
        v = (-(yy - cy) * s + (xx - cx) * c) / rx
        edge = np.clip((np.sqrt(u * u + v * v) - 1.0) * 8.0, -30.0, 30.0)
        inside = 1.0 / (1.0 + np.exp(edge))
        img += inside * rng.uniform(0.2, 0.8) * (1 + 0.4 * texture)
    return img


def _filaments(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((height, width), np.float32)
    area = height * width / 256**2
    n = max(2, int(rng.integers(5, 40) * area))
    length = int(2 * max(height, width))
    step = 0.5  # sub-pixel steps leave no gaps
    stiffness = rng.uniform(0.01, 0.08, (n, 1))
    angles = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(
        rng.standard_normal((n, length)) * stiffness, axis=1
    )
    ys = rng.uniform(0, height, (n, 1)) + np.cumsum(np.sin(angles) * step, axis=1)
    xs = rng.uniform(0, width, (n, 1)) + np.cumsum(np.cos(angles) * step, axis=1)
    stop = rng.integers(length // 8, length, (n, 1))
    keep = (np.arange(length)[None, :] < stop) & (ys >= 0) & (ys < height - 1) & (xs >= 0) & (
        xs < width - 1
    )
    brightness = np.broadcast_to(rng.uniform(0.3, 1.0, (n, 1)), ys.shape)
    np.maximum.at(
        img,
        (np.rint(ys[keep]).astype(int), np.rint(xs[keep]).astype(int)),
        brightness[keep].astype(np.float32),
    )
    return ndimage.gaussian_filter(img, 0.5) * 1.5


def _membranes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    area = height * width / 256**2
    n = max(3, int(rng.integers(6, 50) * area))
    candidates = np.stack([rng.uniform(0, height, 4 * n), rng.uniform(0, width, 4 * n)], 1)
    # cells need some size: two near-coincident seeds would make a border everywhere
    min_dist = 0.5 * math.sqrt(height * width / n)
    kept: list[np.ndarray] = []
    for point in candidates:
        if all(np.hypot(*(point - other)) >= min_dist for other in kept):
            kept.append(point)
            if len(kept) == n:
                break
    seeds = np.array(kept)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # smooth warping gives cells curved borders
    warp = [
        ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 12)
        for _ in range(2)
    ]
    scale = rng.uniform(0, 8) / max(float(np.abs(warp[0]).max()), 1e-6)
    yy, xx = yy + warp[0] * scale, xx + warp[1] * scale
    d = np.sqrt((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2)
    d.sort(axis=-1)
    gap = (d[..., 1] - d[..., 0]) / 2
    thickness = rng.uniform(0.5, 1.5)
    border = np.exp(-0.5 * (gap / thickness) ** 2)
    cytoplasm = rng.uniform(0.0, 0.25)
    return (border + cytoplasm * (gap > thickness)).astype(np.float32)


_KINDS = {"blobs": _blobs, "filaments": _filaments, "membranes": _membranes}


def fluorescence(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    kind: str = "mixed",
    *,
    psf_sigma: float | None = None,
) -> np.ndarray:
    """A synthetic fluorescence image: structures blurred by a Gaussian PSF on a background.

    Parameters
    ----------
    size : int or (int, int)
        Image side, or (height, width).
    rng : numpy.random.Generator
        The source of randomness (the result is a function of its state).
    kind : {"mixed", "blobs", "filaments", "membranes"}
        Structures to draw; "mixed" overlays one to three kinds with random weights.
    psf_sigma : float, optional
        Gaussian PSF width in pixels; default random in [0.8, 2.2].

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1]: background in [0, 0.1], brightest structure in [0.5, 1].
    """
    height, width = _check_size(size)
    if kind == "mixed":
        count = int(rng.integers(1, 4))
        kinds = list(rng.choice(FLUORESCENCE_KINDS, size=count, replace=False))
    elif kind in _KINDS:
        kinds = [kind]
    else:
        raise ValueError(f"kind must be 'mixed' or one of {FLUORESCENCE_KINDS}, got {kind!r}")
    img = np.zeros((height, width), np.float32)
    for name in kinds:
        part = _KINDS[str(name)](height, width, rng)
        img += part / max(float(np.percentile(part, 99.9)), 1e-6) * rng.uniform(0.4, 1.0)
    sigma = rng.uniform(0.8, 2.2) if psf_sigma is None else float(psf_sigma)
    img = ndimage.gaussian_filter(img, sigma, mode="reflect")
    # a high percentile, not the maximum, sets the scale: one hot spot must not darken all
    img /= max(float(np.percentile(img, 99.9)), 1e-6)
    background = rng.uniform(0.0, 0.1)
    peak = rng.uniform(0.5, 1.0)
    return _to_unit(background + (peak - background) * img)


# --------------------------------------------------------------------------- natural images


@lru_cache(maxsize=2)
def _load_natural(split: str) -> dict[str, np.ndarray]:
    from skimage import data as skdata

    names = NATURAL_TRAIN if split == "train" else NATURAL_VAL
    images = {}
    for name in names:
        img = np.asarray(getattr(skdata, name)())
        if img.ndim == 3:
            img = img[..., :3]
        img = img.astype(np.float32) / 255.0
        img.setflags(write=False)
        images[name] = img
    return images


def natural_images(split: str = "train") -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs of a split, as float32 in [0, 1] (read-only).

    ``"train"``: :data:`NATURAL_TRAIN`; ``"val"``: :data:`NATURAL_VAL` (camera, astronaut,
    coffee). Grey images are (H, W), colour images (H, W, 3). Needs scikit-image.
    """
    _check_split(split)
    return dict(_load_natural(split))


def _random_crop(img: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    scale = max(height / img.shape[0], width / img.shape[1])
    if scale > 1:  # too small: enlarge just enough
        zoom = (scale, scale) + (1,) * (img.ndim - 2)
        img = np.clip(ndimage.zoom(img, zoom, order=1), 0, 1)
    top = int(rng.integers(0, img.shape[0] - height + 1))
    left = int(rng.integers(0, img.shape[1] - width + 1))
    crop = img[top : top + height, left : left + width]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if height == width:
        crop = np.rot90(crop, int(rng.integers(0, 4)))
    return np.ascontiguousarray(crop, dtype=np.float32)


def _grey(img: np.ndarray) -> np.ndarray:
    weights = np.array([0.2125, 0.7154, 0.0721], np.float32)  # ITU-R 709 luma
    return (img @ weights).astype(np.float32)


def clean_image_pool(
    split: str = "train",
    size: int | tuple[int, int] = 256,
    count: int = 64,
    seed: int = 0,
    *,
    families: dict[str, float] | None = None,
    corpus: str | None = None,
    return_info: bool = False,
) -> list[np.ndarray] | tuple[list[np.ndarray], list[dict]]:
    """A deterministic mix of clean images from all families.

    Parameters
    ----------
    split : {"train", "val"}
        Natural images come from that split's names; procedural images from seeds keyed by
        the split (:func:`image_rng`), so the two splits are disjoint.
    size : int or (int, int)
        Side of every image (natural images are randomly cropped, flipped and rotated).
    count : int
        Number of images.
    seed : int
        Base seed.
    families : dict, optional
        Family -> weight; default :data:`FAMILIES`. A family with weight 0 is never drawn.
        With ``corpus``, also the real families ``photo`` and ``microscopy``.
    corpus : path, optional
        A real-image corpus (:mod:`~napari_mprnet.training.corpus`): real families are
        cropped from its crops of this split that are at least ``size`` px.
    return_info : bool
        Also return one dict per image (family, source name or kind, colour).

    Returns
    -------
    list of numpy.ndarray
        float32 images in [0, 1]: (H, W) grey or (H, W, 3) colour. Natural and dead-leaves
        images are colour 70% of the time; fluorescence is always grey.
    """
    _check_split(split)
    height, width = _check_size(size)
    from .corpus import REAL_FAMILIES, corpus_images

    weights = dict(FAMILIES if families is None else families)
    known = list(FAMILIES) + (list(REAL_FAMILIES) if corpus is not None else [])
    if set(weights) - set(known) or not weights or sum(weights.values()) <= 0:
        raise ValueError(f"families must map some of {known} to weights, got {families}")
    real = {kind: corpus_images(corpus, split, kind, min_side=max(height, width))
            for kind in REAL_FAMILIES if weights.get(kind, 0) > 0}
    names = list(weights)
    probs = np.array([weights[n] for n in names], np.float64)
    probs /= probs.sum()
    natural = natural_images(split) if weights.get("natural", 0) > 0 else {}
    natural_names = sorted(natural)
    images, info = [], []
    for index in range(int(count)):
        rng = image_rng(split, seed, index)
        family = names[int(rng.choice(len(names), p=probs))]
        if family == "natural":
            source = natural_names[int(rng.integers(len(natural_names)))]
            img = _random_crop(natural[source], height, width, rng)
        elif family in real:
            crop, entry = real[family][int(rng.integers(len(real[family])))]
            source = entry["crop_id"]
            img = _random_crop(crop, height, width, rng)
        elif family == "dead_leaves":
            source = "dead_leaves"
            img = dead_leaves((height, width), rng, color=bool(rng.random() < 0.7))
        else:
            source = str(rng.choice(("mixed",) + FLUORESCENCE_KINDS))
            img = fluorescence((height, width), rng, kind=source)
        if img.ndim == 3 and rng.random() < _GREY_FRACTION:
            img = _grey(img)
        images.append(np.ascontiguousarray(img, dtype=np.float32))
        info.append({"family": family, "source": source, "color": img.ndim == 3,
                     "split": split, "seed": int(seed), "index": index})
    return (images, info) if return_info else images

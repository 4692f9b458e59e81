"""Clean training images: the mix of photographs, procedural images and real corpus images.

Every generator is deterministic for a given :class:`numpy.random.Generator` and returns
float32 images in [0, 1], shaped (H, W) for grey or (H, W, 3) for colour.

Families
--------
natural
    The photographs bundled with scikit-image (no download needed), split by name into
    :data:`NATURAL_TRAIN` and :data:`NATURAL_VAL`.
dead_leaves, fluorescence
    Procedural images (:mod:`~napari_mprnet.training.procedural`).
photo, microscopy
    Real photographs and microscopy fields of a corpus built by ``tools/build_corpus.py``
    (:mod:`~napari_mprnet.training.corpus`), when :func:`clean_image_pool` is given one.

:func:`clean_image_pool` mixes the families. Train and validation pools draw every image
from a seed sequence keyed by the split, so they never share a procedural image, and natural
images come from disjoint name lists.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from .procedural import FLUORESCENCE_KINDS, check_size, dead_leaves, fluorescence

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

#: Families of :func:`clean_image_pool` and their default mixing weights.
FAMILIES: dict[str, float] = {"natural": 0.4, "dead_leaves": 0.3, "fluorescence": 0.3}
_SPLITS = {"train": 0, "val": 1}
#: Probability that a colour image (natural or dead leaves) is turned grey in the pool.
_GREY_FRACTION = 0.3


def _check_split(split: str) -> int:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return _SPLITS[split]


def image_rng(split: str, seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a pool: keyed by (seed, split, index), so the
    train and validation splits never draw the same random stream."""
    key = _check_split(split)
    return np.random.default_rng(np.random.SeedSequence([int(seed), key, int(index)]))


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
    height, width = check_size(size)
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

"""Pure preparation steps of the real-image corpus (no network): downscaling, gradient-energy
rejection, near-duplicate removal, the split by scene, and the manifest.

Used by ``tools/build_corpus.py``; tested with small synthetic inputs in
``tests/training/test_corpus.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "benchmark")
#: Mean gradient magnitude (per px, images in [0, 1]) below which a photo crop is "flat".
PHOTO_MIN_ENERGY = 0.012
#: A microscopy crop is kept unless its range is below this (dark background is wanted).
MICROSCOPY_MIN_RANGE = 0.03
DARK_LEVEL = 0.1


@dataclass
class PreparedImage:
    image_id: str
    scene: str
    kind: str  # "photo" or "microscopy"
    image: np.ndarray  # float32 in [0, 1], (H, W) or (H, W, 3)
    info: dict = field(default_factory=dict)


def box_downscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks (the border remainder dropped)."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if factor == 1:
        return np.asarray(img, np.float32)
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    if h == 0 or w == 0:
        raise ValueError(f"image {img.shape[:2]} is smaller than the factor {factor}")
    cut = np.asarray(img[:h, :w], np.float64)
    shape = (h // factor, factor, w // factor, factor) + cut.shape[2:]
    return cut.reshape(shape).mean(axis=(1, 3)).astype(np.float32)


#: The highest photon count the corpus is used at (intensity 1 collects this many photons) and
#: its read noise: a field's own noise is judged against the noise added there.
REFERENCE_PHOTONS, REFERENCE_READ_NOISE = 1000.0, 2.0
#: A microscopy field is "clean" when its own noise sd is at most this fraction of that
#: added noise (its own variance at most 36% of the added variance).
MAX_OWN_NOISE_RATIO = 0.6
#: Binning stops before a field would get smaller than this (px).
MIN_FIELD_SIDE = 128


def own_noise_ratio(img: np.ndarray) -> float:
    """The field's own noise sd (blind estimate at its mean) over the sd that Poisson-Gaussian
    noise at ``REFERENCE_PHOTONS`` photons adds there: a "clean" reference needs it small."""
    from napari_mprnet.engine.noise import estimate_noise

    grey = np.asarray(_grey(np.asarray(img, np.float32)), np.float32)
    gain, offset = estimate_noise(grey)
    mean = float(grey.mean())
    own = max(gain * mean + offset, 0.0)
    added = mean / REFERENCE_PHOTONS + (REFERENCE_READ_NOISE / REFERENCE_PHOTONS) ** 2
    return float(np.sqrt(own / added))


def bin_until_clean(img: np.ndarray, ratio: float | None = None) -> tuple[np.ndarray, int, float]:
    """Box-bin a microscopy field 2x2 at a time while its own noise is above
    ``MAX_OWN_NOISE_RATIO`` of the added noise and it stays at least ``MIN_FIELD_SIDE`` px.

    Returns the field, the extra binning factor and its final own-noise ratio (the ratio of
    the field as given may be passed in when it is already known).
    """
    factor = 1
    ratio = own_noise_ratio(img) if ratio is None else ratio
    while ratio > MAX_OWN_NOISE_RATIO and min(img.shape[:2]) >= 2 * MIN_FIELD_SIDE:
        img = box_downscale(img, 2)
        factor *= 2
        ratio = own_noise_ratio(img)
    return img, factor, ratio


def leave_out_noisy_fields(images: list[PreparedImage]
                           ) -> tuple[list[PreparedImage], list[str]]:
    """The images without the fields whose ``own_noise_ratio`` (set by the preparation) is
    above ``MAX_OWN_NOISE_RATIO``, and the ids (with ratios) of those left out."""
    kept, left_out = [], []
    for img in images:
        ratio = img.info.get("own_noise_ratio", 0.0)
        if ratio > MAX_OWN_NOISE_RATIO:
            left_out.append(f"{img.image_id} ({ratio:.2f})")
        else:
            kept.append(img)
    return kept, left_out


def _grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else img.mean(axis=-1)


def gradient_energy(img: np.ndarray) -> float:
    """Mean gradient magnitude of the grey image (forward differences), per pixel."""
    g = _grey(np.asarray(img, np.float32))
    gy, gx = np.diff(g, axis=0)[:, :-1], np.diff(g, axis=1)[:-1, :]
    return float(np.sqrt(gx * gx + gy * gy).mean())


def keep_crop(crop: np.ndarray, kind: str) -> bool:
    """Photos: reject flat or out-of-focus crops; microscopy: reject only empty crops."""
    if kind == "photo":
        return gradient_energy(crop) >= PHOTO_MIN_ENERGY
    return float(crop.max() - crop.min()) >= MICROSCOPY_MIN_RANGE


def perceptual_hash(img: np.ndarray, side: int = 16) -> np.ndarray:
    """Bits of a ``side`` x ``side`` block-mean thumbnail above its median (size invariant)."""
    g = _grey(np.asarray(img, np.float32))
    rows = np.array_split(np.arange(g.shape[0]), side)
    cols = np.array_split(np.arange(g.shape[1]), side)
    thumb = np.array([[g[r[0] : r[-1] + 1, c[0] : c[-1] + 1].mean() for c in cols]
                      for r in rows])
    return (thumb > np.median(thumb)).ravel()


def dedupe(images: list[PreparedImage], max_distance: int = 24
           ) -> tuple[list[PreparedImage], list[str]]:
    """Drop near-duplicates (same photo at another size or in another package).

    Two images of the same kind and similar aspect ratio whose perceptual hashes differ in at
    most ``max_distance`` of 256 bits are duplicates; the larger is kept. Images of one scene
    (stack planes, stereo pairs) are never compared: they share a split anyway.
    """
    order = sorted(range(len(images)), key=lambda i: (-images[i].image.size,
                                                      images[i].image_id))
    kept: list[int] = []
    hashes: dict[int, np.ndarray] = {}
    dropped: list[str] = []
    for i in order:
        img = images[i]
        h = perceptual_hash(img.image)
        aspect = img.image.shape[1] / img.image.shape[0]
        duplicate = False
        for j in kept:
            other = images[j]
            if other.kind != img.kind or other.scene == img.scene:
                continue
            if abs(other.image.shape[1] / other.image.shape[0] - aspect) > 0.05 * aspect:
                continue
            if int(np.count_nonzero(hashes[j] != h)) <= max_distance:
                duplicate = True
                break
        if duplicate:
            dropped.append(img.image_id)
        else:
            kept.append(i)
            hashes[i] = h
    kept.sort()
    return [images[i] for i in kept], dropped


def _scene_key(scene: str) -> str:
    return hashlib.sha256(scene.encode()).hexdigest()


def is_dark_8bit_field(img: PreparedImage, dark_fraction: float = 0.4) -> bool:
    """An 8-bit microscopy field with a large flat dark background."""
    return (img.kind == "microscopy" and img.info.get("bit_depth") == 8
            and img.image.ndim == 2 and float((img.image < DARK_LEVEL).mean()) >= dark_fraction)


def split_scenes(images: list[PreparedImage], *, benchmark_photos: int = 24,
                 val_photos: int = 12, benchmark_fields: int = 5, val_fields: int = 3,
                 min_side: int = 256) -> dict[str, str]:
    """Scene id -> split, drawn per scene (never per image or crop), deterministically.

    Photos: scenes whose every image is at least ``min_side`` px (room for benchmark crops)
    are taken in the order of a hash of their id: the first ``benchmark_photos`` go to
    "benchmark", the next ``val_photos`` to "val", all others to "train". Microscopy:
    held-out fields come round-robin from the sources that have at least two scenes, a source
    giving at most half of its scenes; the first benchmark field is an 8-bit field with a
    large dark background when there is one, and at least one such field stays in training.
    """
    scenes: dict[str, list[PreparedImage]] = {}
    for img in images:
        scenes.setdefault(img.scene, []).append(img)
    split = {scene: "train" for scene in scenes}
    photo_scenes = sorted((s for s, imgs in scenes.items() if imgs[0].kind == "photo"),
                          key=_scene_key)
    eligible = [s for s in photo_scenes
                if all(min(i.image.shape[:2]) >= min_side for i in scenes[s])]
    for s in eligible[:benchmark_photos]:
        split[s] = "benchmark"
    for s in eligible[benchmark_photos : benchmark_photos + val_photos]:
        split[s] = "val"

    by_source: dict[str, list[str]] = {}
    for s in sorted((s for s, imgs in scenes.items() if imgs[0].kind == "microscopy"),
                    key=_scene_key):
        by_source.setdefault(scenes[s][0].info.get("source", ""), []).append(s)
    dark = sorted((s for s in split if all(is_dark_8bit_field(i) for i in scenes[s])),
                  key=_scene_key)
    budget = {src: len(ss) // 2 for src, ss in by_source.items() if len(ss) >= 2}
    queues = {src: list(by_source[src]) for src in sorted(budget)}
    wanted = [("benchmark", benchmark_fields), ("val", val_fields)]
    if len(dark) >= 2:  # one dark 8-bit field first into the benchmark, one kept for training
        first = dark[0]
        src = scenes[first][0].info.get("source", "")
        if budget.get(src, 0) > 0:
            split[first] = "benchmark"
            budget[src] -= 1
            queues[src].remove(first)
            wanted[0] = ("benchmark", benchmark_fields - 1)
            keep = dark[-1]  # never held out
            queue = queues.get(scenes[keep][0].info.get("source", ""), [])
            if keep in queue:
                queue.remove(keep)
    for name, count in wanted:
        while count > 0 and any(budget[s] > 0 and queues[s] for s in queues):
            for src, queue in queues.items():
                if count > 0 and budget[src] > 0 and queue:
                    split[queue.pop(0)] = name
                    budget[src] -= 1
                    count -= 1
    return split


@dataclass
class Crop:
    crop_id: str
    image: PreparedImage
    box: tuple[int, int, int, int]  # top, left, height, width

    def pixels(self) -> np.ndarray:
        t, left, h, w = self.box
        return self.image.image[t : t + h, left : left + w]


def _starts(length: int, crop: int) -> list[int]:
    if length <= crop:
        return [0]
    n = -(-length // crop)
    return sorted({round(float(v)) for v in np.linspace(0, length - crop, n)})


def tile_crops(img: PreparedImage, crop: int = 256, min_side: int = 128) -> list[Crop]:
    """Crops of side ``crop`` covering the image (evenly spaced, overlapping as needed),
    the rejected ones (see :func:`keep_crop`) left out; images under ``min_side`` give none."""
    h, w = img.image.shape[:2]
    if min(h, w) < min_side:
        return []
    out = []
    for top in _starts(h, crop):
        for left in _starts(w, crop):
            box = (top, left, min(crop, h), min(crop, w))
            c = Crop(f"{img.image_id}@{top},{left}", img, box)
            if keep_crop(c.pixels(), img.kind):
                out.append(c)
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.,@" else "_" for ch in name)


def write_corpus(cache: Path, crops: list[Crop], splits: dict[str, str],
                 dropped: list[str] | None = None) -> dict:
    """Write the crops (uint16 .npy) and ``manifest.json`` under ``cache`` (crops replaced)."""
    root = Path(cache) / "crops"
    if root.exists():
        shutil.rmtree(root)
    entries = []
    counts: dict[str, dict[str, dict[str, int]]] = {}
    scenes_seen: dict[tuple[str, str], set] = {}
    for c in crops:
        split = splits[c.image.scene]
        rel = Path("crops") / split / c.image.kind / (_safe(c.crop_id) + ".npy")
        (Path(cache) / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.round(np.clip(c.pixels(), 0, 1) * 65535).astype(np.uint16)
        np.save(Path(cache) / rel, pixels)
        entries.append({"file": rel.as_posix(), "crop_id": c.crop_id,
                        "image_id": c.image.image_id, "scene": c.image.scene,
                        "kind": c.image.kind, "split": split, "shape": list(pixels.shape),
                        "box": list(c.box), "gradient_energy": round(gradient_energy(
                            c.pixels()), 5),
                        "dark_fraction": round(float((c.pixels() < DARK_LEVEL).mean()), 3),
                        **c.image.info})
        bucket = counts.setdefault(split, {}).setdefault(c.image.kind, {"crops": 0,
                                                                        "scenes": 0})
        bucket["crops"] += 1
        scenes_seen.setdefault((split, c.image.kind), set()).add(c.image.scene)
    for (split, kind), seen in scenes_seen.items():
        counts[split][kind]["scenes"] = len(seen)
    manifest = {"format": "napari-mprnet-corpus", "version": 2, "counts": counts,
                "dropped_duplicates": list(dropped or []), "entries": entries}
    tmp = Path(cache) / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, Path(cache) / "manifest.json")
    return manifest

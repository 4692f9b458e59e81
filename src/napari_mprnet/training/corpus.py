"""Real clean images for training: the corpus built by ``tools/build_corpus.py``.

The corpus is a folder (by default ``~/.cache/napari-mprnet/corpus``; never shipped) holding
prepared crops of real photographs and real microscopy fields as uint16 ``.npy`` files and a
``manifest.json`` that gives each crop's source, licence, scene and split ("train", "val",
"benchmark"). The split was drawn per scene, so a scene's crops all lie in one split.

Families of :func:`~napari_mprnet.training.synthetic.clean_image_pool` drawn from here:
``photo`` (photographs) and ``microscopy`` (fields).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["REAL_FAMILIES", "corpus_images", "default_corpus_dir", "read_manifest"]

#: Families of real images, by the manifest's ``kind``.
REAL_FAMILIES = ("photo", "microscopy")
CORPUS_FORMAT = "napari-mprnet-corpus"


def default_corpus_dir() -> Path:
    """``$NAPARI_MPRNET_CORPUS``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)
    ``/napari-mprnet/corpus``."""
    env = os.environ.get("NAPARI_MPRNET_CORPUS")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-mprnet" / (
        "corpus")


def read_manifest(folder: str | os.PathLike) -> dict:
    """The corpus manifest of ``folder``.

    Raises
    ------
    ValueError
        No manifest there, or not a corpus manifest (build it with tools/build_corpus.py).
    """
    path = Path(folder).expanduser() / "manifest.json"
    if not path.is_file():
        raise ValueError(f"no corpus at '{folder}' (manifest.json missing): build it with "
                         "'python tools/build_corpus.py --cache FOLDER'")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != CORPUS_FORMAT:
        raise ValueError(f"'{path}' is not a napari-mprnet corpus manifest")
    return manifest


@lru_cache(maxsize=8)
def _load(folder: str, split: str, kind: str, min_side: int, _stamp: int) -> tuple:
    # ``_stamp`` (the manifest's mtime) makes a rebuilt corpus a new cache entry
    manifest = read_manifest(folder)
    out = []
    for entry in manifest["entries"]:
        if entry["split"] != split or entry["kind"] != kind:
            continue
        if min(entry["shape"][:2]) < min_side:
            continue
        arr = np.load(Path(folder) / entry["file"]).astype(np.float32) / 65535.0
        arr.setflags(write=False)
        out.append((arr, entry))
    return tuple(out)


def corpus_images(folder: str | os.PathLike, split: str, kind: str, min_side: int = 0
                  ) -> list[tuple[np.ndarray, dict]]:
    """Crops of one split and kind as read-only float32 arrays in [0, 1], with their entries.

    Parameters
    ----------
    folder : path
        The corpus folder (holding manifest.json).
    split : {"train", "val", "benchmark"}
    kind : {"photo", "microscopy"}
    min_side : int
        Leave out crops smaller than this.
    """
    if kind not in REAL_FAMILIES:
        raise ValueError(f"kind must be one of {REAL_FAMILIES}, got {kind!r}")
    if split not in ("train", "val", "benchmark"):
        raise ValueError(f"split must be 'train', 'val' or 'benchmark', got {split!r}")
    folder = Path(folder).expanduser()
    try:
        stamp = (folder / "manifest.json").stat().st_mtime_ns
    except OSError:
        stamp = 0  # read_manifest says what is missing
    found = list(_load(str(folder), split, kind, int(min_side), stamp))
    if not found:
        raise ValueError(f"the corpus at '{folder}' has no {kind} crops of at least "
                         f"{min_side} px in its {split!r} split")
    return found

"""The on-disk cache of networks converted to OpenVINO: one folder per conversion.

An entry is the folder ``<cache>/openvino/mprnet_<digest>`` holding ``model.xml`` and
``model.bin`` (OpenVINO's IR, weights kept in float32), ``reference.npz`` (the eager fp32
network's three outputs on the engine's probe picture, which a loaded network is checked
against) and ``manifest.json``: the key material (the weights' SHA-256 with the
configuration, ``split_patches``, the network code, the OpenVINO and torch versions) and the
SHA-256 of the other files. The digest in the folder name is the hash of the key material,
so a change of any of them makes a new entry.

An entry is written to a temporary folder and renamed into place in one step
(:func:`~napari_mprnet.io.atomic.atomic_output`), so a reader never sees half an entry. It is
trusted only when its manifest holds the same key material and both files still have their
recorded hashes; anything else (a truncated or altered file, a missing manifest) is reported
as :class:`DamagedEntry` and the caller converts the network again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...io.atomic import OutputExistsError, atomic_output

__all__ = ["DamagedEntry", "entry_folder", "file_sha256", "key_digest", "load_entry",
           "save_entry"]

#: Changes when the layout of an entry changes (old entries are then ignored).
ENTRY_FORMAT = 1
_FILES = ("model.xml", "model.bin", "reference.npz")


class DamagedEntry(Exception):
    """A cache entry exists but cannot be trusted (it is rebuilt)."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(4 * 2**20), b""):
            digest.update(piece)
    return digest.hexdigest()


def key_digest(material: dict) -> str:
    """Hash of the key material (the entry's name)."""
    return hashlib.sha256(json.dumps({**material, "format": ENTRY_FORMAT},
                                     sort_keys=True).encode()).hexdigest()[:32]


def entry_folder(root: Path, material: dict) -> Path:
    """The folder of the entry for ``material`` under ``root``."""
    return Path(root) / f"mprnet_{key_digest(material)}"


def load_entry(core: Any, folder: Path, material: dict
               ) -> tuple[Any, list[np.ndarray]] | None:
    """The converted network stored in ``folder`` (an ``openvino.Model``) and its reference
    outputs, None when there is no entry.

    Raises
    ------
    DamagedEntry
        When the folder exists but its manifest, key or file hashes do not match.
    """
    if not folder.exists():
        return None
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("key") != {**material, "format": ENTRY_FORMAT}:
            raise DamagedEntry("its key differs from this network's")
        for name in _FILES:
            if file_sha256(folder / name) != manifest["sha256"][name]:
                raise DamagedEntry(f"{name} does not match its recorded SHA-256")
        with np.load(folder / "reference.npz") as stored:
            reference = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        return core.read_model(str(folder / "model.xml"), str(folder / "model.bin")), reference
    except DamagedEntry:
        raise
    except Exception as error:
        raise DamagedEntry(f"{type(error).__name__}: {error}") from error


def save_entry(ov: Any, model: Any, reference: list[np.ndarray], folder: Path,
               material: dict, replace: bool = False) -> bool:
    """Write ``model`` (an ``openvino.Model``) and its ``reference`` outputs as the entry
    ``folder``; an existing entry is replaced only with ``replace`` (a damaged one), else
    kept (another process wrote it meanwhile). Returns whether this call wrote it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(folder, overwrite=replace, directory=True) as tmp:
            _write(ov, model, reference, tmp, material)
    except OutputExistsError:
        return False
    return True


def _write(ov: Any, model: Any, reference: list[np.ndarray], tmp: Path,
           material: dict) -> None:
    """The entry's files in the (temporary) folder ``tmp``, the manifest last."""
    ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
    np.savez(tmp / "reference.npz", *reference)
    manifest = {"key": {**material, "format": ENTRY_FORMAT},
                "sha256": {name: file_sha256(tmp / name) for name in _FILES}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")

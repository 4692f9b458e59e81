"""Opening bioimage.io model packages (a ``.zip``, or a folder holding ``rdf.yaml``) as MPRNets.

:func:`napari_mprnet.load_model` hands any path that :func:`is_package` recognises to
:func:`read_package`, which returns what a model file gives (parameters, metadata,
configuration):

- a package exported by napari-mprnet: the model file it carries as an attachment
  (``napari_mprnet.safetensors``: weights, configuration and metadata, checked against the
  SHA-256 the package lists), so the model comes back bit for bit;
- another bioimage.io model whose ``pytorch_state_dict`` weights are an MPRNet's state dict:
  those parameters (the configuration is then inferred from their shapes), with the task read
  from its tags and a fixed or percentile input map read from its preprocessing;
- anything else is refused in one sentence saying what the package is and why it cannot run
  here.

Nothing in a package is executed: weights are read with ``torch.load(weights_only=True)``
or as safetensors; the architecture source a package carries is never imported.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ..model.from_state import infer_config, strip_prefixes

__all__ = ["is_package", "read_package"]

#: The names a bioimage.io description file has (format 0.5 also allows NAME.bioimageio.yaml).
_DESCRIPTION_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: The model file a napari-mprnet package carries as an attachment.
_OUR_MODEL_FILE = "napari_mprnet.safetensors"
_TASK_TAGS = {"denoise": ("denoise", "denoising"), "deblur": ("deblur", "deblurring"),
              "derain": ("derain", "deraining")}


def _is_description(name: str) -> bool:
    name = PurePosixPath(name).name
    return name in _DESCRIPTION_NAMES or name.endswith(".bioimageio.yaml")


class _Package:
    """The files of a package, read from its zip or its folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        if path.is_file() and _is_description(path.name):
            self.root, self.description = path.parent, path.name
        elif path.is_dir():
            found = sorted(p.name for p in path.iterdir() if _is_description(p.name))
            self.root, self.description = path, (found[0] if found else None)
        else:
            self.root = None
            self.zip = zipfile.ZipFile(path)
            names = [n for n in self.zip.namelist() if _is_description(n)]
            top = [n for n in names if "/" not in n]
            one_folder = [n for n in names if n.count("/") == 1]  # a zipped package folder
            chosen = sorted(top or one_folder)
            self.description = chosen[0] if chosen else None
            if self.description and "/" in self.description:
                folder, self.description = self.description.rsplit("/", 1)
                self.prefix = folder + "/"

    def read(self, name: str) -> bytes:
        """The bytes of the package file ``name`` (relative to the description)."""
        name = str(name).replace("\\", "/")
        while name.startswith("./"):
            name = name[2:]
        if name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise ValueError(f"the file name '{name}' leaves the package")
        if self.zip is not None:
            try:
                return self.zip.read(self.prefix + name)
            except KeyError:
                raise FileNotFoundError(name) from None
        return (self.root / name).read_bytes()

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def is_package(path: str | Path) -> bool:
    """Whether ``path`` is a bioimage.io package: a folder holding ``rdf.yaml`` (or
    ``bioimageio.yaml``), such a file itself, or a zip with one at its top (or in its one
    folder)."""
    path = Path(path)
    try:
        if path.is_dir() or (path.is_file() and _is_description(path.name)):
            return _Package(path).description is not None
        if not (path.is_file() and zipfile.is_zipfile(path)):
            return False
        package = _Package(path)
    except (OSError, zipfile.BadZipFile):
        return False
    try:
        return package.description is not None
    finally:
        package.close()


def _refuse(path: Path, text: str) -> ValueError:
    return ValueError(f"'{path}' {text}")


def _description(package: _Package, path: Path) -> dict:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise _refuse(path, "is a bioimage.io package; reading it needs PyYAML "
                            "(pip install pyyaml)") from None
    try:
        rdf = yaml.safe_load(package.read(package.description))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise _refuse(path, f"is a bioimage.io package whose {package.description} is not "
                            f"readable YAML ({reason})") from None
    if not isinstance(rdf, dict):
        raise _refuse(path, f"is a bioimage.io package whose {package.description} is not a "
                            "description (a YAML mapping)")
    return rdf


def read_package(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """The parameters, metadata and configuration (None: to be inferred) of the MPRNet in a
    bioimage.io package.

    Raises
    ------
    ValueError
        One sentence naming the package, what it is and why it cannot run here.
    """
    path = Path(path)
    package = _Package(path)
    try:
        if package.description is None:
            raise _refuse(path, "is not a bioimage.io package (no rdf.yaml in it)")
        rdf = _description(package, path)
        kind, name = rdf.get("type", "?"), str(rdf.get("name") or "unnamed")
        if kind != "model":
            raise _refuse(path, f"is a bioimage.io {kind} '{name}', not a model; "
                                "napari-mprnet runs MPRNet models")
        ours = _attachment(rdf, _OUR_MODEL_FILE)
        if ours is not None and isinstance((rdf.get("config") or {}).get("napari-mprnet"),
                                           dict):
            return _read_ours(package, path, name, ours)
        return _read_state_dict(package, path, name, rdf)
    finally:
        package.close()


def _attachment(rdf: dict, file_name: str) -> dict | None:
    for entry in rdf.get("attachments") or []:
        source = entry.get("source") if isinstance(entry, dict) else entry
        if isinstance(source, str) and PurePosixPath(source).name == file_name:
            return entry if isinstance(entry, dict) else {"source": source}
    return None


def _file(package: _Package, path: Path, name: str, entry: dict, what: str) -> bytes:
    source = str(entry.get("source", ""))
    if source.startswith(("http://", "https://")):
        raise _refuse(path, f"is a bioimage.io model '{name}' whose {what} are not inside the "
                            f"package ({source}); download the package with its files first")
    try:
        data = package.read(source)
    except (OSError, ValueError):
        raise _refuse(path, f"is a bioimage.io model '{name}' without its {what} "
                            f"('{source}' is missing)") from None
    expected = entry.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != str(expected):
        raise _refuse(path, f"is a bioimage.io model '{name}' whose {what} ('{source}') are "
                            "damaged (their SHA-256 differs from the one the package lists)")
    return data


def _read_ours(package: _Package, path: Path, name: str,
               entry: dict) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """The model file a napari-mprnet package carries: weights, configuration, metadata."""
    data = _file(package, path, name, entry, "napari-mprnet model file")
    try:
        from safetensors.torch import load as load_safetensors

        state = load_safetensors(data)
        header_size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_size]).get("__metadata__") or {}
        config = json.loads(header["config"]) if "config" in header else None
        metadata = json.loads(header["metadata"]) if "metadata" in header else {}
    except Exception as err:  # noqa: BLE001 - damaged bytes raise anything
        reason = f"{type(err).__name__}: {err}"[:200]
        raise _refuse(path, f"is a bioimage.io model '{name}' whose napari-mprnet model file "
                            f"is not readable ({reason})") from None
    if not isinstance(metadata, dict) or (config is not None and not isinstance(config, dict)):
        raise _refuse(path, f"is a bioimage.io model '{name}' whose napari-mprnet model file "
                            "has a malformed header")
    return state, metadata, config


def _read_state_dict(package: _Package, path: Path, name: str,
                     rdf: dict) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), dict) else {}
    formats = [str(k) for k, v in weights.items() if v]
    entry = weights.get("pytorch_state_dict")
    if not isinstance(entry, dict):
        have = ", ".join(formats) if formats else "no"
        only = " only" if formats else ""
        raise _refuse(path, f"is a bioimage.io model '{name}' with {have} weights{only}; "
                            "napari-mprnet runs MPRNet PyTorch state dicts "
                            "(pytorch_state_dict weights)")
    data = _file(package, path, name, entry, "PyTorch weights")
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - damaged or code-carrying files raise anything
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else \
            type(err).__name__
        raise _refuse(path, f"is a bioimage.io model '{name}' whose PyTorch weights are not "
                            f"a readable state dict ({reason})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    state = {str(k): v for k, v in (loaded.items() if isinstance(loaded, dict) else [])
             if isinstance(v, torch.Tensor)}
    architecture = entry.get("architecture")
    callable_name = (architecture.get("callable") if isinstance(architecture, dict)
                     else str(architecture or "")).split(":")[-1] or "unknown"
    try:
        infer_config(strip_prefixes(state), f"'{path}'")
    except ValueError:
        raise _refuse(path, f"is a bioimage.io model '{name}' whose PyTorch weights are not an "
                            f"MPRNet's (architecture {callable_name}); napari-mprnet runs "
                            "MPRNet PyTorch state dicts") from None
    return state, _foreign_metadata(rdf, name, path), None


def _foreign_metadata(rdf: dict, name: str, path: Path) -> dict:
    """What napari-mprnet can use of another package's description."""
    tags = {str(t).lower() for t in rdf.get("tags") or []}
    task = next((t for t, words in _TASK_TAGS.items() if tags & set(words)), None)
    meta: dict[str, Any] = {
        "summary": str(rdf.get("description") or "")[:500],
        "provenance": {"bioimageio_package": path.name, "bioimageio_name": name,
                       "bioimageio_id": rdf.get("id"),
                       "authors": ", ".join(str(a.get("name")) for a in rdf.get("authors")
                                            or [] if isinstance(a, dict)) or None},
    }
    if task:
        meta["task"] = task
    norm = _input_map(rdf)
    if norm:
        meta["normalization"] = norm
    return meta


def _input_map(rdf: dict) -> dict | None:
    """The first input's preprocessing as a stored normalisation (per-image percentiles or
    one fixed linear map), or None."""
    inputs = rdf.get("inputs") or []
    steps = inputs[0].get("preprocessing") or [] if inputs and isinstance(inputs[0],
                                                                          dict) else []
    for step in steps:
        if not isinstance(step, dict):
            continue
        step_id, kwargs = step.get("id") or step.get("name"), step.get("kwargs") or {}
        if step_id == "scale_range":
            low, high = float(kwargs.get("min_percentile", 0.0)), float(
                kwargs.get("max_percentile", 100.0))
            return {"mode": "percentile", "low": 0.0, "high": 1.0, "percentiles": [low, high]}
        if step_id == "scale_linear":
            try:
                gain, offset = float(kwargs.get("gain", 1.0)), float(kwargs.get("offset", 0.0))
            except (TypeError, ValueError):  # per-channel lists: not one map
                return None
            if gain > 0:
                return {"mode": "range", "low": -offset / gain, "high": (1.0 - offset) / gain,
                        "requested": "given"}
    return None

"""Reading and writing MPRNet model files.

Formats read by :func:`load_model`:

- safetensors files written by :func:`save_model` (configuration and metadata embedded) or
  by anyone else (configuration inferred from the tensor shapes);
- PyTorch checkpoints (``.pth``/``.pt``): the official releases' ``{"state_dict": ...}``,
  with or without ``module.`` prefixes and extra entries such as ``epoch``/``optimizer``,
  and plain state dicts. They are read with ``torch.load(weights_only=True)``, which never
  executes code stored in the file;
- bioimage.io model packages (a ``.zip``, or a folder holding ``rdf.yaml``) of an MPRNet:
  read by :mod:`napari_mprnet.bioimageio.importing`.

Every problem with a file (unreadable bytes, malformed or wrong-type configuration or metadata,
tensors without data, NaN or infinite weights, impossible stored normalisation) is one
``ValueError`` naming the file and what is wrong.

The names "denoise", "deblur" and "derain" always mean the bundled, checksummed models; a local
file of such a name is used only when given as a path (``"./denoise"``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as _load_safetensors
from safetensors.torch import save_file as _save_safetensors

from .engine.devices import resolve_device
from .io.atomic import atomic_output
from .model.arch import MPRNet
from .model.from_state import infer_config, model_from_state_dict, strip_prefixes
from .weights_checks import (
    check_metadata,
    check_tensors,
    describe_safetensors_error,
    describe_torch_error,
    plain_text,
    shown_path,
)

__all__ = ["FORMAT_NAME", "infer_config", "load_model", "load_state_dict", "model_file",
           "save_model"]

FORMAT_NAME = "napari-mprnet"
FORMAT_VERSION = "1"
_SAFETENSORS_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")


def _fail(path: Path | str, problem: str) -> ValueError:
    return ValueError(f"cannot load model file '{shown_path(path)}': {problem}")


# --------------------------------------------------------------------------- reading files


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = _load_safetensors(str(path), device="cpu")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _fail(path, describe_safetensors_error(err)) from None
    return tensors, header


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - damaged bytes raise anything (IndexError too)
        raise _fail(path, describe_torch_error(path, err)) from None


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len < 100_000_000 and head[8:9] == b"{"


def _extract_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Find the tensors in a loaded checkpoint; return them and any stored extras."""
    extras: dict = {}
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(
                isinstance(v, torch.Tensor) for v in inner.values()
            ):
                extras = {k: v for k, v in obj.items() if k in ("config", "metadata")}
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise _fail(path, f"expected a state dict, found a {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise _fail(path, "it contains no tensors")
    return tensors, extras


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """Read a model file without building a network.

    Returns
    -------
    state : dict
        Parameter name -> tensor, prefixes such as ``module.`` removed.
    metadata : dict
        Metadata stored by :func:`save_model` (empty for foreign files).
    config : dict or None
        The stored configuration, if the file carries one.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file '{path}' does not exist")
    from .bioimageio.importing import is_package, read_package

    metadata: dict = {}
    config: dict | None = None
    if is_package(path):  # a bioimage.io package (.zip, or a folder holding rdf.yaml)
        state, metadata, config = read_package(path)
    elif path.is_dir():
        raise _fail(path, "it is a folder, not a file (nor a bioimage.io package with "
                          "rdf.yaml)")
    elif path.stat().st_size == 0:
        raise _fail(path, "the file is empty")
    elif path.suffix.lower() in _SAFETENSORS_SUFFIXES or _looks_like_safetensors(path):
        state, header = _read_safetensors(path)
        if "config" in header:
            config = _mapping_entry(_json_entry(header, "config", path), "config", path)
        if "metadata" in header:
            metadata = _mapping_entry(_json_entry(header, "metadata", path), "metadata", path)
    else:
        state, extras = _extract_state_dict(_read_torch(path), path)
        if extras.get("config") is not None:
            config = _mapping_entry(extras["config"], "config", path)
        if extras.get("metadata") is not None:
            metadata = _mapping_entry(extras["metadata"], "metadata", path)
    problem = check_metadata(metadata) or check_tensors(state)
    if problem:
        raise _fail(path, problem)
    return strip_prefixes(state), metadata, config


def _json_entry(header: Mapping[str, str], name: str, path: Path) -> Any:
    try:
        return json.loads(header[name])
    except (TypeError, ValueError) as err:
        raise _fail(path, f"its '{name}' header entry is not valid JSON "
                          f"({plain_text(err, 80)})") from None


def _mapping_entry(value: Any, name: str, path: Path) -> dict:
    if not isinstance(value, Mapping):
        raise _fail(path, f"its stored '{name}' is a {type(value).__name__}, "
                          "expected a JSON object (key: value)")
    return dict(value)


# ---------------------------------------------------------------------------- public API


def load_model(
    source: str | os.PathLike | MPRNet,
    device: str | torch.device | None = None,
) -> MPRNet:
    """Load an MPRNet, ready for inference (eval mode).

    Parameters
    ----------
    source : str, path or MPRNet
        A task name ("denoise", "deblur", "derain") for the bundled default model (always:
        a local file of such a name is used only given as a path, e.g. "./denoise"), a model
        file (safetensors or PyTorch checkpoint, official or ours), a bioimage.io package
        (.zip, or a folder holding rdf.yaml) of an MPRNet, or a loaded model.
    device : str or torch.device, optional
        Where to put the model; default CPU, "auto" picks the best available.

    Returns
    -------
    MPRNet
        In eval mode; ``model.metadata`` holds the file's metadata (task, normalisation,
        provenance) where it has any.

    Raises
    ------
    ValueError
        If the file is not an MPRNet checkpoint, is truncated or has mismatched shapes.
    FileNotFoundError
        If the path does not exist.
    """
    target = resolve_device(device) if device is not None else torch.device("cpu")
    if isinstance(source, MPRNet):
        return source.to(target).eval()
    if isinstance(source, torch.nn.Module):
        raise TypeError(f"expected an MPRNet, got a {type(source).__name__}")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"model must be a task name, a file path or an MPRNet, got {type(source).__name__}"
        )
    path = model_file(source)
    state, metadata, config = load_state_dict(path)
    where = f"'{shown_path(path)}'"
    try:
        model = model_from_state_dict(state, config, where)
    except (TypeError, ValueError, RuntimeError, MemoryError) as err:
        problem = plain_text(str(err).replace(f"{where}: ", ""), 300)
        raise _fail(path, problem) from None
    model.metadata = metadata
    model.source = str(path)
    return model.to(target).eval()


def model_file(source: str | os.PathLike) -> Path:
    """The file a model name or path stands for: a bundled model's (checksummed) file for a
    bare task name such as "denoise" (str or path), else the path itself."""
    from .pretrained import bundled_name, bundled_path

    name = bundled_name(source)
    if name is not None:
        if Path(name).exists():
            warnings.warn(f"{name!r} means the bundled {name} model; the file '{name}' in the "
                          f"current folder is not used (give it as './{name}' to use it)",
                          UserWarning, stacklevel=3)
        return bundled_path(name)
    return Path(source)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_model(
    model: MPRNet,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` to ``path`` atomically.

    ``.safetensors`` (recommended) embeds the configuration and ``metadata`` in the header;
    ``.pth``/``.pt`` writes ``{"state_dict", "config", "metadata"}``, readable with
    ``torch.load(weights_only=True)``. The activation shared by all attention blocks is
    stored once per block, as in the official layout.

    Parameters
    ----------
    model : MPRNet
        The network to save.
    path : str or path
        Destination; the suffix chooses the format.
    metadata : mapping, optional
        JSON-serialisable information (task, normalisation, provenance...). Merged over
        ``model.metadata``.
    dtype : torch.dtype, optional
        Store floating-point tensors in this dtype (e.g. ``torch.float16`` to halve the size).
    overwrite : bool
        If False, refuse to replace an existing file.

    Returns
    -------
    pathlib.Path
    """
    if not isinstance(model, MPRNet):
        raise TypeError(f"save_model expects an MPRNet, got {type(model).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SAFETENSORS_SUFFIXES + _TORCH_SUFFIXES:
        raise ValueError(
            f"unknown model file extension '{path.suffix}' for '{path}'; "
            "use .safetensors (recommended) or .pth"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True to replace it")
    merged = dict(getattr(model, "metadata", {}) or {})
    merged.update(metadata or {})
    merged = _json_safe(merged)
    config = model.config.to_dict()
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.clone().contiguous()  # unshare the common PReLU
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=overwrite) as tmp_name:
        if suffix in _SAFETENSORS_SUFFIXES:
            header = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "config": json.dumps(config),
                "metadata": json.dumps(merged),
            }
            _save_safetensors(state, str(tmp_name), metadata=header)
        else:
            torch.save({"state_dict": state, "config": config, "metadata": merged}, tmp_name)
    return path

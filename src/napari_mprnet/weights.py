"""Reading and writing MPRNet model files.

Formats read by :func:`load_model`:

- safetensors files written by :func:`save_model` (configuration and metadata embedded) or
  by anyone else (configuration inferred from the tensor shapes);
- PyTorch checkpoints (``.pth``/``.pt``): the official releases' ``{"state_dict": ...}``,
  with or without ``module.`` prefixes and extra entries such as ``epoch``/``optimizer``,
  and plain state dicts. They are read with ``torch.load(weights_only=True)``, which never
  executes code stored in the file.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as _load_safetensors
from safetensors.torch import save_file as _save_safetensors

from .engine.devices import resolve_device
from .io.atomic import atomic_output
from .model.arch import MPRNet, MPRNetConfig

__all__ = ["FORMAT_NAME", "infer_config", "load_model", "load_state_dict", "save_model"]

FORMAT_NAME = "napari-mprnet"
FORMAT_VERSION = "1"
_SAFETENSORS_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")


class _FileError(ValueError):
    pass


def _fail(path: Path | str, problem: str) -> ValueError:
    return ValueError(f"cannot load model file '{path}': {problem}")


# --------------------------------------------------------------------------- reading files


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = _load_safetensors(str(path), device="cpu")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _fail(path, f"not a readable safetensors file ({err})") from None
    return tensors, header


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise _fail(
            path,
            "it holds Python objects other than tensors and plain containers, which are "
            f"refused for safety ({first_line[:200]})",
        ) from None
    except Exception as err:  # noqa: BLE001 - damaged bytes raise anything (IndexError too)
        reason = f"{type(err).__name__}: {err}"[:200]
        raise _fail(path, f"not a readable PyTorch checkpoint; is it truncated? ({reason})") \
            from None


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


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefixes = ("module.", "_orig_mod.", "model.")
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        out[key] = value
    return out


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
    if path.is_dir():
        raise _fail(path, "it is a folder, not a file")
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty")
    metadata: dict = {}
    config: dict | None = None
    if path.suffix.lower() in _SAFETENSORS_SUFFIXES or _looks_like_safetensors(path):
        state, header = _read_safetensors(path)
        if "config" in header:
            config = json.loads(header["config"])
        if "metadata" in header:
            metadata = json.loads(header["metadata"])
    else:
        state, extras = _extract_state_dict(_read_torch(path), path)
        if isinstance(extras.get("config"), Mapping):
            config = dict(extras["config"])
        if isinstance(extras.get("metadata"), Mapping):
            metadata = dict(extras["metadata"])
    return _strip_prefixes(state), metadata, config


# ------------------------------------------------------------------- configuration inference


def _shape(state: Mapping[str, torch.Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise _FileError(f"{where}: parameter '{key}' is missing")
    return tuple(state[key].shape)


def infer_config(state: Mapping[str, torch.Tensor], where: str = "state dict") -> MPRNetConfig:
    """Infer an :class:`MPRNetConfig` from parameter shapes.

    Raises
    ------
    ValueError
        If the tensors are not those of an MPRNet.
    """
    try:
        stem = _shape(state, "shallow_feat1.0.weight", where)
        if len(stem) != 4:
            raise _FileError(f"{where}: 'shallow_feat1.0.weight' is not a conv weight")
        n_feat, in_c, kernel_size = stem[0], stem[1], stem[2]
        tail = _shape(state, "tail.weight", where)
        out_c, width3 = tail[0], tail[1]
        down = _shape(state, "stage1_encoder.down12.down.1.weight", where)
        scale_unetfeats = down[0] - n_feat
        scale_orsnetfeats = width3 - n_feat
        num_cab = 0
        while f"stage3_orsnet.orb1.body.{num_cab}.body.0.weight" in state:
            num_cab += 1
        squeeze_keys = {
            n_feat: "shallow_feat1.1.CA.conv_du.0.weight",
            n_feat + scale_unetfeats: "stage1_encoder.encoder_level2.0.CA.conv_du.0.weight",
            width3: "stage3_orsnet.orb1.body.0.CA.conv_du.0.weight",
        }
        squeezed = {w: _shape(state, k, where)[0] for w, k in squeeze_keys.items()}
    except _FileError as err:
        raise ValueError(f"not an MPRNet checkpoint: {err}") from None
    consistent = [
        r for r in range(1, n_feat + 1) if all(w // r == s for w, s in squeezed.items())
    ]
    # Several ratios can give identical layers; prefer the one that divides n_feat exactly.
    exact = [r for r in consistent if r * squeezed[n_feat] == n_feat]
    reduction = (exact or consistent or [None])[0]
    if reduction is None or num_cab == 0:
        raise ValueError(f"not an MPRNet checkpoint: {where}: inconsistent layer shapes")
    return MPRNetConfig(
        in_c=in_c,
        out_c=out_c,
        n_feat=n_feat,
        scale_unetfeats=scale_unetfeats,
        scale_orsnetfeats=scale_orsnetfeats,
        num_cab=num_cab,
        kernel_size=kernel_size,
        reduction=reduction,
        bias="shallow_feat1.0.bias" in state,
    )


# ---------------------------------------------------------------------------- public API


def _build(state: dict[str, torch.Tensor], config: MPRNetConfig, where: str) -> MPRNet:
    model = MPRNet(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. '{unexpected[0]}')")
        raise ValueError(
            f"not an MPRNet checkpoint matching its inferred configuration: {where}: "
            f"parameters {' and '.join(parts)}"
        )
    for key, target in expected.items():
        if tuple(state[key].shape) != tuple(target.shape):
            raise ValueError(
                f"{where}: parameter '{key}' has shape {tuple(state[key].shape)}, "
                f"expected {tuple(target.shape)} for the inferred configuration"
            )
        if not state[key].is_floating_point():
            raise ValueError(f"{where}: parameter '{key}' is not a floating-point tensor")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key].to(target.dtype))
    return model


def model_from_state_dict(
    state: Mapping[str, torch.Tensor], config: MPRNetConfig | Mapping | None = None,
    where: str = "state dict",
) -> MPRNet:
    """Build an :class:`MPRNet` from a state dict, inferring its configuration if not given."""
    state = _strip_prefixes(dict(state))
    if config is None:
        config = infer_config(state, where)
    elif isinstance(config, Mapping):
        config = MPRNetConfig(**config)
    return _build(state, config, where)


def load_model(
    source: str | os.PathLike | MPRNet,
    device: str | torch.device | None = None,
) -> MPRNet:
    """Load an MPRNet, ready for inference (eval mode).

    Parameters
    ----------
    source : str, path or MPRNet
        A task name ("denoise", "deblur", "derain") for the bundled default model, a model
        file (safetensors or PyTorch checkpoint, official or ours), or a loaded model.
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
    from .pretrained import bundled_path, is_bundled_name

    if isinstance(source, str) and is_bundled_name(source) and not Path(source).exists():
        path = bundled_path(source)
    else:
        path = Path(source)
    state, metadata, config = load_state_dict(path)
    where = f"'{path}'"
    try:
        model = model_from_state_dict(state, config, where)
    except (TypeError, ValueError) as err:
        message = str(err)
        if str(path) not in message:
            message = f"cannot load model file '{path}': {message}"
        raise ValueError(message) from None
    model.metadata = metadata
    model.source = str(path)
    return model.to(target).eval()


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

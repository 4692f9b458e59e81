"""Building an :class:`~napari_mprnet.model.arch.MPRNet` from a state dict.

The configuration is the stored one (checked entry by entry) or inferred from the parameter
shapes; every parameter is checked for its name, shape, type and finiteness before it is
copied, so a damaged or foreign state dict is one ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from .arch import MPRNet, MPRNetConfig

__all__ = ["infer_config", "model_from_state_dict", "strip_prefixes"]


class _FileError(ValueError):
    pass


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without wrapper prefixes such as ``module.`` (DataParallel) or
    ``_orig_mod.`` (torch.compile)."""
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


_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(MPRNetConfig))


def _config_from(config: Mapping, where: str) -> MPRNetConfig:
    unknown = sorted(str(k) for k in config if k not in _CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"{where}: the stored configuration has unknown entries "
                         f"{', '.join(map(repr, unknown))} (known: {', '.join(_CONFIG_FIELDS)})")
    try:
        return MPRNetConfig(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: the stored configuration is invalid: {err}") from None


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
        if not bool(torch.isfinite(state[key]).all()):
            raise ValueError(f"{where}: parameter '{key}' holds NaN or infinite values; "
                             "the weights are damaged (or training diverged)")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key].to(target.dtype))
    return model


def model_from_state_dict(
    state: Mapping[str, torch.Tensor], config: MPRNetConfig | Mapping | None = None,
    where: str = "state dict",
) -> MPRNet:
    """Build an :class:`MPRNet` from a state dict, inferring its configuration if not given."""
    state = strip_prefixes(dict(state))
    if config is None:
        config = infer_config(state, where)
    elif isinstance(config, Mapping):
        config = _config_from(config, where)
    return _build(state, config, where)

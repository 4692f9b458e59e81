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

__all__ = ["MAX_PARAMETERS", "check_config_size", "infer_config", "model_from_state_dict",
           "strip_prefixes"]

#: The most parameters a model file may ask for: 10x the largest released MPRNet (deblur,
#: 20 M). A damaged or hostile configuration must fail here, not in the allocator.
MAX_PARAMETERS = 200_000_000
#: Bounds on single entries, checked before any network (even a shapeless one) is built.
_FIELD_LIMITS = {"num_cab": 64, "kernel_size": 15, "in_c": 16, "out_c": 16,
                 "n_feat": 65536, "scale_unetfeats": 65536, "scale_orsnetfeats": 65536}


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


def check_config_size(config: MPRNetConfig, where: str = "state dict") -> int:
    """Refuse a configuration far beyond any MPRNet before anything is allocated: entries
    over sane bounds, or more than :data:`MAX_PARAMETERS` parameters (counted on a network
    without storage). Returns the parameter count.

    Raises
    ------
    ValueError
        Naming the entry, or the parameter count and the bound.
    """
    for name, limit in _FIELD_LIMITS.items():
        value = getattr(config, name)
        if value > limit:
            raise ValueError(f"{where}: its configuration asks for {name} {value}, far beyond "
                             f"any MPRNet (at most {limit} here); the file is damaged or not "
                             "an MPRNet model")
    with torch.device("meta"):
        count = sum(p.numel() for p in MPRNet(config).parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(f"{where}: its configuration asks for {count / 1e6:,.0f} M parameters,"
                         f" more than the {MAX_PARAMETERS / 1e6:.0f} M accepted (the largest "
                         "released MPRNet has 20 M); the file is damaged or not a usable model")
    return count


def _check_stored_config(state: Mapping[str, torch.Tensor], config: MPRNetConfig,
                         where: str) -> None:
    """Refuse a stored configuration that disagrees with the file's own tensors (e.g.
    ``num_cab`` 100000 next to the tensors of 8 blocks), before building anything."""
    found = infer_config(state, where)
    for name in _CONFIG_FIELDS:
        if name != "reduction" and getattr(found, name) != getattr(config, name):
            raise ValueError(f"{where}: its stored configuration says {name} "
                             f"{getattr(config, name)!r} but its tensors are those of {name} "
                             f"{getattr(found, name)!r}; the file is damaged")


def _build(state: dict[str, torch.Tensor], config: MPRNetConfig, where: str) -> MPRNet:
    check_config_size(config, where)
    with torch.device("meta"):  # the expected names and shapes, without allocating
        expected = MPRNet(config).state_dict()
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
    model = MPRNet(config)
    with torch.no_grad():
        for key, target in model.state_dict().items():
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
    else:
        if isinstance(config, Mapping):
            config = _config_from(config, where)
        _check_stored_config(state, config, where)
    return _build(state, config, where)

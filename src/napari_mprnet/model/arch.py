"""The MPRNet network (Zamir et al., CVPR 2021), written from the paper.

Module and parameter names follow the layout of the released checkpoints so that
their state dicts load directly; ``tests/data/mprnet_state_dict_*.json`` lists them exactly.

Building blocks
---------------
- ``ChannelAttention`` (CA): global average pool, squeeze 1x1 conv, ReLU, excite 1x1 conv,
  sigmoid, channel-wise rescale.
- ``CAB``: conv - PReLU - conv, then CA, plus the block's input (residual).
- ``Encoder``/``Decoder``: a three-level U-Net of CABs, bilinear down/up-sampling
  followed by a 1x1 conv; the stage-2 encoder also fuses stage-1 features (CSFF).
- ``ORSNet``: original-resolution blocks (ORBs, a chain of CABs and a conv) fed with the
  stage-2 encoder/decoder features.
- ``SAM``: supervised attention between stages: predicts the stage image and gates features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .forwards import split_forward, whole_forward

__all__ = ["MPRNet", "MPRNetConfig"]

#: Number of CABs at every encoder and decoder level (fixed by the architecture).
_CABS_PER_LEVEL = 2


@dataclass(frozen=True)
class MPRNetConfig:
    """Hyper-parameters of an MPRNet.

    Parameters
    ----------
    in_c, out_c : int
        Image channels in and out (must be equal: the last stage is residual).
    n_feat : int
        Feature width at full resolution.
    scale_unetfeats : int
        Channels added per U-Net level.
    scale_orsnetfeats : int
        Channels added to ``n_feat`` in the original-resolution subnetwork.
    num_cab : int
        Channel-attention blocks per original-resolution block.
    kernel_size : int
        Spatial size of the main convolutions (odd).
    reduction : int
        Channel-attention squeeze ratio.
    bias : bool
        Whether convolutions carry a bias.
    """

    in_c: int = 3
    out_c: int = 3
    n_feat: int = 80
    scale_unetfeats: int = 48
    scale_orsnetfeats: int = 32
    num_cab: int = 8
    kernel_size: int = 3
    reduction: int = 4
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("in_c", "out_c", "n_feat", "num_cab", "kernel_size", "reduction"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MPRNet {name} must be a positive integer, got {value!r}")
        for name in ("scale_unetfeats", "scale_orsnetfeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"MPRNet {name} must be a non-negative integer, got {value!r}")
        if self.in_c != self.out_c:
            raise ValueError(
                f"MPRNet adds its input to the last stage, so in_c ({self.in_c}) "
                f"must equal out_c ({self.out_c})"
            )
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.n_feat // self.reduction < 1:
            raise ValueError(
                f"n_feat ({self.n_feat}) must be at least reduction ({self.reduction})"
            )

    def to_dict(self) -> dict:
        """Return the configuration as a plain dict."""
        return asdict(self)


def _conv(c_in: int, c_out: int, kernel_size: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=bias)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention."""

    def __init__(self, channels: int, reduction: int, bias: bool) -> None:
        super().__init__()
        squeezed = channels // reduction
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, squeezed, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, channels, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel-attention block: conv, activation, conv, attention, residual."""

    def __init__(
        self, channels: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module
    ) -> None:
        super().__init__()
        self.CA = ChannelAttention(channels, reduction, bias)
        self.body = nn.Sequential(
            _conv(channels, channels, kernel_size, bias),
            act,
            _conv(channels, channels, kernel_size, bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


def _cab_chain(count: int, channels: int, cfg: MPRNetConfig, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        *[CAB(channels, cfg.kernel_size, cfg.reduction, cfg.bias, act) for _ in range(count)]
    )


class DownSample(nn.Module):
    """Bilinear x0.5 then a bias-free 1x1 conv from ``c_in`` to ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x)


class UpSample(nn.Module):
    """Bilinear x2 then a bias-free 1x1 conv from ``c_in`` to ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.up(x)
        return out if skip is None else out + skip


def _level_widths(cfg: MPRNetConfig) -> tuple[int, int, int]:
    s = cfg.scale_unetfeats
    return cfg.n_feat, cfg.n_feat + s, cfg.n_feat + 2 * s


class Encoder(nn.Module):
    """Three-level encoder; with ``csff`` it fuses the previous stage's features."""

    def __init__(self, cfg: MPRNetConfig, act: nn.Module, csff: bool) -> None:
        super().__init__()
        w1, w2, w3 = _level_widths(cfg)
        self.encoder_level1 = _cab_chain(_CABS_PER_LEVEL, w1, cfg, act)
        self.encoder_level2 = _cab_chain(_CABS_PER_LEVEL, w2, cfg, act)
        self.encoder_level3 = _cab_chain(_CABS_PER_LEVEL, w3, cfg, act)
        self.down12 = DownSample(w1, w2)
        self.down23 = DownSample(w2, w3)
        self.csff = csff
        if csff:
            b = cfg.bias
            self.csff_enc1 = nn.Conv2d(w1, w1, 1, bias=b)
            self.csff_enc2 = nn.Conv2d(w2, w2, 1, bias=b)
            self.csff_enc3 = nn.Conv2d(w3, w3, 1, bias=b)
            self.csff_dec1 = nn.Conv2d(w1, w1, 1, bias=b)
            self.csff_dec2 = nn.Conv2d(w2, w2, 1, bias=b)
            self.csff_dec3 = nn.Conv2d(w3, w3, 1, bias=b)

    def _fuse(self, level: int, x: torch.Tensor, enc_prev, dec_prev) -> torch.Tensor:
        if enc_prev is None:
            return x
        enc_conv = getattr(self, f"csff_enc{level}")
        dec_conv = getattr(self, f"csff_dec{level}")
        return x + enc_conv(enc_prev[level - 1]) + dec_conv(dec_prev[level - 1])

    def forward(
        self,
        x: torch.Tensor,
        enc_prev: list[torch.Tensor] | None = None,
        dec_prev: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        enc1 = self._fuse(1, self.encoder_level1(x), enc_prev, dec_prev)
        enc2 = self._fuse(2, self.encoder_level2(self.down12(enc1)), enc_prev, dec_prev)
        enc3 = self._fuse(3, self.encoder_level3(self.down23(enc2)), enc_prev, dec_prev)
        return [enc1, enc2, enc3]


class Decoder(nn.Module):
    """Three-level decoder with attention on the skip connections."""

    def __init__(self, cfg: MPRNetConfig, act: nn.Module) -> None:
        super().__init__()
        w1, w2, w3 = _level_widths(cfg)
        self.decoder_level1 = _cab_chain(_CABS_PER_LEVEL, w1, cfg, act)
        self.decoder_level2 = _cab_chain(_CABS_PER_LEVEL, w2, cfg, act)
        self.decoder_level3 = _cab_chain(_CABS_PER_LEVEL, w3, cfg, act)
        self.skip_attn1 = CAB(w1, cfg.kernel_size, cfg.reduction, cfg.bias, act)
        self.skip_attn2 = CAB(w2, cfg.kernel_size, cfg.reduction, cfg.bias, act)
        self.up21 = UpSample(w2, w1)
        self.up32 = UpSample(w3, w2)

    def forward(self, enc: list[torch.Tensor]) -> list[torch.Tensor]:
        enc1, enc2, enc3 = enc
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc2)))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc1)))
        return [dec1, dec2, dec3]


class ORB(nn.Module):
    """Original-resolution block: ``num_cab`` CABs and a bias-free conv, plus a residual."""

    def __init__(self, channels: int, cfg: MPRNetConfig, act: nn.Module) -> None:
        super().__init__()
        blocks = list(_cab_chain(cfg.num_cab, channels, cfg, act))
        blocks.append(_conv(channels, channels, cfg.kernel_size, bias=False))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ORSNet(nn.Module):
    """Original-resolution subnetwork of stage 3, fed by stage-2 encoder/decoder features."""

    def __init__(self, cfg: MPRNetConfig, act: nn.Module) -> None:
        super().__init__()
        w1, w2, w3 = _level_widths(cfg)
        width = cfg.n_feat + cfg.scale_orsnetfeats
        self.orb1 = ORB(width, cfg, act)
        self.orb2 = ORB(width, cfg, act)
        self.orb3 = ORB(width, cfg, act)
        self.up_enc1 = UpSample(w2, w1)
        self.up_dec1 = UpSample(w2, w1)
        self.up_enc2 = nn.Sequential(UpSample(w3, w2), UpSample(w2, w1))
        self.up_dec2 = nn.Sequential(UpSample(w3, w2), UpSample(w2, w1))
        b = cfg.bias
        for name in ("conv_enc1", "conv_enc2", "conv_enc3", "conv_dec1", "conv_dec2", "conv_dec3"):
            setattr(self, name, nn.Conv2d(w1, width, 1, bias=b))

    def forward(
        self, x: torch.Tensor, enc: list[torch.Tensor], dec: list[torch.Tensor]
    ) -> torch.Tensor:
        x = self.orb1(x)
        x = x + self.conv_enc1(enc[0]) + self.conv_dec1(dec[0])
        x = self.orb2(x)
        x = x + self.conv_enc2(self.up_enc1(enc[1])) + self.conv_dec2(self.up_dec1(dec[1]))
        x = self.orb3(x)
        x = x + self.conv_enc3(self.up_enc2(enc[2])) + self.conv_dec3(self.up_dec2(dec[2]))
        return x


class SAM(nn.Module):
    """Supervised attention module: predicts a stage image and gates the features with it."""

    def __init__(self, channels: int, image_channels: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=bias)
        self.conv2 = nn.Conv2d(channels, image_channels, 1, bias=bias)
        self.conv3 = nn.Conv2d(image_channels, channels, 1, bias=bias)

    def forward(
        self, features: torch.Tensor, degraded: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.conv2(features) + degraded
        gate = torch.sigmoid(self.conv3(image))
        return self.conv1(features) * gate + features, image


class _StemAndCAB(nn.Sequential):
    """Shallow feature extractor: conv from image channels, then one CAB."""

    def __init__(self, cfg: MPRNetConfig, act: nn.Module) -> None:
        super().__init__(
            _conv(cfg.in_c, cfg.n_feat, cfg.kernel_size, cfg.bias),
            CAB(cfg.n_feat, cfg.kernel_size, cfg.reduction, cfg.bias, act),
        )


class MPRNet(nn.Module):
    """Multi-stage progressive restoration network.

    Parameters
    ----------
    config : MPRNetConfig, optional
        Hyper-parameters; keyword arguments of :class:`MPRNetConfig` may be given instead.

    Notes
    -----
    ``forward(x)`` takes an ``(N, C, H, W)`` tensor with ``H`` and ``W`` multiples of 8 and
    returns ``[final, stage2, stage1]``, each the size of ``x``. ``forward(x,
    split_patches=False)`` runs stages 1 and 2 on the whole input instead of the paper's
    quarters and halves (:mod:`~napari_mprnet.model.forwards`).
    """

    #: Height and width of the input must be multiples of this.
    size_multiple = 8
    #: Default of ``forward(split_patches=None)``: the paper's multi-patch split (training
    #: and checkpoints use it; the inference engine passes False, see ``restore()``).
    split_patches = True

    def __init__(self, config: MPRNetConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = MPRNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a config or keyword arguments, not both")
        self.config = config
        #: Information stored with the weights (task, normalisation, provenance).
        self.metadata: dict = {}
        #: Where the weights were loaded from, if anywhere.
        self.source: str | None = None
        cfg = config
        act = nn.PReLU()  # one activation shared by every CAB, as in the released layout
        self.shallow_feat1 = _StemAndCAB(cfg, act)
        self.shallow_feat2 = _StemAndCAB(cfg, act)
        self.shallow_feat3 = _StemAndCAB(cfg, act)
        self.stage1_encoder = Encoder(cfg, act, csff=False)
        self.stage1_decoder = Decoder(cfg, act)
        self.stage2_encoder = Encoder(cfg, act, csff=True)
        self.stage2_decoder = Decoder(cfg, act)
        self.stage3_orsnet = ORSNet(cfg, act)
        self.sam12 = SAM(cfg.n_feat, cfg.out_c, cfg.bias)
        self.sam23 = SAM(cfg.n_feat, cfg.out_c, cfg.bias)
        width3 = cfg.n_feat + cfg.scale_orsnetfeats
        self.concat12 = _conv(2 * cfg.n_feat, cfg.n_feat, cfg.kernel_size, cfg.bias)
        self.concat23 = _conv(2 * cfg.n_feat, width3, cfg.kernel_size, cfg.bias)
        self.tail = _conv(width3, cfg.out_c, cfg.kernel_size, cfg.bias)

    def forward(self, x: torch.Tensor, split_patches: bool | None = None) -> list[torch.Tensor]:
        """Restore ``x``; return ``[final, stage2, stage1]`` images.

        ``split_patches``: True runs stage 1 on quarters and stage 2 on halves of ``x``
        (the paper), False every stage on the whole of ``x``; None (default) follows
        :attr:`split_patches`. See :mod:`napari_mprnet.model.forwards`.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_c:
            raise ValueError(
                f"MPRNet expects an (N, {self.config.in_c}, H, W) tensor, got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"height and width must be multiples of {self.size_multiple}, got {h}x{w}; "
                "pad the image (the engine does this for you)"
            )
        if split_patches is None:
            split_patches = self.split_patches
        return (split_forward if split_patches else whole_forward)(self, x)

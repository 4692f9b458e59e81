"""The two ways :class:`~napari_mprnet.model.arch.MPRNet` runs its stages.

``split_forward`` is the paper's multi-patch hierarchy: stage 1 sees the input as four
quarter patches (encoder features rejoined along the width, decoded per half), stage 2 as
two halves (rejoined along the height), stage 3 the whole input. Every input therefore has
artefacts along its own centre lines, which move with the input: a tile or a block of a
larger image is restored slightly differently from the same pixels inside the whole image.

``whole_forward`` runs the same layers, with the same weights, with stages 1 and 2 on the
whole input (no split). The network is then nearly local (only its channel attention
averages over the whole input, a weak effect), so tiled and blockwise restoration agree
with whole-image restoration to a fraction of a percent, at the same quality on real
images (see docs/bioimageio.md).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["split_forward", "whole_forward"]


def _stage3(net: nn.Module, x: torch.Tensor, enc2, dec2) -> tuple[torch.Tensor, torch.Tensor]:
    feats3, stage2_img = net.sam23(dec2[0], x)
    fused = net.concat23(torch.cat([net.shallow_feat3(x), feats3], dim=1))
    return net.tail(net.stage3_orsnet(fused, enc2, dec2)) + x, stage2_img


def split_forward(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The paper's forward: stage 1 on quarters, stage 2 on halves, stage 3 on ``x``."""
    h, w = x.shape[-2:]
    half_h, half_w = h // 2, w // 2
    halves = [x[:, :, :half_h], x[:, :, half_h:]]

    # Stage 1: four quarter patches; encoder features rejoined along the width.
    stage1_feats, stage1_decs, stage1_imgs, sam_feats = [], [], [], []
    for half in halves:
        quarters = [half[..., :half_w], half[..., half_w:]]
        encs = [net.stage1_encoder(net.shallow_feat1(q)) for q in quarters]
        joined = [torch.cat(pair, dim=3) for pair in zip(*encs)]
        decs = net.stage1_decoder(joined)
        feats, img = net.sam12(decs[0], half)
        stage1_feats.append(joined)
        stage1_decs.append(decs)
        stage1_imgs.append(img)
        sam_feats.append(feats)
    stage1_img = torch.cat(stage1_imgs, dim=2)

    # Stage 2: two halves, fused with stage-1 features; rejoined along the height.
    stage2_encs = []
    for half, feats, enc1, dec1 in zip(halves, sam_feats, stage1_feats, stage1_decs):
        fused = net.concat12(torch.cat([net.shallow_feat2(half), feats], dim=1))
        stage2_encs.append(net.stage2_encoder(fused, enc1, dec1))
    enc2 = [torch.cat(pair, dim=2) for pair in zip(*stage2_encs)]
    dec2 = net.stage2_decoder(enc2)

    # Stage 3: the whole image at its original resolution.
    final, stage2_img = _stage3(net, x, enc2, dec2)
    return [final, stage2_img, stage1_img]


def whole_forward(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every stage on the whole of ``x`` (no patch split); same layers and weights."""
    enc1 = net.stage1_encoder(net.shallow_feat1(x))
    dec1 = net.stage1_decoder(enc1)
    feats, stage1_img = net.sam12(dec1[0], x)
    fused = net.concat12(torch.cat([net.shallow_feat2(x), feats], dim=1))
    enc2 = net.stage2_encoder(fused, enc1, dec1)
    dec2 = net.stage2_decoder(enc2)
    final, stage2_img = _stage3(net, x, enc2, dec2)
    return [final, stage2_img, stage1_img]

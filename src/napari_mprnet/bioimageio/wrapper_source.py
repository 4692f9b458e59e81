"""The source of ``MPRNetFinal``, appended to the network's own source in a bioimage.io package.

It is kept as text (not imported here): it runs inside the package, after the packaged
``model/arch.py``, whose ``MPRNet`` it extends. :func:`.content.packaged_network` executes the
same text, so the test tensors are computed by exactly the code consumers run.
"""

from __future__ import annotations

__all__ = ["WRAPPER_SOURCE"]

WRAPPER_SOURCE = """

# --------------------------------------------------------------------------- bioimage.io
# Added by napari-mprnet's bioimage.io export. bioimage.io consumers get the final image only,
# computed as napari-mprnet computes it: a grey (1-channel) input goes through a 3-channel
# network as three copies and the output channels are averaged, and the network runs without
# MPRNet's patch split (``split_patches=False``: stages 1 and 2 see the whole input, not its
# quarters and halves), so that a block is restored like the same pixels inside the whole
# image. The mirror padding a consumer adds at the image edges for the halo is taken off
# again before the network runs (napari-mprnet runs the network on the image itself,
# padding only the bottom and right to a multiple of 8), so a whole image is restored as
# napari-mprnet restores it in one tile. With ``tile`` the network runs on a grid of tiles
# (``tile`` px, ``halo`` px of context each side) starting at the first pixel inside the
# halo, which bounds the memory of whole-image prediction.
#
# Intensities (``intensity``): bioimage.io casts every input to float32 before the network
# sees it, so the network reads the kind of image from its values, as napari-mprnet's
# restore() reads it from the data type, maps it to 0..1, and maps the result back with the
# exact inverse (bioimage.io 0.5 has no processing step that inverts a per-image map):
# - "auto": whole numbers within 0..255 (8-bit images) are divided by 255; values within
#   0..1 are used as they are; anything else (16-bit images, floats beyond 0..1) is mapped
#   by its own ``percentiles``;
# - "percentile": always by its own percentiles (models trained that way);
# - None: the input is already in the network's range (a fixed map declared outside).
# Results of whole-number inputs are clipped to 0..255 (all values within 0..255) or
# 0..65535, as restore() clips integer images to their type's range. Each tile window (the
# whole input without a grid) is mapped on its own.
# Same modules and parameter names as MPRNet, so napari-mprnet state dicts load unchanged.

import math  # noqa: E402

#: Inputs of more pixels are subsampled (every n-th) for their percentiles.
_MAX_SAMPLES = 4_000_000
#: Normalised values are clipped to +-this (extreme outliers only).
_NETWORK_INPUT_LIMIT = 1e6
_INTENSITY_MODES = (None, "auto", "percentile")


def _is_mirrored(x: torch.Tensor, dim: int, width: int) -> bool:
    \"\"\"Whether the first ``width`` pixels along ``dim`` mirror the next ``width`` (the
    symmetric padding bioimage.io adds at an image edge).\"\"\"
    if width <= 0 or x.shape[dim] < 2 * width + 2:
        return False
    return torch.equal(x.narrow(dim, 0, width).flip(dim), x.narrow(dim, width, width))


def _percentile_range(x: torch.Tensor, percentiles) -> tuple[float, float]:
    \"\"\"napari-mprnet's intensity range of one image: its (low, high) percentiles in float64
    (NaN ignored; nearly constant images: the full range, then a unit span).\"\"\"
    flat = x.reshape(-1).double()
    if flat.numel() > _MAX_SAMPLES:
        flat = flat[::-(-flat.numel() // _MAX_SAMPLES)]
    q = torch.tensor([p / 100.0 for p in percentiles], dtype=torch.float64)
    low, high = (float(v) for v in torch.nanquantile(flat, q))
    if not high > low:
        finite = flat[~torch.isnan(flat)]
        low = float(finite.min()) if finite.numel() else 0.0
        high = float(finite.max()) if finite.numel() else 0.0
        if not high > low:
            high = max(low + 1.0, low + 16 * math.ulp(abs(low)))
    return low, high


def _intensity_map(x: torch.Tensor, mode: str, percentiles):
    \"\"\"((low, high) or None for no map, (min, max) output limits or None) of one image.\"\"\"
    finite = x[torch.isfinite(x)]
    whole = finite.numel() > 0 and float(finite.min()) >= 0 and torch.equal(finite,
                                                                             finite.round())
    top = float(finite.max()) if finite.numel() else 0.0
    limits = ((0.0, 255.0) if top <= 255 else (0.0, 65535.0) if top <= 65535 else None) \\
        if whole else None
    if mode == "auto" and whole and top <= 255:
        return (0.0, 255.0), limits
    if mode == "auto" and finite.numel() and float(finite.min()) >= 0 and top <= 1:
        return None, limits
    return _percentile_range(x, percentiles), limits


class MPRNetFinal(MPRNet):
    \"\"\"MPRNet whose forward returns only the final (stage-3) image, shaped like the input.

    ``halo``: the output halo the package declares (0: the input is restored as one piece).
    ``tile``: 0: the input, without the edge padding a consumer added, is restored as one
    piece; else, with a halo, the input's interior (inside the halo) is cut into tiles of
    ``tile`` pixels on a grid starting at the interior's first pixel, each restored with
    ``halo`` pixels of context on every side, only its own pixels kept. ``intensity``: how
    each tile window is mapped to 0..1 and back ("auto", "percentile" or None, see above;
    ``percentiles`` given alone means "percentile"). ``percentiles``: the (low, high)
    percentiles of the per-image map. The network always runs unsplit
    (``split_patches=False``).
    \"\"\"

    def __init__(self, *args, halo: int = 0, tile: int = 0, percentiles=None,
                 intensity=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.halo = int(halo)
        self.tile = int(tile)
        if intensity is None and percentiles is not None:
            intensity = "percentile"
        if intensity not in _INTENSITY_MODES:
            raise ValueError(f"intensity must be 'auto', 'percentile' or None, got {intensity!r}")
        self.intensity = intensity
        self.percentiles = tuple(map(float, percentiles if percentiles is not None
                                     else (0.5, 99.8)))

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.size_multiple, (-w) % self.size_multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        if x.shape[1] == 1 and self.config.in_c == 3:
            out = super().forward(x.expand(-1, 3, -1, -1), split_patches=False)[0]
            out = out.mean(dim=1, keepdim=True)
        else:
            out = super().forward(x, split_patches=False)[0]
        return out[..., :h, :w]

    def _restore(self, x: torch.Tensor) -> torch.Tensor:
        if self.intensity is None:
            return self._network(x)
        outs = []
        for image in x.split(1):  # each image by its own map
            span_map, limits = _intensity_map(image, self.intensity, self.percentiles)
            if span_map is None:
                normalised = image.float().clamp(-_NETWORK_INPUT_LIMIT, _NETWORK_INPUT_LIMIT)
                out = self._network(normalised).to(image.dtype)
            else:
                low, high = span_map
                span = high - low
                wide = max(abs(low), abs(high)) >= 2.0**24  # float32 would lose intensities
                work = image.double() if wide else image.float()
                normalised = ((work - low) / span).clamp(-_NETWORK_INPUT_LIMIT,
                                                          _NETWORK_INPUT_LIMIT).float()
                out = self._network(normalised).to(work.dtype) * span + low
            if limits is not None:
                out = out.clamp(*limits)
            outs.append(out.to(x.dtype))
        return torch.cat(outs)

    def _window(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        \"\"\"``x`` restored without bioimage.io's edge padding (a context that mirrors the
        pixels next to it is taken off: napari-mprnet pads nothing there), and the rows and
        columns taken off at its top and left.\"\"\"
        top, left = (int(_is_mirrored(x, dim, self.halo)) * self.halo for dim in (2, 3))
        bottom, right = (int(_is_mirrored(x.flip(dim), dim, self.halo)) * self.halo
                         for dim in (2, 3))
        h, w = x.shape[-2:]
        return self._restore(x[..., top:h - bottom, left:w - right]), top, left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halo = self.halo
        h, w = x.shape[-2:]
        if not halo or h <= 2 * halo or w <= 2 * halo:
            return self._restore(x)
        inner = torch.empty(x.shape[:2] + (h - 2 * halo, w - 2 * halo), dtype=x.dtype,
                            device=x.device)
        step = self.tile or max(h, w)  # tile 0: the whole input is one window
        for y0 in range(halo, h - halo, step):
            y1 = min(y0 + step, h - halo)
            for x0 in range(halo, w - halo, step):
                x1 = min(x0 + step, w - halo)
                window = x[..., y0 - halo:y1 + halo, x0 - halo:x1 + halo]
                out, top, left = self._window(window)
                inner[..., y0 - halo:y1 - halo, x0 - halo:x1 - halo] = \\
                    out[..., halo - top:halo - top + y1 - y0, halo - left:halo - left + x1 - x0]
        return torch.nn.functional.pad(inner, (halo, halo, halo, halo), mode="replicate")
"""

"""The files of a bioimage.io package besides ``rdf.yaml``: test images, the packaged network
source, weights, cover and README; plus the author and metadata clean-up they need."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from ..model import arch as _arch
from ..model import forwards as _forwards
from ..model.arch import MPRNet

__all__ = ["ARCH_CALLABLE", "ARCH_FILE", "MIN_SIZE", "MODEL_FILE", "README_FILE",
           "TEST_INPUT_FILE", "TEST_OUTPUT_FILE", "WEIGHTS_FILE", "arch_source", "as_test_input",
           "authors", "cover_png", "default_test_input", "npy_bytes", "packaged_network", "predict_whole",
           "strip_local_paths", "tif_bytes", "training_method", "weights_bytes"]

ARCH_FILE = "mprnet_arch.py"
WEIGHTS_FILE = "weights.pt"
TEST_INPUT_FILE = "test_input.npy"
TEST_OUTPUT_FILE = "test_output.npy"
README_FILE = "README.md"
MODEL_FILE = "napari_mprnet.safetensors"
#: The architecture class bioimage.io consumers build (defined in the packaged source).
ARCH_CALLABLE = "MPRNetFinal"
#: Smallest image side the network itself takes (sizes grow in steps of ``size_multiple``).
MIN_SIZE = 16
#: Largest test-input side (bigger given test inputs are centre-cropped).
MAX_TEST_SIZE = 256
#: The default test input's side.
DEFAULT_TEST_SIZE = 96

PAPER_TEXT = (
    "Zamir, S. W., Arora, A., Khan, S., Hayat, M., Khan, F. S., Yang, M.-H., Shao, L. "
    "Multi-Stage Progressive Image Restoration. CVPR 2021."
)
PAPER_URL = "https://arxiv.org/abs/2102.02808"

_WRAPPER_SOURCE = """

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
# halo, which bounds the memory of whole-image prediction. With ``percentiles`` each tile
# window (the whole input without a grid) is mapped by its own percentiles to 0..1 and the
# result back (the exact inverse), as napari-mprnet does for an image: bioimage.io 0.5 has
# no processing step for that inverse.
# Same modules and parameter names as MPRNet, so napari-mprnet state dicts load unchanged.

import math  # noqa: E402

#: Inputs of more pixels are subsampled (every n-th) for their percentiles.
_MAX_SAMPLES = 4_000_000
#: Normalised values are clipped to +-this (extreme outliers only).
_NETWORK_INPUT_LIMIT = 1e6


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


class MPRNetFinal(MPRNet):
    \"\"\"MPRNet whose forward returns only the final (stage-3) image, shaped like the input.

    ``halo``: the output halo the package declares (0: the input is restored as one piece).
    ``tile``: 0: the input, without the edge padding a consumer added, is restored as one
    piece; else, with a halo, the input's interior (inside the halo) is cut into tiles of
    ``tile`` pixels on a grid starting at the interior's first pixel, each restored with
    ``halo`` pixels of context on every side, only its own pixels kept. ``percentiles``:
    (low, high) percentiles each tile window is normalised by (None: the input is already
    in the network's range). The network always runs unsplit (``split_patches=False``).
    \"\"\"

    def __init__(self, *args, halo: int = 0, tile: int = 0, percentiles=None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.halo = int(halo)
        self.tile = int(tile)
        self.percentiles = None if percentiles is None else tuple(map(float, percentiles))

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
        if self.percentiles is None:
            return self._network(x)
        outs = []
        for image in x.split(1):  # each image by its own percentiles
            low, high = _percentile_range(image, self.percentiles)
            span = high - low
            wide = max(abs(low), abs(high)) >= 2.0**24  # float32 would lose the intensities
            work = image.double() if wide else image.float()
            normalised = ((work - low) / span).clamp(-_NETWORK_INPUT_LIMIT,
                                                      _NETWORK_INPUT_LIMIT).float()
            out = self._network(normalised).to(work.dtype) * span + low
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
                inner[..., y0 - halo:y1 - halo, x0 - halo:x1 - halo] = \
                    out[..., halo - top:halo - top + y1 - y0, halo - left:halo - left + x1 - x0]
        return torch.nn.functional.pad(inner, (halo, halo, halo, halo), mode="replicate")
"""

_AUTHOR = re.compile(r"^(?P<name>[^<@]+?)\s*(?:<(?P<email>[^>]+)>)?\s*(?:@(?P<github>[\w-]+))?$")


# --------------------------------------------------------------------------- test images


def default_test_input(channels: int, dtype: str, value_range: tuple[float, float],
                       size: int = DEFAULT_TEST_SIZE) -> np.ndarray:
    """A reproducible noisy image of smooth blobs, (1, C, size, size), in ``value_range``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.25 * np.sin(2 * np.pi * (2 * yy + 3 * xx))
    for _ in range(5):
        cy, cx, s = rng.random(), rng.random(), 0.08 + 0.15 * rng.random()
        img = img + rng.random() * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    img = (img - img.min()) / (img.max() - img.min())
    img = np.clip(0.1 + 0.8 * img + 0.08 * rng.standard_normal(img.shape), 0.0, 1.0)
    low, high = value_range
    plane = low + (high - low) * img
    if np.dtype(dtype).kind == "u":
        plane = np.rint(plane)
    return np.repeat(plane.astype(dtype)[None, None], channels, axis=1)


def as_test_input(data: Any, channels: int, min_size: int = MIN_SIZE) -> np.ndarray:
    """``data`` as (1, C, H, W) in its own dtype, H and W multiples of 8 (centre-cropped to at
    most 256 px or ``min_size``), each at least ``min_size``."""
    array = np.asarray(data)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"test_input must be numeric, got dtype {array.dtype}")
    array = np.squeeze(array)
    if array.ndim == 2:
        array = np.repeat(array[None], channels, axis=0)
    elif array.ndim == 3 and array.shape[0] != channels and array.shape[-1] == channels:
        array = np.moveaxis(array, -1, 0)
    elif array.ndim == 3 and array.shape[0] == 1 and channels != 1:
        array = np.repeat(array, channels, axis=0)
    if array.ndim != 3 or array.shape[0] != channels:
        raise ValueError(
            f"test_input must be a 2-D image, (C, H, W) or (H, W, C) with C = {channels}, "
            f"got shape {np.shape(data)}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("test_input contains NaN or infinite values")
    multiple = MPRNet.size_multiple
    sides = []
    for side in array.shape[1:]:
        usable = min(side, max(MAX_TEST_SIZE, min_size)) // multiple * multiple
        if usable < min_size:
            raise ValueError(
                f"test_input must be at least {min_size}x{min_size} pixels (the package's "
                f"smallest input), got shape {np.shape(data)}"
            )
        sides.append(usable)
    (h, w), (full_h, full_w) = sides, array.shape[1:]
    top, left = (full_h - h) // 2, (full_w - w) // 2
    return np.ascontiguousarray(array[None, :, top:top + h, left:left + w])


# --------------------------------------------------------------------------- authors / paths


def authors(given: Any) -> list[dict]:
    """bioimage.io author entries from names ("Name <email> @github_user") or dicts."""
    if given is None:
        return [{"name": "napari-mprnet user"}]
    if isinstance(given, (str, dict)):
        given = [given]
    out = []
    for author in given:
        if isinstance(author, str) and author.strip():
            match = _AUTHOR.match(author.strip())
            if match is None:
                raise ValueError(f"an author is 'Name', 'Name <email>' or 'Name <email> "
                                 f"@github_user', got {author!r}")
            entry = {"name": match["name"].strip(), "email": match["email"],
                     "github_user": match["github"]}
            out.append({k: v for k, v in entry.items() if v})
        elif isinstance(author, dict) and str(author.get("name", "")).strip():
            out.append({k: v for k, v in author.items() if v is not None})
        else:
            raise ValueError(f"each author needs a name, got {author!r}")
    if not out:
        raise ValueError("give at least one author")
    return out


def _local_path(text: str) -> bool:
    return (text.startswith(("/", "~", "\\\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", text))) \
        and len(text) > 1


def strip_local_paths(value: Any) -> Any:
    """``value`` with every absolute local path replaced by its file name (recursively)."""
    if isinstance(value, dict):
        return {k: strip_local_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(strip_local_paths(v) for v in value)
    if isinstance(value, (str, os.PathLike)) and _local_path(str(value)):
        return PurePath(str(value).replace("\\", "/")).name
    return value


# --------------------------------------------------------------------------- files


def tif_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.ascontiguousarray(array), photometric="minisblack")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def predict_whole(net: torch.nn.Module, x: torch.Tensor, halo: int) -> torch.Tensor:
    """``net`` on ``x`` as bioimage.io's whole-image prediction runs it: ``x`` padded
    symmetrically by ``halo`` on y and x, the output's halo cropped."""
    if not halo:
        return net(x)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (halo, halo), (halo, halo)),
                                     mode="symmetric"))
    return net(padded)[..., halo:-halo, halo:-halo]


def packaged_network(model: MPRNet, halo: int, **kwargs: Any) -> torch.nn.Module:
    """The packaged ``MPRNetFinal`` built from :func:`arch_source` with ``model``'s weights
    (``kwargs``: its further arguments, e.g. ``percentiles``): the test output is computed by
    exactly the code consumers run."""
    import sys
    import types

    name = "_napari_mprnet_packaged_arch"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up while the source runs
    try:
        exec(compile(arch_source(), ARCH_FILE, "exec"), module.__dict__)  # noqa: S102
    finally:
        del sys.modules[name]
    net = getattr(module, ARCH_CALLABLE)(**model.config.to_dict(), halo=halo, **kwargs)
    net.load_state_dict(model.state_dict(), strict=True)
    return net.eval()


#: The one relative import of model/arch.py: the module it names is inlined in its place.
_FORWARDS_IMPORT = "from .forwards import split_forward, whole_forward\n"


def _inlined_forwards() -> str:
    """model/forwards.py without its future import and ``__all__`` (arch.py has both)."""
    text = Path(_forwards.__file__).read_text(encoding="utf-8")
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith(("from __future__", "__all__")))


def arch_source() -> str:
    """The packaged network source: model/arch.py (with model/forwards.py inlined) plus the
    ``MPRNetFinal`` wrapper."""
    source = Path(_arch.__file__).read_text(encoding="utf-8")
    if source.count(_FORWARDS_IMPORT) == 1:
        source = source.replace(_FORWARDS_IMPORT, _inlined_forwards())
    if "from ." in source or "import napari_mprnet" in source:
        raise RuntimeError(
            "napari_mprnet/model/arch.py is no longer self-contained (it imports other "
            "napari-mprnet modules), so it cannot be packaged for bioimage.io"
        )
    return source.rstrip() + "\n" + _WRAPPER_SOURCE


def weights_bytes(model: MPRNet) -> bytes:
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _display(plane: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) uint8 stretched by the 0.5/99.5 percentiles."""
    plane = plane.astype(np.float32)
    rgb = plane if plane.shape[0] == 3 else np.repeat(plane[:1], 3, axis=0)
    low, high = np.percentile(rgb, (0.5, 99.5))
    scaled = (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)
    return (np.clip(np.moveaxis(scaled, 0, -1), 0, 1) * 255).round().astype(np.uint8)


def cover_png(test_input: np.ndarray, test_output: np.ndarray) -> bytes:
    """Input | output side by side (2:1), upscaled to 256 px high by pixel repetition."""
    import imageio.v3 as iio

    left, right = _display(test_input[0]), _display(test_output[0])
    zoom = max(1, 256 // left.shape[0])
    gap = np.full((left.shape[0], max(1, left.shape[1] // 32), 3), 255, np.uint8)
    image = np.concatenate([left, gap, right], axis=1)
    image = image.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return iio.imwrite("<bytes>", image, extension=".png")


def training_method(meta: dict) -> str | None:
    """The fine-tuning objective's name from the model's provenance (None: not recorded)."""
    objective = (meta.get("provenance") or {}).get("objective")
    return objective.get("name") if isinstance(objective, dict) else None

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
from .wrapper_source import WRAPPER_SOURCE

__all__ = ["ARCH_CALLABLE", "ARCH_FILE", "MIN_SIZE", "MODEL_FILE", "README_FILE",
           "SAMPLE_INPUT_FILE", "SAMPLE_OUTPUT_FILE",
           "TEST_INPUT_FILE", "TEST_OUTPUT_FILE", "WEIGHTS_FILE", "arch_source", "as_test_input",
           "authors", "cover_png", "default_test_input", "npy_bytes", "packaged_network", "predict_whole",
           "strip_local_paths", "tif_bytes", "training_example", "training_method",
           "weights_bytes"]

ARCH_FILE = "mprnet_arch.py"
WEIGHTS_FILE = "weights.pt"
TEST_INPUT_FILE = "test_input.npy"
TEST_OUTPUT_FILE = "test_output.npy"
#: Sample images (TIFF, for people and viewers): the test input and its whole-image result.
SAMPLE_INPUT_FILE = "sample_input.tif"
SAMPLE_OUTPUT_FILE = "sample_output.tif"
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


def training_example(inputs: Any, min_size: int = MIN_SIZE) -> np.ndarray | None:
    """A package test input from fine-tuning inputs, in their own type: one 2-D plane (or
    (H, W, 3) colour plane) of an array or a layer snapshot (``.data``; the middle plane of
    any leading axes), or of the first image in a folder; mirrored up to ``min_size`` where
    smaller. None if there is none to take."""
    if isinstance(inputs, (str, os.PathLike)):
        from ..io.image import IMAGE_SUFFIXES, read_image

        folder = Path(inputs)
        try:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
                if folder.is_dir() else [folder]
            inputs = read_image(files[0]).data if files else None
        except (OSError, ValueError):  # unreadable: the export makes its own test image
            return None
        if inputs is None:
            return None
    rgb = bool(getattr(inputs, "rgb", False))
    data = np.asarray(getattr(inputs, "data", inputs))
    if data.ndim < 2 or not (np.issubdtype(data.dtype, np.integer)
                             or np.issubdtype(data.dtype, np.floating)):
        return None
    keep = 3 if rgb or (data.ndim >= 3 and data.shape[-1] == 3) else 2
    while data.ndim > keep:
        data = data[data.shape[0] // 2]
    pad = [(0, max(0, min_size - side)) for side in data.shape[:2]] + [(0, 0)] * (keep - 2)
    if any(after for _, after in pad):
        data = np.pad(data, pad, mode="symmetric")
    return np.ascontiguousarray(data)


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
    """A (1, C, H, W) tensor as a TIFF of its (H, W) plane (one channel) or (C, H, W)."""
    import tifffile

    buffer = io.BytesIO()
    plane = array[0, 0] if array.ndim == 4 and array.shape[1] == 1 else array[0]
    tifffile.imwrite(buffer, np.ascontiguousarray(plane), photometric="minisblack")
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
    (``kwargs``: its further arguments, e.g. ``intensity``): the test output is computed by
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
    return source.rstrip() + "\n" + WRAPPER_SOURCE


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

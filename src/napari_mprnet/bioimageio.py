"""Export an MPRNet as a bioimage.io model package (a zip holding ``rdf.yaml``).

The package is self-contained: the network's source (:mod:`napari_mprnet.model.arch`, copied
verbatim, plus a small ``MPRNetFinal`` wrapper whose forward returns only the final image),
``pytorch_state_dict`` weights whose parameter names match that source, test input/output
tensors computed here, pre- and post-processing that reproduce napari-mprnet's intensity
normalisation where the bioimage.io processing steps can express it, a README and a cover.

>>> export_bioimageio(model, "cells.zip", name="Cells denoiser",
...                   description="MPRNet fine-tuned on ...")  # doctest: +SKIP

Validate the result with ``bioimageio.spec.load_description("cells.zip")`` or test it with
``bioimageio test cells.zip`` (``pip install bioimageio.core``).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io.atomic import atomic_output
from .model import arch as _arch
from .model.arch import MPRNet

__all__ = ["FORMAT_VERSION", "export_bioimageio"]

#: bioimage.io model description format written (0.5 family; newer tools upgrade it).
FORMAT_VERSION = "0.5.4"
#: File names inside the package.
ARCH_FILE = "mprnet_arch.py"
WEIGHTS_FILE = "weights.pt"
TEST_INPUT_FILE = "test_input.npy"
TEST_OUTPUT_FILE = "test_output.npy"
SAMPLE_INPUT_FILE = "sample_input.tif"
SAMPLE_OUTPUT_FILE = "sample_output.tif"
COVER_FILE = "cover.png"
README_FILE = "README.md"
MODEL_FILE = "napari_mprnet.safetensors"
INPUT_ID = "input0"
OUTPUT_ID = "output0"
#: The architecture class bioimage.io consumers build (defined in the packaged source).
ARCH_CALLABLE = "MPRNetFinal"
#: Smallest image side the package declares (sizes grow in steps of ``MPRNet.size_multiple``).
MIN_SIZE = 16
#: Largest test-input side (bigger given test inputs are centre-cropped).
MAX_TEST_SIZE = 256
#: The default test input's side.
DEFAULT_TEST_SIZE = 64
#: bioimage.io's scale_range epsilon.
SCALE_RANGE_EPS = 1e-6

PAPER_TEXT = (
    "Zamir, S. W., Arora, A., Khan, S., Hayat, M., Khan, F. S., Yang, M.-H., Shao, L. "
    "Multi-Stage Progressive Image Restoration. CVPR 2021."
)
PAPER_URL = "https://arxiv.org/abs/2102.02808"

_WRAPPER_SOURCE = '''

# --------------------------------------------------------------------------- bioimage.io
# Added by napari-mprnet's bioimage.io export: MPRNet.forward returns the images of all
# three stages; bioimage.io consumers get the final one only. Same modules, same parameter
# names, so napari-mprnet state dicts load unchanged.


class MPRNetFinal(MPRNet):
    """MPRNet whose forward returns only the final (stage-3) image, shaped like the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]
'''


# --------------------------------------------------------------------------- processing


@dataclass
class _Processing:
    """bioimage.io pre/post-processing plus the same maths in numpy (for the test tensors)."""

    pre: list[dict] = field(default_factory=list)
    post: list[dict] = field(default_factory=list)
    note: str = ""
    percentiles: tuple[float, float] | None = None
    gain: float = 1.0
    offset: float = 0.0
    example_range: tuple[float, float] = (0.0, 1.0)

    def apply_pre(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        if self.percentiles is not None:
            out = np.empty_like(x)
            for i, sample in enumerate(x):  # per sample, jointly over channel, y, x
                low, high = np.percentile(sample.astype(np.float64), self.percentiles)
                out[i] = (sample - low) / (high - low + SCALE_RANGE_EPS)
            return out.astype(np.float32)
        if self.pre:
            return (x * np.float32(self.gain) + np.float32(self.offset)).astype(np.float32)
        return x

    def apply_post(self, y: np.ndarray) -> np.ndarray:
        if self.post:
            return ((y - np.float32(self.offset)) / np.float32(self.gain)).astype(np.float32)
        return y.astype(np.float32)


def _processing(metadata: dict) -> _Processing:
    norm = metadata.get("normalization") or {}
    mode = norm.get("mode", "identity") if isinstance(norm, dict) else "identity"
    spatial = ["channel", "y", "x"]
    if mode == "percentile":
        lo, hi = (float(p) for p in (norm.get("percentiles") or (0.5, 99.8)))
        return _Processing(
            pre=[{"id": "scale_range",
                  "kwargs": {"axes": spatial, "min_percentile": lo, "max_percentile": hi}}],
            note=(
                f"The input is normalised per image by its {lo:g} and {hi:g} percentiles "
                "(`scale_range`), as napari-mprnet does. napari-mprnet maps the result back "
                "to the input's intensities with the same percentiles; bioimage.io has no "
                "processing step for that inverse, so **the packaged output stays in the "
                f"normalised range** (0 and 1 correspond to the input's {lo:g} and {hi:g} "
                "percentiles)."
            ),
            percentiles=(lo, hi),
            example_range=(100.0, 1000.0),
        )
    low, high = float(norm.get("low", 0.0) or 0.0), float(norm.get("high", 1.0) or 1.0)
    if mode in ("uint8", "range") and high > low:
        gain, offset = 1.0 / (high - low), -low / (high - low)
        return _Processing(
            pre=[{"id": "scale_linear", "kwargs": {"gain": gain, "offset": offset}}],
            post=[{"id": "scale_linear",
                   "kwargs": {"gain": high - low, "offset": low}}],
            note=(
                f"Input intensities {low:g}..{high:g} are mapped to 0..1 (`scale_linear`) and "
                "the output is mapped back to the input's scale, as napari-mprnet does."
            ),
            gain=gain,
            offset=offset,
            example_range=(low, high),
        )
    return _Processing(
        note="The network works on intensities in 0..1; inputs are used as given and outputs "
        "are returned unchanged (scale your images to 0..1 first)."
    )


# --------------------------------------------------------------------------- inputs


def _resolve_model(model: Any) -> MPRNet:
    if isinstance(model, MPRNet):
        net = copy.deepcopy(model)
    elif isinstance(model, (str, os.PathLike)):
        from .weights import load_model

        net = load_model(model, device="cpu")
    else:
        raise TypeError(
            f"model must be an MPRNet, a model file or a task name, got {type(model).__name__}"
        )
    net = net.to("cpu").float().eval()
    net.metadata = dict(net.metadata or {})
    return net


def _default_test_input(channels: int, value_range: tuple[float, float]) -> np.ndarray:
    """A reproducible noisy image of smooth blobs, (1, C, 64, 64), in ``value_range``."""
    rng = np.random.default_rng(0)
    size = DEFAULT_TEST_SIZE
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.25 * np.sin(2 * np.pi * (2 * yy + 3 * xx))
    for _ in range(5):
        cy, cx, s = rng.random(), rng.random(), 0.08 + 0.15 * rng.random()
        img = img + rng.random() * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    img = (img - img.min()) / (img.max() - img.min())
    img = np.clip(0.1 + 0.8 * img + 0.08 * rng.standard_normal(img.shape), 0.0, 1.0)
    low, high = value_range
    plane = (low + (high - low) * img).astype(np.float32)
    return np.repeat(plane[None, None], channels, axis=1)


def _as_test_input(data: Any, channels: int) -> np.ndarray:
    """``data`` as (1, C, H, W) float32, H and W multiples of 8 (centre-cropped)."""
    array = np.asarray(data)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"test_input must be numeric, got dtype {array.dtype}")
    array = np.squeeze(array.astype(np.float32))
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
        usable = min(side, MAX_TEST_SIZE) // multiple * multiple
        if usable < MIN_SIZE:
            raise ValueError(
                f"test_input must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got shape "
                f"{np.shape(data)}"
            )
        sides.append(usable)
    (h, w), (full_h, full_w) = sides, array.shape[1:]
    top, left = (full_h - h) // 2, (full_w - w) // 2
    return np.ascontiguousarray(array[None, :, top:top + h, left:left + w])


def _authors(authors: Any) -> list[dict]:
    if authors is None:
        return [{"name": "napari-mprnet user"}]
    if isinstance(authors, (str, dict)):
        authors = [authors]
    out = []
    for author in authors:
        if isinstance(author, str) and author.strip():
            out.append({"name": author.strip()})
        elif isinstance(author, dict) and str(author.get("name", "")).strip():
            out.append({k: v for k, v in author.items() if v is not None})
        else:
            raise ValueError(f"each author needs a name, got {author!r}")
    if not out:
        raise ValueError("give at least one author")
    return out


# --------------------------------------------------------------------------- files


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tif_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.ascontiguousarray(array), photometric="minisblack")
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _arch_source() -> str:
    source = Path(_arch.__file__).read_text(encoding="utf-8")
    if "from ." in source or "import napari_mprnet" in source:
        raise RuntimeError(
            "napari_mprnet/model/arch.py is no longer self-contained (it imports other "
            "napari-mprnet modules), so it cannot be packaged for bioimage.io"
        )
    return source.rstrip() + "\n" + _WRAPPER_SOURCE


def _weights_bytes(model: MPRNet) -> bytes:
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _display(plane: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) uint8 stretched by the 0.5/99.5 percentiles."""
    rgb = plane if plane.shape[0] == 3 else np.repeat(plane[:1], 3, axis=0)
    low, high = np.percentile(rgb, (0.5, 99.5))
    scaled = (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)
    return (np.clip(np.moveaxis(scaled, 0, -1), 0, 1) * 255).round().astype(np.uint8)


def _cover_png(test_input: np.ndarray, test_output: np.ndarray) -> bytes:
    """Input | output side by side (2:1), upscaled to 256 px high by pixel repetition."""
    import imageio.v3 as iio

    left, right = _display(test_input[0]), _display(test_output[0])
    zoom = max(1, 256 // left.shape[0])
    gap = np.full((left.shape[0], max(1, left.shape[1] // 32), 3), 255, np.uint8)
    image = np.concatenate([left, gap, right], axis=1)
    image = image.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return iio.imwrite("<bytes>", image, extension=".png")


def _training_method(meta: dict) -> str | None:
    """The fine-tuning objective's name from the model's provenance (None: not recorded)."""
    objective = (meta.get("provenance") or {}).get("objective")
    return objective.get("name") if isinstance(objective, dict) else None


def _readme(name: str, description: str, model: MPRNet, proc: _Processing,
            test_shape: tuple[int, ...]) -> str:
    meta = model.metadata or {}
    prov = meta.get("provenance") or {}
    config = model.config.to_dict()
    lines = [
        f"# {name}",
        "",
        description,
        "",
        "## What it is",
        "",
        f"An MPRNet (multi-stage progressive restoration network) for **{meta.get('task', '?')}** "
        "exported by napari-mprnet as a bioimage.io model. The "
        f"architecture is in `{ARCH_FILE}` (class `{ARCH_CALLABLE}`: the network with only the "
        "final image as output), the weights in `" + WEIGHTS_FILE + "` (a PyTorch state dict) "
        f"and `{MODEL_FILE}` (the same model as napari-mprnet saves it, with its metadata).",
        "",
        "Configuration: " + ", ".join(f"{k}={v}" for k, v in config.items()) + ".",
        "",
        "## Input and output",
        "",
        (f"One image tensor `(batch, channel, y, x)` with {config['in_c']} channel(s); y and x "
        f"must be multiples of {MPRNet.size_multiple} (at least {MIN_SIZE}). Grey images go "
        "through a 3-channel network as three copies of the same plane; average the output "
        "channels. The output has the input's shape."),
        "",
        proc.note,
        "",
        "## How it was trained",
        "",
    ]
    if meta.get("summary"):
        lines += [str(meta["summary"]), ""]
    method = _training_method(meta)
    if method in ("noise2void", "noise2noise"):
        lines += [(f"Fine-tuned **self-supervised** ({method}): on noisy images alone, "
                   "without clean targets."), ""]
    if prov:
        lines += ["| | |", "|---|---|"]
        for key, value in prov.items():
            if value is not None:
                lines.append(f"| {key} | {value} |")
        lines.append("")
    else:
        lines += ["No training record is stored with this model.", ""]
    if meta.get("trained") is False:
        lines += ["**Warning:** this model is marked as untrained (placeholder weights).", ""]
    lines += [
        "## Test tensors",
        "",
        (f"`{TEST_INPUT_FILE}` (shape {tuple(test_shape)}) and `{TEST_OUTPUT_FILE}`: the "
        "output of this package's processing and network on the test input. The cover shows "
        "the test input (left) and output (right)."),
        "",
        "## Validation",
        "",
        ("The packaged test output was computed by napari-mprnet from the test input with the "
        "processing declared in `rdf.yaml`; `bioimageio test` reproduces it. How well the "
        "model restores images is summarised above (validation PSNR/SSIM on held-out planes "
        "during fine-tuning, when recorded)."),
        "",
        "## Citation",
        "",
        PAPER_TEXT + f" {PAPER_URL}",
        "",
        ("The network code is napari-mprnet's own implementation, written from the paper; it "
        "is compatible with the released MPRNet checkpoints through parameter names only."),
        "",
    ]
    return "\n".join(lines)


def _dump_yaml(rdf: dict) -> str:
    try:
        import yaml
    except ImportError:  # JSON is valid YAML
        return json.dumps(rdf, indent=2)
    return yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True, width=100)


def _pytorch_version() -> str:
    return torch.__version__.split("+", 1)[0]


# --------------------------------------------------------------------------- export


def export_bioimageio(
    model: MPRNet | str | os.PathLike,
    path: str | os.PathLike,
    *,
    name: str,
    description: str,
    authors: Sequence[str | dict] | str | None = None,
    test_input: Any = None,
    license: str = "BSD-3-Clause",
    tags: Sequence[str] | None = None,
    version: str | None = None,
    git_repo: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` as a bioimage.io model package (format 0.5).

    Parameters
    ----------
    model : MPRNet, path or task name
        The network (not modified), a model file or a bundled task name.
    path : str or path
        Destination ``.zip``.
    name, description : str
        Shown on bioimage.io.
    authors : str, dict or list of them, optional
        Names, or dicts with ``name`` (plus e.g. ``affiliation``, ``orcid``).
    test_input : array, optional
        A test image: 2-D, (C, H, W) or (H, W, C), in the intensities users will feed
        (centre-cropped to a multiple of 8, at most 256 px). Default: a synthetic image in
        the range the model's normalisation expects.
    license : str
        SPDX identifier of the weights' license.
    tags : list of str, optional
        Extra tags.
    version : str, optional
        Version of this model package.
    git_repo : str, optional
        Repository URL.
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    pathlib.Path
        The package written.
    """
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise ValueError(f"the bioimage.io package must be a .zip file, got '{path}'")
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True to replace it")
    for label, value in (("name", name), ("description", description)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{label} must be a non-empty string")
    net = _resolve_model(model)
    meta = net.metadata or {}
    channels = net.config.in_c
    proc = _processing(meta)

    if test_input is None:
        x = _default_test_input(channels, proc.example_range)
    else:
        x = _as_test_input(test_input, channels)
    with torch.inference_mode():
        y = net(torch.from_numpy(proc.apply_pre(x)))[0].float().numpy()
    y = proc.apply_post(y)

    from .weights import save_model

    files: dict[str, bytes] = {
        ARCH_FILE: _arch_source().encode("utf-8"),
        WEIGHTS_FILE: _weights_bytes(net),
        TEST_INPUT_FILE: _npy_bytes(x),
        TEST_OUTPUT_FILE: _npy_bytes(y),
        SAMPLE_INPUT_FILE: _tif_bytes(x),
        SAMPLE_OUTPUT_FILE: _tif_bytes(y),
        COVER_FILE: _cover_png(x, y),
        README_FILE: _readme(name.strip(), description.strip(), net, proc, x.shape)
        .encode("utf-8"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_path = save_model(net, Path(tmp) / MODEL_FILE)
        files[MODEL_FILE] = model_path.read_bytes()

    if channels == 3:
        channel_names = ["red", "green", "blue"]
    elif channels == 1:
        channel_names = ["intensity"]
    else:
        channel_names = [f"c{i}" for i in range(channels)]
    space = {"min": MIN_SIZE, "step": MPRNet.size_multiple}
    input_axes = [
        {"type": "batch"},
        {"type": "channel", "channel_names": channel_names},
        {"type": "space", "id": "y", "size": dict(space)},
        {"type": "space", "id": "x", "size": dict(space)},
    ]
    output_axes = [
        {"type": "batch"},
        {"type": "channel", "channel_names": channel_names},
        {"type": "space", "id": "y", "size": {"tensor_id": INPUT_ID, "axis_id": "y"}},
        {"type": "space", "id": "x", "size": {"tensor_id": INPUT_ID, "axis_id": "x"}},
    ]
    task = str(meta.get("task") or "restoration")
    all_tags = ["mprnet", "napari-mprnet", "restoration", task, "2d", "pytorch"]
    method = _training_method(meta)
    if method in ("noise2void", "noise2noise"):
        all_tags += ["self-supervised", method]
    all_tags += [t for t in (tags or []) if t not in all_tags]
    input_descr: dict[str, Any] = {
        "id": INPUT_ID,
        "description": "degraded image",
        "axes": input_axes,
        "test_tensor": {"source": TEST_INPUT_FILE, "sha256": _sha256(files[TEST_INPUT_FILE])},
        "sample_tensor": {"source": SAMPLE_INPUT_FILE,
                          "sha256": _sha256(files[SAMPLE_INPUT_FILE])},
        "data": {"type": "float32"},
    }
    if proc.pre:
        input_descr["preprocessing"] = proc.pre
    output_descr: dict[str, Any] = {
        "id": OUTPUT_ID,
        "description": "restored image (final stage)",
        "axes": output_axes,
        "test_tensor": {"source": TEST_OUTPUT_FILE,
                        "sha256": _sha256(files[TEST_OUTPUT_FILE])},
        "sample_tensor": {"source": SAMPLE_OUTPUT_FILE,
                          "sha256": _sha256(files[SAMPLE_OUTPUT_FILE])},
        "data": {"type": "float32"},
    }
    if proc.post:
        output_descr["postprocessing"] = proc.post
    rdf: dict[str, Any] = {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": name.strip(),
        "description": description.strip(),
        "authors": _authors(authors),
        "cite": [{"text": PAPER_TEXT, "url": PAPER_URL}],
        "license": license,
        "documentation": README_FILE,
        "covers": [COVER_FILE],
        "tags": all_tags,
        "attachments": [{"source": MODEL_FILE, "sha256": _sha256(files[MODEL_FILE])}],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [input_descr],
        "outputs": [output_descr],
        "weights": {
            "pytorch_state_dict": {
                "source": WEIGHTS_FILE,
                "sha256": _sha256(files[WEIGHTS_FILE]),
                "architecture": {
                    "source": ARCH_FILE,
                    "sha256": _sha256(files[ARCH_FILE]),
                    "callable": ARCH_CALLABLE,
                    "kwargs": net.config.to_dict(),
                },
                "pytorch_version": _pytorch_version(),
            }
        },
        "config": {
            "napari-mprnet": {
                "task": task,
                "normalization": meta.get("normalization"),
                "trained": meta.get("trained"),
                "training_method": method,
            }
        },
    }
    if version:
        rdf["version"] = str(version)
    if git_repo:
        rdf["git_repo"] = str(git_repo)
    files = {"rdf.yaml": _dump_yaml(json.loads(json.dumps(rdf, default=str))).encode("utf-8"),
             **files}

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=overwrite) as tmp_name, \
            zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path

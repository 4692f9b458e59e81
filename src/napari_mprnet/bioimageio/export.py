"""Write an MPRNet as a bioimage.io model package (a zip holding ``rdf.yaml``)."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.atomic import atomic_output
from ..model.arch import MPRNet
from . import content as c
from .checks import ExportError, check_arguments, spec_problems
from .intensity import IntensityMapping, choose_mapping, fixed_range
from .package_readme import readme

__all__ = ["FORMAT_VERSION", "HALO", "MIN_BLOCK", "TILE", "export_bioimageio", "min_input_size",
           "validate_package"]

#: bioimage.io model description format written (0.5 family; newer tools upgrade it).
FORMAT_VERSION = "0.5.4"
INPUT_ID = "input0"
OUTPUT_ID = "output0"
#: Output halo in pixels (per side) declared on y and x, so that blockwise prediction
#: matches whole-image prediction (see tests/test_bioimageio.py for the measured error).
HALO = 32
#: Default smallest input y/x (and so smallest block bioimage.io cuts): the network's
#: channel attention averages over its whole input, so very small blocks differ more from
#: whole-image prediction (benchmarks/bench_bioimageio_blocks.py).
MIN_BLOCK = 192
#: Side of the tile grid the packaged network may restore its input on (see ``MPRNetFinal``
#: in content.py); 0 (default): no grid, the network runs on its whole input, unsplit, as
#: restore() runs a tile. A grid only bounds the memory of whole-image prediction: without
#: the patch split, blocks agree with the whole image on or off any grid.
TILE = 0


def _resolve_model(model: Any) -> MPRNet:
    if isinstance(model, MPRNet):
        net = copy.deepcopy(model)
    elif isinstance(model, (str, os.PathLike)):
        from ..weights import load_model

        net = load_model(model, device="cpu")
    else:
        raise TypeError(
            f"model must be an MPRNet, a model file or a task name, got {type(model).__name__}"
        )
    net = net.to("cpu").float().eval()
    net.metadata = c.strip_local_paths(dict(net.metadata or {}))
    return net


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dump_yaml(rdf: dict) -> str:
    try:
        import yaml
    except ImportError:  # JSON is valid YAML
        return json.dumps(rdf, indent=2)
    return yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True, width=100)


def _channels(net: MPRNet, test_input: Any, grey: bool | None) -> int:
    in_c = net.config.in_c
    if in_c != 3:
        return in_c
    if grey is None:
        if test_input is not None:
            squeezed = np.squeeze(np.asarray(test_input))
            grey = squeezed.ndim == 2 or (squeezed.ndim == 3 and 3 not in
                                          (squeezed.shape[0], squeezed.shape[-1]))
        else:
            grey = (net.metadata or {}).get("task") != "derain"  # rain: colour photographs
    return 1 if grey else 3


def min_input_size(halo: int, min_size: int | None = None) -> int:
    """The smallest y/x a package with ``halo`` declares: ``min_size`` (default
    :data:`MIN_BLOCK`), at least the halo on both sides plus 8."""
    smallest = 2 * halo + MPRNet.size_multiple
    return max(c.MIN_SIZE, smallest, MIN_BLOCK if min_size is None else int(min_size))


def _reference(net: MPRNet, test_input: Any, channels: int, min_size: int,
               input_range: tuple[float, float] | None) -> np.ndarray:
    """The test input: the given one (uint8, uint16 and float32 kept, other types as float32),
    else a synthetic image: uint16 (a per-image map), or within the fixed range."""
    if test_input is not None:
        x = c.as_test_input(test_input, channels, min_size)
        return x if x.dtype.name in ("uint8", "uint16", "float32") else x.astype(np.float32)
    size = max(c.DEFAULT_TEST_SIZE, min_size)
    fixed = input_range if input_range is not None else fixed_range(net.metadata)
    if fixed is not None:
        return c.default_test_input(channels, "float32", tuple(map(float, fixed)), size)
    return c.default_test_input(channels, "uint16", (100.0, 1000.0), size)


def _axes(channels: int, halo: int, min_size: int) -> tuple[list[dict], list[dict]]:
    names = {1: ["intensity"], 3: ["red", "green", "blue"]}.get(
        channels, [f"c{i}" for i in range(channels)])
    space = {"min": min_size, "step": MPRNet.size_multiple}
    inputs = [{"type": "batch"}, {"type": "channel", "channel_names": names}]
    inputs += [{"type": "space", "id": axis, "size": dict(space)} for axis in ("y", "x")]
    outputs = [{"type": "batch"}, {"type": "channel", "channel_names": names}]
    outputs += [{"type": "space", "id": axis, "size": {"tensor_id": INPUT_ID, "axis_id": axis},
                 **({"halo": halo} if halo else {})} for axis in ("y", "x")]
    return inputs, outputs


def validate_package(path: str | os.PathLike, label: str | os.PathLike | None = None) -> None:
    """Check ``path`` with bioimageio.spec (when installed); raise :class:`ExportError` (a
    ValueError, one line per problem) if it is invalid."""
    problems = spec_problems(path)
    if problems:
        raise ExportError([(arg, f"{text} [{label or path}]") for arg, text in problems])


def _rdf(name: str, description: str, net: MPRNet, files: dict[str, bytes],
         mapping: IntensityMapping, channels: int, halo: int, tile: int, min_size: int,
         **extra: Any) -> dict:
    meta = net.metadata or {}
    task = str(meta.get("task") or "restoration")
    tags = ["mprnet", "napari-mprnet", "restoration", task, "2d", "pytorch"]
    method = c.training_method(meta)
    if method in ("noise2void", "noise2noise"):
        tags += ["self-supervised", method]
    tags += [t for t in (extra.pop("tags") or []) if t not in tags]
    input_axes, output_axes = _axes(channels, halo, min_size)
    test = {role: {"source": file, "sha256": _sha256(files[file])}
            for role, file in (("in", c.TEST_INPUT_FILE), ("out", c.TEST_OUTPUT_FILE))}
    sample = {role: {"source": file, "sha256": _sha256(files[file])}
              for role, file in (("in", c.SAMPLE_INPUT_FILE), ("out", c.SAMPLE_OUTPUT_FILE))}
    input_descr = {"id": INPUT_ID, "description": "degraded image", "axes": input_axes,
                   "test_tensor": test["in"], "sample_tensor": sample["in"],
                   "data": {"type": mapping.dtype}}
    if mapping.preprocessing():
        input_descr["preprocessing"] = mapping.preprocessing()
    output_descr = {"id": OUTPUT_ID, "description": "restored image (final stage)",
                    "axes": output_axes, "test_tensor": test["out"],
                    "sample_tensor": sample["out"], "data": {"type": "float32"}}
    if mapping.postprocessing():
        output_descr["postprocessing"] = mapping.postprocessing()
    rdf: dict[str, Any] = {
        "type": "model", "format_version": FORMAT_VERSION, "name": name,
        "description": description, "authors": c.authors(extra.pop("authors")),
        "cite": [{"text": c.PAPER_TEXT, "url": c.PAPER_URL}], "license": extra.pop("license"),
        "documentation": c.README_FILE, "covers": ["cover.png"], "tags": tags,
        "attachments": [{"source": c.MODEL_FILE, "sha256": _sha256(files[c.MODEL_FILE])}],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [input_descr], "outputs": [output_descr],
        "weights": {"pytorch_state_dict": {
            "source": c.WEIGHTS_FILE, "sha256": _sha256(files[c.WEIGHTS_FILE]),
            "architecture": {"source": c.ARCH_FILE, "sha256": _sha256(files[c.ARCH_FILE]),
                             "callable": c.ARCH_CALLABLE,
                             "kwargs": {**net.config.to_dict(), "halo": halo,
                                        "tile": tile, **mapping.network_kwargs}},
            "pytorch_version": torch.__version__.split("+", 1)[0],
        }},
        "config": {"napari-mprnet": {"task": task, "normalization": meta.get("normalization"),
                                     "trained": meta.get("trained"),
                                     "training_method": method}},
    }
    rdf.update({k: str(v) for k, v in extra.items() if v})
    return json.loads(json.dumps(rdf, default=str))


def _write_zip(path: Path, files: dict[str, bytes], overwrite: bool) -> None:
    """Validate the package in a temporary folder, then write it to ``path`` (atomically):
    nothing is written where it was asked for unless bioimage.io accepts it."""
    with tempfile.TemporaryDirectory(prefix="napari-mprnet-export-") as tmp:
        candidate = Path(tmp) / path.name
        with zipfile.ZipFile(candidate, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for member, data in files.items():
                archive.writestr(member, data)
        validate_package(candidate, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=overwrite) as tmp_name:
            shutil.copyfile(candidate, tmp_name)


def export_bioimageio(
    model: MPRNet | str | os.PathLike,
    path: str | os.PathLike,
    *,
    name: str,
    description: str,
    authors: Sequence[str | dict] | str | None = None,
    test_input: Any = None,
    input_range: tuple[float, float] | None = None,
    grey: bool | None = None,
    halo: int = HALO,
    tile: int = TILE,
    min_size: int | None = None,
    license: str = "BSD-3-Clause",
    tags: Sequence[str] | None = None,
    version: str | None = None,
    git_repo: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` as a bioimage.io model package (format 0.5), validated when
    bioimageio.spec is installed.

    The package maps intensities as :func:`napari_mprnet.restore` does for images like the
    test input (see :mod:`napari_mprnet.bioimageio.intensity`), declares a ``halo`` for
    blockwise prediction, and takes 1-channel input for grey data.

    Parameters
    ----------
    model : MPRNet, path or task name
        The network (not modified), a model file or a bundled task name.
    path : str or path
        Destination ``.zip``.
    name, description : str
        Shown on bioimage.io.
    authors : str, dict or list of them, optional
        "Name", "Name <email>" or "Name <email> @github_user", or dicts with ``name`` (plus
        e.g. ``affiliation``, ``orcid``, ``github_user``).
    test_input : array, optional
        A representative image: 2-D, (C, H, W) or (H, W, C), e.g. from the training data
        (centre-cropped to a multiple of 8, at most 256 px): the package's test tensor and
        cover, kept in its type (uint8, uint16, float32; others as float32). It does not
        restrict the package: every package takes uint8, uint16 and float32 images and maps
        each as restore() does (see :mod:`napari_mprnet.bioimageio.intensity`). Default: a
        synthetic uint16 image.
    input_range : (float, float), optional
        One fixed map for every image: these input intensities are mapped to 0 and 1
        (declared as ``scale_linear``) instead of restore()'s per-image map.
    grey : bool, optional
        A 1-channel input for a 3-channel network (default: a 2-D test input, or not derain).
    halo : int
        Output halo in pixels per side (0: none).
    tile : int
        0 (default, :data:`TILE`): the packaged network restores its whole input in one
        piece, as restore() restores a tile; whole-image prediction is then restore()'s
        result in one tile. A multiple of 8: with a halo, it restores its input in tiles of
        ``tile`` px on a grid starting inside the halo, each with ``halo`` px of context,
        which bounds the memory whole-image prediction of a large image needs.
    min_size : int, optional
        Smallest input y/x the package declares (a multiple of 8; default
        :data:`MIN_BLOCK`, at least ``2 * halo + 8``): bioimage.io never cuts smaller blocks
        and does not take smaller images.
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

    Raises
    ------
    ExportError
        (a ValueError) Bad arguments, one line per problem, found before anything is
        computed; or a package bioimageio.spec finds invalid (nothing is written).
    """
    path = Path(path)
    check_arguments(path=path, overwrite=overwrite, name=name, description=description,
                    authors=authors, license=license, tags=tags, version=version,
                    git_repo=git_repo, input_range=input_range, halo=halo, tile=tile,
                    min_size=min_size,
                    size_multiple=MPRNet.size_multiple, smallest=c.MIN_SIZE)
    min_size = min_input_size(halo, min_size)
    net = _resolve_model(model)
    channels = _channels(net, test_input, grey)
    x = _reference(net, test_input, channels, min_size, input_range)
    mapping = choose_mapping(net.metadata, x, input_range)
    with torch.inference_mode():
        net_in = torch.from_numpy(mapping.apply_pre(x))
        packaged = c.packaged_network(net, halo, tile=tile, **mapping.network_kwargs)
        # bioimageio.core's test runs the network on the test input as it is (no padding,
        # the output's halo kept); the cover shows what its predict gives
        y = mapping.apply_post(packaged(net_in).float().numpy())
        shown = mapping.apply_post(c.predict_whole(packaged, net_in, halo).float().numpy())

    from ..weights import save_model

    files: dict[str, bytes] = {
        c.ARCH_FILE: c.arch_source().encode("utf-8"),
        c.WEIGHTS_FILE: c.weights_bytes(net),
        c.TEST_INPUT_FILE: c.npy_bytes(x),
        c.TEST_OUTPUT_FILE: c.npy_bytes(y),
        "cover.png": c.cover_png(x, shown),
        c.SAMPLE_INPUT_FILE: c.tif_bytes(x),
        c.SAMPLE_OUTPUT_FILE: c.tif_bytes(shown),
        c.README_FILE: readme(name.strip(), description.strip(), net, mapping, x.shape,
                                halo, min_size, tile).encode("utf-8"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        files[c.MODEL_FILE] = save_model(net, Path(tmp) / c.MODEL_FILE).read_bytes()
    rdf = _rdf(name.strip(), description.strip(), net, files, mapping, channels, halo, tile,
               min_size,
               authors=authors, license=license, tags=tags, version=version,
               git_repo=git_repo)
    _write_zip(path, {"rdf.yaml": _dump_yaml(rdf).encode("utf-8"), **files}, overwrite)
    return path

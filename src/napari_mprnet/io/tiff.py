"""TIFF in and out, keeping what the file says about itself.

- ImageJ hyperstacks (``TZCYXS`` subsets) come back as ImageJ hyperstacks: axes, X/Y
  resolution, z spacing, unit, frame interval, slice labels and display settings;
- OME-TIFF comes back as OME-TIFF: axes, physical sizes and units, time increment, image and
  channel names;
- any other TIFF keeps its axes (tifffile's "shaped" metadata) and its X/Y resolution.

Reading and writing use tifffile's own ImageJ and OME readers and writers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_output

__all__ = ["IMAGEJ_DTYPES", "ImageFile", "read_tiff", "write_tiff"]

#: Data types an ImageJ hyperstack can hold.
IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_KNOWN_AXES = "TZCYXS"
#: ImageJ metadata carried from the input to the output.
_IMAGEJ_KEYS = ("spacing", "unit", "finterval", "fps", "loop", "mode", "Labels", "Ranges",
                "LUTs", "min", "max", "xorigin", "yorigin", "zorigin")
#: OME ``Pixels`` attributes carried over (physical calibration).
_OME_PIXELS = ("PhysicalSizeX", "PhysicalSizeXUnit", "PhysicalSizeY", "PhysicalSizeYUnit",
               "PhysicalSizeZ", "PhysicalSizeZUnit", "TimeIncrement", "TimeIncrementUnit")
#: OME ``Channel`` attributes carried over when every channel has them.
_OME_CHANNEL = ("Name", "Color", "Fluor", "EmissionWavelength", "ExcitationWavelength")


@dataclass
class ImageFile:
    """An image file's pixels and what is needed to write a result the same way.

    ``kind`` is "imagej", "ome", "tiff" or "image" (PNG, JPEG: written back as TIFF); ``axes`` uses the letters TZCYXS (None if the
    file does not record them); ``options`` are the tifffile writer keywords (resolution,
    ImageJ or OME metadata) for a result of the same shape.
    """

    data: np.ndarray
    axes: str | None
    kind: str = "tiff"
    options: dict[str, Any] = field(default_factory=dict)


def _mapped_axes(axes: str, ndim: int) -> str | None:
    """tifffile's axes in TZCYXS letters (generic Q/I axes become a spare T/Z/C)."""
    axes = axes.upper()
    if len(axes) != ndim:
        return None
    spare = [letter for letter in "TZC" if letter not in axes]
    mapped = []
    for letter in axes:
        if letter in _KNOWN_AXES:
            mapped.append(letter)
        elif spare:
            mapped.append(spare.pop(0))
        else:
            return None
    return "".join(mapped)


def _resolution(page: Any) -> dict[str, Any]:
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return {}
    x, y = page.resolution
    if (x, y) == (1.0, 1.0):
        return {}
    options: dict[str, Any] = {"resolution": (x, y)}
    if "ResolutionUnit" in tags:
        options["resolutionunit"] = tags["ResolutionUnit"].value
    return options


def _ome_metadata(xml: str) -> dict[str, Any]:
    import tifffile

    image = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    if isinstance(image, list):
        image = image[0]
    pixels = image.get("Pixels", {})
    meta: dict[str, Any] = {key: pixels[key] for key in _OME_PIXELS if key in pixels}
    if image.get("Name"):
        meta["Name"] = image["Name"]
    channels = pixels.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    carried = {key: [c[key] for c in channels] for key in _OME_CHANNEL
               if channels and all(isinstance(c, dict) and key in c for c in channels)}
    if carried:
        meta["Channel"] = carried
    return meta


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collect tifffile's log messages instead of letting them reach the terminal."""
    logger = logging.getLogger("tifffile")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def read_tiff(path: str | os.PathLike) -> ImageFile:
    """Read the first image series of a TIFF with its axes and calibration.

    Raises
    ------
    ValueError
        The file holds no readable image (tifffile's complaint, if any, in the message).
    """
    with _tifffile_log() as complaints:
        image = _read_tiff(path)
    if image.data.ndim < 2 or image.data.size == 0:
        detail = f": {complaints[0]}" if complaints else ""
        raise ValueError(f"no image data found in {Path(path).name}{detail}")
    if complaints:
        warnings.warn(f"{Path(path).name}: {complaints[0]}", stacklevel=2)
    return image


def _read_tiff(path: str | os.PathLike) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = _mapped_axes(series.axes, data.ndim)
        page = series.pages[0] if series.pages else tif.pages[0]
        options = _resolution(page)
        if tif.is_imagej:
            stored = tif.imagej_metadata or {}
            options["metadata"] = {key: stored[key] for key in _IMAGEJ_KEYS if key in stored}
            return ImageFile(data, axes, "imagej", options)
        if tif.is_ome:
            options["metadata"] = _ome_metadata(tif.ome_metadata)
            return ImageFile(data, axes, "ome", options)
        if getattr(page, "photometric", None) == tifffile.PHOTOMETRIC.RGB:
            options["photometric"] = "rgb"
    return ImageFile(data, axes, "tiff", options)


def _imagej_ready(data: np.ndarray, axes: str | None) -> bool:
    if axes is None or data.dtype not in IMAGEJ_DTYPES:
        return False
    order = [_KNOWN_AXES.index(a) for a in axes if a in _KNOWN_AXES]
    if len(order) != len(axes) or order != sorted(order):
        return False
    return "S" not in axes or data.dtype == np.uint8


def write_tiff(path: str | os.PathLike, data: np.ndarray, axes: str | None = None,
               like: ImageFile | None = None, *, overwrite: bool = False) -> Path:
    """Write ``data`` atomically as the same kind of TIFF as ``like`` (its metadata kept).

    Parameters
    ----------
    path : path
        The output file. Never replaced unless ``overwrite`` (see :mod:`.atomic`).
    data : numpy.ndarray
        The pixels, e.g. a restored ``like.data`` (same shape).
    axes : str, optional
        Axes of ``data`` in TZCYXS letters (default ``like.axes``).
    like : ImageFile, optional
        The input it was made from: an ImageJ hyperstack gives an ImageJ hyperstack (if
        ImageJ can hold ``data``'s dtype, else a warning and a plain TIFF), an OME-TIFF an
        OME-TIFF; its calibration is copied.
    """
    import tifffile

    path = Path(path)
    kind = like.kind if like is not None and like.kind != "image" else "tiff"
    options = dict(like.options) if like is not None else {}
    axes = axes or (like.axes if like is not None else None)
    metadata = dict(options.pop("metadata", {}))
    rgb = axes is not None and axes.endswith("S") and data.shape[-1] in (3, 4)
    options["photometric"] = "rgb" if rgb else "minisblack"
    if kind == "imagej" and not _imagej_ready(data, axes):
        warnings.warn(f"{path.name}: ImageJ hyperstacks cannot hold {data.dtype} data with "
                      f"axes {axes}; writing a plain TIFF (calibration kept)", stacklevel=2)
        kind, metadata = "tiff", {}
        options.pop("resolutionunit", None)
    if kind == "imagej":
        options.update(imagej=True, metadata={**metadata, "axes": axes})
        options.pop("photometric") if not rgb else None
    elif kind == "ome":
        options.update(ome=True, metadata={**metadata, **({"axes": axes} if axes else {})})
    else:
        options.update(metadata={"axes": axes} if axes else {})
    with atomic_output(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data, **options)
    return path

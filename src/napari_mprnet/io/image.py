"""Reading any supported image file, and the names of the files made from it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .tiff import ImageFile, read_tiff

__all__ = ["IMAGE_SUFFIXES", "TIFF_SUFFIXES", "UnreadableImageError", "read_image",
           "split_name"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
#: Double endings kept whole: ``cells.ome.tif`` is ``cells`` + ``.ome.tif``.
_DOUBLE = (".ome.tif", ".ome.tiff", ".ome.zarr")


class UnreadableImageError(ValueError):
    """An input file that cannot be read as an image (damaged, truncated, not an image)."""


def split_name(path: str | os.PathLike) -> tuple[str, str]:
    """``(stem, ending)`` of a file name, keeping OME double endings together."""
    name = Path(path).name
    for ending in _DOUBLE:
        if name.lower().endswith(ending) and len(name) > len(ending):
            return name[:-len(ending)], name[-len(ending):]
    suffix = Path(name).suffix
    return (name[:-len(suffix)], suffix) if suffix else (name, "")


def read_image(path: str | os.PathLike) -> ImageFile:
    """Read a TIFF (with its axes and calibration), PNG or JPEG file.

    Raises
    ------
    UnreadableImageError
        Whatever went wrong inside the reader (a damaged file can raise anything from
        ``IndexError`` to ``struct.error``), as one message naming the file.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return read_tiff(path)
        import imageio.v3 as iio

        data = np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a reader is "unreadable"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UnreadableImageError(
            f"cannot read {path.name} as an image ({type(err).__name__}"
            f"{': ' + detail[:200] if detail else ''}); is the file complete?") from None
    return ImageFile(data, None, "image")

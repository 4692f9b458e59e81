"""Image files in and out, and the one atomic-write helper every writer uses.

- :mod:`.atomic`: :func:`atomic_output` (temporary of our own naming in the target's folder,
  fsync, a commit that never replaces without ``overwrite``), stale temporaries;
- :mod:`.tiff`: TIFF with its ImageJ hyperstack / OME metadata, via tifffile's own writers;
- :mod:`.image`: reading any supported file, output naming (``.ome.tif`` kept whole);
- :mod:`.zarr`: zarr / OME-Zarr (lazy reading, streamed writing; needs ``zarr``).

Nothing here imports torch or zarr at import time.
"""

from .atomic import (
    DiskFullError,
    OutputExistsError,
    atomic_output,
    atomic_write_bytes,
    remove_stale_temporaries,
)
from .image import IMAGE_SUFFIXES, UnreadableImageError, read_image, split_name
from .tiff import ImageFile, read_tiff, write_tiff

__all__ = ["IMAGE_SUFFIXES", "DiskFullError", "ImageFile", "OutputExistsError",
           "UnreadableImageError", "atomic_output", "atomic_write_bytes", "read_image",
           "read_tiff", "remove_stale_temporaries", "split_name", "write_tiff"]

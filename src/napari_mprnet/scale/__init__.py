"""Scale-out: lazy chunked restoration of dask/zarr arrays and dask.distributed clusters.

- :mod:`.lazy`: ``restore_dask``, seam-free Y/X chunking (exactly the whole-plane result);
- :mod:`.models`: picklable model handles, one load per process;
- :mod:`.distributed`: worker plugins (device pinning, weights sent once), local clusters;
- zarr / OME-Zarr reading and streamed writing live in :mod:`napari_mprnet.io.zarr`.

``distributed`` and ``zarr`` are optional (``pip install napari-mprnet[dask]``).
"""

from .lazy import AUTO_CHUNK, is_dask_array, plan_axis, restore_dask

__all__ = ["AUTO_CHUNK", "is_dask_array", "plan_axis", "restore_dask"]

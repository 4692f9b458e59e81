"""Checking a dask block and running one row of its tiles through the network (for
:mod:`.lazy`).

The tiles go in batches of at most ``batch``, halved on out-of-memory errors (a chunked run
cannot shrink its tiles, which the global tile grid fixes). With ``low_band`` the low band of
each tile's residual is appended as the last output, by the same function the in-memory
runner uses (:func:`~napari_mprnet.engine.bands.residual_low_band`), so that the chunked
result stays bit-for-bit the in-memory one.
"""

from __future__ import annotations

import numpy as np

from ..engine.backends import is_out_of_memory
from ..engine.bands import residual_low_band
from ..engine.pipeline import refuse_masked, refuse_non_finite

__all__ = ["checked_block", "forward_row"]


def checked_block(data: np.ndarray, where: str) -> np.ndarray:
    """``data`` as a plain array, refusing masked arrays and NaN/inf pixels (naming ``where``)."""
    refuse_masked(data, where)
    data = np.asarray(data)
    refuse_non_finite(data, where)
    return data


def forward_row(runner, tiles: list[np.ndarray], stages: bool, low_band: bool,
                batch: int) -> list[np.ndarray]:
    """Outputs ``(n, h, w, c)`` of ``runner`` (a :class:`~napari_mprnet.engine.runner.
    TiledRunner`) for ``tiles``: final, stage 2 and 1 (``stages``), the low band."""
    while True:
        try:
            outs = [runner.forward_tiles(np.stack(tiles[i:i + batch]), stages)
                    for i in range(0, len(tiles), batch)]
            break
        except Exception as error:  # only out-of-memory is handled
            if not is_out_of_memory(error):
                raise
            runner._release_cached_memory()
            if batch == 1:
                raise MemoryError(
                    f"out of memory with one {runner.tile_size} px tile on {runner.device}; "
                    "pass a smaller tile_size (chunked runs cannot shrink tiles on the fly)"
                ) from None
            batch = max(1, batch // 2)
    results = [np.concatenate(per_stage) for per_stage in zip(*outs)]
    if low_band:
        results.append(residual_low_band(results[0], np.stack(tiles)))
    return results

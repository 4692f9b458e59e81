"""Show what was removed: the extra layer, its check in the metadata, the notification."""

from __future__ import annotations

import numpy as np
from napari.layers import Image
from scipy import ndimage

from napari_mprnet import restore
from napari_mprnet._layers import notify_removed
from napari_mprnet.engine.removed import removed_part


def _stack():
    rng = np.random.default_rng(2)
    field = ndimage.gaussian_filter(rng.random((3, 48, 48)), (0, 2, 2)) * 3000 + 100
    return field, rng.poisson(field).astype(np.uint16)


def test_layer_gets_a_removed_layer_with_the_check(tiny_model, notes):
    _, data = _stack()
    layer = Image(data, name="cells", scale=(2.0, 0.5, 0.5))
    result, removed = restore(layer, model=tiny_model, device="cpu", tile_size=32,
                              tile_overlap=8, return_removed=True)
    assert (result.name, removed.name) == ("cells (denoised)", "cells (removed)")
    np.testing.assert_array_equal(removed.data, data.astype(np.float32) - result.data)
    assert tuple(removed.scale) == (2.0, 0.5, 0.5)
    low, high = removed.contrast_limits
    assert low == -high and high > 0  # symmetric about "nothing removed"
    check = result.metadata["napari_mprnet"]["removed_check"]
    assert check == removed.metadata["napari_mprnet"]["removed_check"]
    assert check["checked"] and len(check["planes"]) == 3
    warned = [m for s, m in notes if s == "warning"]
    assert bool(warned) == bool(check["flagged_planes"])


def test_notification_names_the_planes(notes):
    field, data = _stack()
    result = field.astype(np.float32)
    result[2] = ndimage.gaussian_filter(data[2].astype(np.float32), 2)
    notify_removed(removed_part(data, result), "cells")
    assert notes == [("warning", ("'cells': the denoiser removed structure on plane Z 2: "
                      "compare with strength 0.5 (the removed part is not only noise)"))]
    notify_removed(removed_part(data, field), "cells")  # noise only: nothing more
    assert len(notes) == 1

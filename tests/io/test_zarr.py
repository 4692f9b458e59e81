"""zarr / OME-Zarr round trips: axes, scale of the level restored, v3 dimension_names."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")

from napari_mprnet.io.zarr import read_zarr, write_zarr

AXES = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}]
SCALE = [{"type": "scale", "scale": [1.0, 0.25, 0.25]}]


def _ome_zarr(path, zarr_format):
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    multiscale = {"name": "cells", "axes": AXES, "datasets": [
        {"path": "0", "coordinateTransformations": SCALE},
        {"path": "1", "coordinateTransformations": [{"type": "scale",
                                                     "scale": [1.0, 0.5, 0.5]}]}]}
    if zarr_format == 3:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    level = group.create_array("0", shape=(2, 20, 30), chunks=(1, 10, 10), dtype="u2")
    level[:] = np.arange(2 * 20 * 30, dtype="u2").reshape(2, 20, 30)
    group.create_array("1", shape=(2, 10, 15), chunks=(1, 10, 10), dtype="u2")
    return level[:]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_in_ome_zarr_out(tmp_path, zarr_format):
    pixels = _ome_zarr(tmp_path / "img.ome.zarr", zarr_format)
    image = read_zarr(tmp_path / "img.ome.zarr")
    assert image.axes == "CYX" and image.zarr_format == zarr_format
    assert image.ome["coordinateTransformations"] == SCALE
    target = tmp_path / "img_denoised.ome.zarr"
    write_zarr([image.data.astype("f4") * 2], [target], image.axes, like=image,
               compute_kwargs={"scheduler": "sync"})
    group = zarr.open_group(str(target), mode="r")
    attrs = dict(group.attrs)
    multiscales = attrs["ome"]["multiscales"] if zarr_format == 3 else attrs["multiscales"]
    assert multiscales[0]["axes"] == AXES and multiscales[0]["name"] == "cells"
    assert multiscales[0]["datasets"] == [{"path": "0", "coordinateTransformations": SCALE}]
    np.testing.assert_array_equal(group["0"][:], pixels.astype("f4") * 2)
    again = read_zarr(target)
    assert again.axes == "CYX" and again.ome["coordinateTransformations"] == SCALE
    if zarr_format == 3:
        assert group["0"].metadata.dimension_names == ("c", "y", "x")


def test_v3_dimension_names_are_read_and_written(tmp_path):
    source = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(3, 8, 9),
                             chunks=(1, 8, 9), dtype="f4", dimension_names=["t", "y", "x"])
    source[:] = 1.0
    image = read_zarr(tmp_path / "a.zarr")
    assert image.axes == "TYX" and image.dimension_names == ("t", "y", "x")
    write_zarr([image.data], [tmp_path / "b.zarr"], image.axes, like=image)
    written = zarr.open_array(str(tmp_path / "b.zarr"), mode="r")
    assert written.metadata.dimension_names == ("t", "y", "x")
    assert written.attrs["axes"] == "TYX"


def test_stages_are_written_together_and_kept_if_present(tmp_path):
    data = da.ones((8, 8), chunks=4, dtype="f4")
    targets = [tmp_path / "a.zarr", tmp_path / "b.zarr"]
    write_zarr([data, data * 2], targets, "YX")
    with pytest.raises(FileExistsError):
        write_zarr([data * 3], [targets[1]], "YX")
    np.testing.assert_array_equal(zarr.open_array(str(targets[1]), mode="r")[:], 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "b.zarr"]

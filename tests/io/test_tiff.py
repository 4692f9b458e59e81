"""TIFF round trips keep ImageJ hyperstack and OME metadata, read back with tifffile."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_mprnet.io import UnreadableImageError, read_image, split_name, write_tiff


@pytest.fixture
def hyperstack(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (2, 3, 2, 20, 24)).astype(np.uint16)
    path = tmp_path / "hs.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "TZCYX", "spacing": 0.5, "unit": "um",
                               "finterval": 2.0})
    return path, data


def test_imagej_hyperstack_round_trip(tmp_path, hyperstack):
    path, data = hyperstack
    image = read_image(path)
    assert image.kind == "imagej" and image.axes == "TZCYX"
    np.testing.assert_array_equal(image.data, data)
    out = tmp_path / "out.tif"
    write_tiff(out, image.data.astype(np.float32), like=image)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZCYX"
        meta = tif.imagej_metadata
        assert meta["spacing"] == 0.5 and meta["unit"] == "um" and meta["finterval"] == 2.0
        assert (meta["frames"], meta["slices"], meta["channels"]) == (2, 3, 2)
        assert tif.pages[0].resolution == pytest.approx((5.0, 5.0))
        assert tif.series[0].dtype == np.float32


def test_imagej_cannot_hold_float64_falls_back_with_a_warning(tmp_path, hyperstack):
    image = read_image(hyperstack[0])
    out = tmp_path / "out.tif"
    with pytest.warns(UserWarning, match="ImageJ"):
        write_tiff(out, image.data.astype(np.float64), like=image)
    with tifffile.TiffFile(out) as tif:
        assert not tif.is_imagej and tif.series[0].axes == "TZCYX"
        assert tif.pages[0].resolution == pytest.approx((5.0, 5.0))


def test_ome_tiff_round_trip(tmp_path):
    data = np.random.default_rng(1).random((3, 2, 20, 24)).astype(np.float32)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "ZCYX", "PhysicalSizeX": 0.1, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.1,
        "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": 0.7, "Channel": {"Name": ["DAPI", "GFP"]}})
    image = read_image(path)
    assert image.kind == "ome" and image.axes == "ZCYX"
    out = tmp_path / "cells_denoised.ome.tif"
    write_tiff(out, image.data, like=image)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZCYX"
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["PhysicalSizeX"] == 0.1 and pixels["PhysicalSizeZ"] == 0.7
    assert pixels["PhysicalSizeXUnit"] == "µm"
    assert [c["Name"] for c in pixels["Channel"]] == ["DAPI", "GFP"]


def test_plain_tiff_keeps_axes_and_rgb(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    image = read_image(tmp_path / "rgb.tif")
    assert image.kind == "tiff" and image.axes == "YXS"
    write_tiff(tmp_path / "o.tif", image.data.astype(np.float32), like=image)
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.series[0].axes == "YXS" and tif.pages[0].photometric == 2  # RGB


def test_damaged_files_raise_one_clear_error(tmp_path):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((64, 64), np.uint16))
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(good.read_bytes()[:16] + b"\xff" * 300)  # valid header, garbage after
    (tmp_path / "empty.png").write_bytes(b"")
    for path in (damaged, tmp_path / "empty.png"):
        with pytest.raises(UnreadableImageError, match=path.name):
            read_image(path)


@pytest.mark.parametrize(("name", "parts"), [
    ("a.ome.tif", ("a", ".ome.tif")), ("a.OME.TIFF", ("a", ".OME.TIFF")),
    ("x.tif", ("x", ".tif")), ("img.ome.zarr", ("img", ".ome.zarr")), ("noext", ("noext", "")),
])
def test_split_name_keeps_ome_endings_whole(name, parts):
    assert split_name(name) == parts

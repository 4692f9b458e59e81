"""napari-mprnet restore with zarr stores and --workers (a local dask cluster)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_mprnet import restore, save_model
from napari_mprnet.cli import main

zarr = pytest.importorskip("zarr")

FAST_API = {"tile_size": 32, "tile_overlap": 8, "device": "cpu"}
ENGINE = ["-q", "--device", "cpu", "--tile-size", "32", "--tile-overlap", "8"]


@pytest.fixture
def weights(tmp_path, tiny_model):
    return str(save_model(tiny_model, tmp_path / "tiny.safetensors"))


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    stack = (rng.random((2, 70, 60)) * 3000).astype(np.uint16)
    tifffile.imwrite(folder / "stack.tif", stack, metadata={"axes": "ZYX"})
    plane = rng.random((90, 100)).astype(np.float32)
    store = zarr.open_array(str(tmp_path / "plane.zarr"), mode="w", shape=plane.shape,
                            chunks=(32, 32), dtype="f4")
    store[:] = plane
    return folder, tmp_path / "plane.zarr", stack, plane


def _expected(image, weights, axes=None):
    return restore(image, model=weights, tile_size=32, tile_overlap=8, device="cpu", axes=axes)


def test_zarr_in_zarr_out_in_process(tmp_path, inputs, weights):
    _, source, _, plane = inputs
    out = tmp_path / "out"
    assert main(["restore", str(source), "-o", str(out), "--weights", weights,
                 "--chunk-size", "24", *ENGINE]) == 0
    written = zarr.open_array(str(out / "plane_denoised.zarr"), mode="r")
    assert written.chunks == (48, 48) and written.attrs["axes"] == "YX"
    np.testing.assert_array_equal(written[:], _expected(plane, weights))
    # existing outputs are kept unless --overwrite
    assert main(["restore", str(source), "-o", str(out), "--weights", weights, *ENGINE]) == 1
    assert main(["restore", str(source), "-o", str(out), "--weights", weights, "--overwrite",
                 *ENGINE]) == 0


def test_workers_two_end_to_end_on_tiffs_and_zarr(tmp_path, inputs, weights):
    folder, source, stack, plane = inputs
    out = tmp_path / "out"
    status = main(["restore", str(folder), str(source), "-o", str(out), "--weights", weights,
                   "--workers", "2", "--chunk-size", "24", *ENGINE])
    assert status == 0
    np.testing.assert_allclose(tifffile.imread(out / "stack_denoised.tif"),
                               _expected(stack, weights, "ZYX"), rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(zarr.open_array(str(out / "plane_denoised.zarr"), mode="r")[:],
                               _expected(plane, weights), rtol=1e-5, atol=1e-5)


def test_bad_scale_options_fail_cleanly(tmp_path, inputs, weights, capsys):
    _, source, _, _ = inputs
    assert main(["restore", str(source), "-o", str(tmp_path / "o"), "--weights", weights,
                 "--chunk-size", "big", *ENGINE]) == 1
    assert "--chunk-size" in capsys.readouterr().err
    assert main(["restore", str(source), "-o", str(tmp_path / "o"), "--workers", "0",
                 *ENGINE]) == 2
    with pytest.raises(SystemExit):
        main(["restore", str(source), "-o", str(tmp_path / "o"), "--workers", "2",
              "--scheduler", "tcp://x:1"])


def test_integer_zarr_is_clipped_like_the_in_memory_path(tmp_path, weights):
    rng = np.random.default_rng(1)
    image = (rng.random((50, 40)) * 255).astype(np.uint8)
    store = zarr.open_array(str(tmp_path / "u8.zarr"), mode="w", shape=image.shape,
                            chunks=(25, 20), dtype="u1")
    store[:] = image
    for flag, folder in (([], "clipped"), (["--no-clip"], "raw")):
        assert main(["restore", str(tmp_path / "u8.zarr"), "-o", str(tmp_path / folder),
                     "--weights", weights, "--strength", "1", *flag, *ENGINE]) == 0
    clipped = zarr.open_array(str(tmp_path / "clipped" / "u8_denoised.zarr"), mode="r")[:]
    raw = zarr.open_array(str(tmp_path / "raw" / "u8_denoised.zarr"), mode="r")[:]
    assert clipped.min() >= 0 and clipped.max() <= 255 and (raw.min() < 0 or raw.max() > 255)
    np.testing.assert_array_equal(clipped, np.clip(raw, 0, 255))
    np.testing.assert_array_equal(clipped, restore(image, model=weights, strength=1.0,
                                                   **FAST_API))


def test_ome_zarr_in_ome_zarr_out(tmp_path, weights):
    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    axes = [{"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    scale = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [
        {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}]}
    level = group.create_array("0", shape=(2, 40, 40), chunks=(1, 20, 20), dtype="f4",
                               dimension_names=["z", "y", "x"])
    level[:] = np.random.default_rng(2).random((2, 40, 40)).astype("f4")
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "img.ome.zarr"), "-o", str(out), "--weights",
                 weights, *ENGINE]) == 0
    written = zarr.open_group(str(out / "img_denoised.ome.zarr"), mode="r")
    multiscale = written.attrs["ome"]["multiscales"][0]
    assert multiscale["axes"] == axes
    assert multiscale["datasets"] == [{"path": "0", "coordinateTransformations": scale}]
    assert written["0"].metadata.dimension_names == ("z", "y", "x")
    np.testing.assert_array_equal(written["0"][:], restore(level[:], model=weights, axes="ZYX",
                                                           **FAST_API))


def test_zarr_output_records_the_noise_level_used(tmp_path, inputs, weights):
    _, source, _, plane = inputs
    for extra, expected in (([], "estimated"), (["--noise", "0.02"], {"sd": 0.02}),
                            (["--noise", "0.001,0.0001"],
                             {"gain": 0.001, "offset_variance": 0.0001})):
        out = tmp_path / f"out{len(extra)}{len(''.join(extra))}"
        assert main(["restore", str(source), "-o", str(out), "--weights", weights,
                     *extra, *ENGINE]) == 0
        written = zarr.open_array(str(out / "plane_denoised.zarr"), mode="r")
        assert written.attrs["napari_mprnet"]["noise"] == expected
        noise = None if not extra else [float(v) for v in extra[1].split(",")]
        noise = noise if noise is None or len(noise) == 2 else noise[0]
        np.testing.assert_array_equal(written[:], restore(plane, model=weights, noise=noise,
                                                          **FAST_API))
    out = tmp_path / "fixed"
    assert main(["restore", str(source), "-o", str(out), "--weights", weights, "--strength",
                 "1", *ENGINE]) == 0
    assert "noise" not in zarr.open_array(str(out / "plane_denoised.zarr"),
                                          mode="r").attrs["napari_mprnet"]

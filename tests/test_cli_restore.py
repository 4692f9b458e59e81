"""napari-mprnet restore, end to end on temporary TIFF/PNG files."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_mprnet import save_model
from napari_mprnet.cli import main


@pytest.fixture
def weights(tmp_path, tiny_model):
    return str(save_model(tiny_model, tmp_path / "tiny.safetensors"))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "stack.tif", (rng.random((2, 40, 48)) * 3000).astype(np.uint16),
                     metadata={"axes": "ZYX"})
    tifffile.imwrite(folder / "rgb.tif", (rng.random((32, 32, 3)) * 255).astype(np.uint8),
                     photometric="rgb")
    import imageio.v3 as iio

    iio.imwrite(folder / "photo.png", (rng.random((24, 40)) * 255).astype(np.uint8))
    return folder


def _run(*args):
    return main(["restore", *map(str, args), "-q", "--device", "cpu", "--tile-size", "32",
                 "--tile-overlap", "8"])


def test_folder_is_restored_with_axes_kept(tmp_path, images, weights):
    out = tmp_path / "out"
    assert _run(images, "--weights", weights, "-o", out, "--stages") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{stem}_denoised{s}.tif" for stem in ("stack", "rgb", "photo")
                           for s in ("", "_stage2", "_stage1"))
    with tifffile.TiffFile(out / "stack_denoised.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == (2, 40, 48)
        assert tif.series[0].dtype == np.float32
    with tifffile.TiffFile(out / "rgb_denoised.tif") as tif:
        assert tif.series[0].shape == (32, 32, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_result_matches_the_python_api(tmp_path, images, weights, tiny_model):
    from napari_mprnet import restore

    out = tmp_path / "out"
    assert _run(images / "stack.tif", "--weights", weights, "-o", out) == 0
    data = tifffile.imread(images / "stack.tif")
    expected = restore(data, model=tiny_model, device="cpu", tile_size=32, tile_overlap=8)
    np.testing.assert_allclose(tifffile.imread(out / "stack_denoised.tif"), expected, atol=1e-4)


def test_glob_and_output_dtype_same(tmp_path, images, weights):
    out = tmp_path / "out"
    assert _run(str(images / "*.tif"), "--weights", weights, "-o", out,
                "--output-dtype", "same") == 0
    assert tifffile.imread(out / "stack_denoised.tif").dtype == np.uint16
    assert not (out / "photo_denoised.tif").exists()


def test_existing_outputs_are_not_overwritten_without_flag(tmp_path, images, weights, capsys):
    out = tmp_path / "out"
    assert _run(images / "rgb.tif", "--weights", weights, "-o", out) == 0
    target = out / "rgb_denoised.tif"
    target.write_bytes(b"keep me")
    assert _run(images / "rgb.tif", "--weights", weights, "-o", out) == 1
    assert target.read_bytes() == b"keep me"
    assert "--overwrite" in capsys.readouterr().err
    assert _run(images / "rgb.tif", "--weights", weights, "-o", out, "--overwrite") == 0
    assert tifffile.imread(target).shape == (32, 32, 3)


def test_inputs_are_never_replaced(tmp_path, weights):
    folder = tmp_path / "d"
    folder.mkdir()
    data = np.ones((16, 16), np.float32)
    tifffile.imwrite(folder / "a.tif", data)
    tifffile.imwrite(folder / "a_denoised.tif", data)
    before = (folder / "a_denoised.tif").read_bytes()
    assert _run(folder / "a.tif", folder / "a_denoised.tif", "--weights", weights, "-o", folder,
                "--overwrite") == 1
    assert (folder / "a_denoised.tif").read_bytes() == before


def test_bad_file_is_reported_and_the_batch_continues(tmp_path, images, weights, capsys):
    (images / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    assert _run(images, "missing.tif", "--weights", weights, "-o", out) == 1
    err = capsys.readouterr().err
    assert "broken.tif" in err and "missing.tif" in err
    assert "restored 3 of 4 file(s)" in err and "2 failure(s)" in err
    assert (out / "stack_denoised.tif").exists()
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tile-size", "8"], "16"),
        (["--tile-size", "big"], "tile-size"),
        (["--device", "quantum"], "device"),
        (["--weights", "nope.pth"], "nope.pth"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, images, extra, message, capsys):
    args = ["restore", str(images), "-o", str(tmp_path / "o"), "-q", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_help_documents_every_option():
    result = subprocess.run([sys.executable, "-m", "napari_mprnet.cli", "restore", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ("--task", "--weights", "--out", "--tile-size", "--tile-overlap",
                   "--device", "--precision", "--stages", "--overwrite", "--axes"):
        assert option in result.stdout
    top = subprocess.run([sys.executable, "-m", "napari_mprnet.cli", "--help"],
                         capture_output=True, text=True, check=True)
    assert "restore" in top.stdout


def test_integer_inputs_are_clipped_to_their_range_unless_asked(tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    tifffile.imwrite(folder / "photo.tif", (rng.random((40, 40)) * 255).astype(np.uint8))
    assert _run(folder, "--weights", weights, "-o", tmp_path / "clipped") == 0
    clipped = tifffile.imread(tmp_path / "clipped" / "photo_denoised.tif")
    assert clipped.dtype == np.float32 and clipped.min() >= 0 and clipped.max() <= 255
    assert _run(folder, "--weights", weights, "-o", tmp_path / "raw", "--no-clip") == 0
    raw = tifffile.imread(tmp_path / "raw" / "photo_denoised.tif")
    assert raw.min() < 0 or raw.max() > 255  # the untrained net overshoots: the clip was real
    np.testing.assert_array_equal(clipped, np.clip(raw, 0, 255))

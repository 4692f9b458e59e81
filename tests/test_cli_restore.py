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
    header = (images / "stack.tif").read_bytes()[:8]
    (images / "a_corrupt.tif").write_bytes(header + bytes(range(256)) * 8)  # garbage after it
    (images / "b_truncated.png").write_bytes((images / "photo.png").read_bytes()[:40])
    out = tmp_path / "out"
    assert _run(images, "missing.tif", "--weights", weights, "-o", out) == 1
    err = capsys.readouterr().err
    assert "broken.tif" in err and "missing.tif" in err
    lines = err.strip().splitlines()
    for name in ("a_corrupt.tif", "b_truncated.png", "broken.tif"):
        assert len([line for line in lines if name in line]) == 1
    assert "restored 3 of 6 file(s)" in err and "4 failure(s)" in err
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
                   "--device", "--precision", "--stages", "--overwrite", "--axes",
                   "--show-removed"):
        assert option in result.stdout
    top = subprocess.run([sys.executable, "-m", "napari_mprnet.cli", "--help"],
                         capture_output=True, text=True, check=True)
    assert "restore" in top.stdout


def test_integer_inputs_are_clipped_to_their_range_unless_asked(tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    tifffile.imwrite(folder / "photo.tif", (rng.random((40, 40)) * 255).astype(np.uint8))
    one = ("--strength", "1")  # the untrained network's own output, overshoot included
    assert _run(folder, "--weights", weights, "-o", tmp_path / "clipped", *one) == 0
    clipped = tifffile.imread(tmp_path / "clipped" / "photo_denoised.tif")
    assert clipped.dtype == np.float32 and clipped.min() >= 0 and clipped.max() <= 255
    assert _run(folder, "--weights", weights, "-o", tmp_path / "raw", "--no-clip", *one) == 0
    raw = tifffile.imread(tmp_path / "raw" / "photo_denoised.tif")
    assert raw.min() < 0 or raw.max() > 255  # the untrained net overshoots: the clip was real
    np.testing.assert_array_equal(clipped, np.clip(raw, 0, 255))


def _tiny_tiffs(folder, names, shape=(24, 24)):
    rng = np.random.default_rng(5)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        data = (rng.random(shape) * 255).astype(np.uint8)
        if name.endswith(".png"):
            import imageio.v3 as iio

            iio.imwrite(folder / name, data)
        else:
            tifffile.imwrite(folder / name, data)


def test_colliding_names_get_distinct_outputs(tmp_path, weights, capsys):
    src = tmp_path / "in"
    _tiny_tiffs(src, ["a/x.tif", "b/x.tif", "c/y.tif", "c/y.tiff", "c/y.png"])
    out = tmp_path / "out"
    assert _run(src / "a" / "x.tif", src / "b" / "x.tif", src / "c", "--weights", weights,
                "-o", out, "--overwrite") == 0
    assert "restored 5 of 5 file(s)" in capsys.readouterr().err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.tif"))
    assert written == ["a/x_denoised.tif", "b/x_denoised.tif", "y_png_denoised.tif",
                       "y_tif_denoised.tif", "y_tiff_denoised.tif"]
    assert not np.array_equal(tifffile.imread(out / "a" / "x_denoised.tif"),
                              tifffile.imread(out / "b" / "x_denoised.tif"))


def test_a_batch_that_still_collides_is_refused_before_computing(tmp_path, weights, capsys):
    src = tmp_path / "in"
    _tiny_tiffs(src, ["y.tif", "y_tif.tif"])  # y.tif + y_tif.tif + y.TIF style clashes
    (src / "y.TIF").write_bytes((src / "y.tif").read_bytes())
    out = tmp_path / "out"
    assert _run(src, "--weights", weights, "-o", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "same output" in err[0] and "y_tif_denoised.tif" in err[0]
    assert not list(out.glob("*.tif"))


def test_two_runs_at_once_never_replace_each_others_outputs(tmp_path, tiny_model):
    import os
    import re
    from pathlib import Path

    import torch

    import napari_mprnet
    from napari_mprnet import MPRNet, restore

    src = tmp_path / "in"
    names = [f"im{i}.tif" for i in range(4)]
    _tiny_tiffs(src, names, shape=(32, 32))
    torch.manual_seed(1)
    other = MPRNet(tiny_model.config).eval()
    models = [save_model(m, tmp_path / f"m{i}.safetensors") for i, m in
              enumerate((tiny_model, other))]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(napari_mprnet.__file__).parents[1])}
    runs = [subprocess.Popen(
        [sys.executable, "-m", "napari_mprnet.cli", "restore", str(src), "-o", str(out),
         "--weights", str(m), "--device", "cpu", "--tile-size", "32", "--tile-overlap", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for m in models]
    reports = [run.communicate(timeout=600) for run in runs]
    done = [int(re.search(r"restored (\d+) of 4", err).group(1)) for _, err in reports]
    assert sum(done) == 4, reports  # every output written once, by one of the two runs
    for (stdout, _), model, run in zip(reports, models, runs):
        assert run.returncode == (0 if stdout.count(" -> ") == 4 else 1)
        for line in stdout.splitlines():
            source, target = line.split(" -> ")
            expected = restore(tifffile.imread(source), model=str(model), device="cpu",
                               tile_size=32, tile_overlap=8)
            # another process may pick another CPU thread count: float32 rounding apart
            # (a swapped output differs by the other model's whole result)
            np.testing.assert_allclose(tifffile.imread(target), expected, rtol=1e-5,
                                       atol=1e-4)
    assert sorted(p.name for p in out.iterdir()) == [f"im{i}_denoised.tif" for i in range(4)]


def test_skip_existing_resumes_a_batch_and_completes_stage_sets(tmp_path, images, weights,
                                                               capsys):
    out = tmp_path / "out"
    assert _run(images, "--weights", weights, "-o", out, "--stages") == 0
    capsys.readouterr()
    kept = (out / "rgb_denoised.tif").read_bytes()
    (out / "stack_denoised_stage1.tif").unlink()  # as if killed before the set was complete
    assert _run(images, "--weights", weights, "-o", out, "--stages") == 1
    assert "--skip-existing" in capsys.readouterr().err
    assert _run(images, "--weights", weights, "-o", out, "--stages", "--skip-existing") == 0
    err = capsys.readouterr().err
    assert "restored 1 of 3 file(s)" in err and "(1 outputs written)" in err
    assert "2 skipped" in err
    assert (out / "stack_denoised_stage1.tif").exists()
    assert (out / "rgb_denoised.tif").read_bytes() == kept


def test_a_stage_set_is_committed_as_a_unit(tmp_path, images, weights, monkeypatch, capsys):
    from napari_mprnet.io import tiff

    real = tiff.write_tiff
    calls = []

    def failing_third(path, data, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(tiff, "write_tiff", failing_third)
    out = tmp_path / "out"
    assert _run(images / "stack.tif", "--weights", weights, "-o", out, "--stages") == 1
    assert "Input/output error" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # neither the final nor stage 2 nor a temporary


def test_stale_temporaries_are_removed_by_the_next_run(tmp_path, images, weights, capsys):
    from napari_mprnet.io import atomic

    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"{atomic.TEMP_PREFIX}999999999-{atomic._host()}-00c0ffee.rgb_denoised.tif"
    stale.write_bytes(b"half-written by a killed run")
    assert _run(images / "rgb.tif", "--weights", weights, "-o", out) == 0
    assert not stale.exists() and "interrupted run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["rgb_denoised.tif"]


def test_disk_full_says_so_on_one_line(tmp_path, images, weights, monkeypatch, capsys):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full)
    out = tmp_path / "out"
    assert _run(images, "--weights", weights, "-o", out) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 3 and all("disk full" in line for line in err)
    assert list(out.iterdir()) == []


def test_an_out_folder_that_cannot_be_created_is_one_line(tmp_path, images, weights, capsys):
    (tmp_path / "file").write_text("in the way")
    assert _run(images, "--weights", weights, "-o", tmp_path / "file" / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create the output folder" in err[0]


def test_imagej_hyperstack_and_ome_tiff_come_back_with_their_metadata(tmp_path, weights):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(7)
    tifffile.imwrite(src / "hs.tif", (rng.random((2, 2, 2, 24, 24)) * 4000).astype(np.uint16),
                     imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "TZCYX", "spacing": 0.5, "unit": "um", "finterval": 3.0})
    tifffile.imwrite(src / "cells.ome.tif", rng.random((2, 24, 24)).astype(np.float32),
                     ome=True, metadata={"axes": "CYX", "PhysicalSizeX": 0.2,
                                         "PhysicalSizeY": 0.2,
                                         "Channel": {"Name": ["DAPI", "GFP"]}})
    out = tmp_path / "out"
    assert _run(src, "--weights", weights, "-o", out, "--output-dtype", "same") == 0
    with tifffile.TiffFile(out / "hs_denoised.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZCYX"
        assert tif.series[0].dtype == np.uint16
        meta = tif.imagej_metadata
        assert (meta["spacing"], meta["unit"], meta["finterval"]) == (0.5, "um", 3.0)
        assert tif.pages[0].resolution == pytest.approx((4.0, 4.0))
    with tifffile.TiffFile(out / "cells_denoised.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "CYX"
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["PhysicalSizeX"] == 0.2 and [c["Name"] for c in pixels["Channel"]] == [
        "DAPI", "GFP"]


def test_strength_option_reaches_restore(tmp_path, images, weights, capsys):
    source = images / "stack.tif"
    assert _run(source, "--weights", weights, "-o", tmp_path / "zero", "--strength", "0") == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "zero" / "stack_denoised.tif"),
                               tifffile.imread(source), rtol=1e-5, atol=0.05)
    assert _run(source, "--weights", weights, "-o", tmp_path / "one", "--strength", "1") == 0
    assert _run(source, "--weights", weights, "-o", tmp_path / "auto", "--strength",
                "AUTO") == 0
    assert not np.allclose(tifffile.imread(tmp_path / "one" / "stack_denoised.tif"),
                           tifffile.imread(source), atol=1)
    capsys.readouterr()
    for bad in ("strong", "-1", "nan"):
        assert _run(source, "--weights", weights, "-o", tmp_path / "bad", "--strength",
                    bad) == 2
        err = capsys.readouterr().err
        assert "--strength must be 'auto' or a" in err and len(err.strip().splitlines()) == 1


def test_noise_option_parses_both_forms_and_reaches_restore(tmp_path, images, weights,
                                                            monkeypatch, capsys):
    from napari_mprnet import api
    from napari_mprnet.cli.common import parse_noise

    assert parse_noise(" AUTO ") is None
    assert parse_noise("5") == 5.0 and parse_noise("2.5,-40") == (2.5, -40.0)
    seen = []
    original = api.iter_restore

    def recording(*args, **kwargs):
        seen.append(kwargs.get("noise"))
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "iter_restore", recording)
    source = images / "stack.tif"
    for value, expected in (("auto", None), ("30", 30.0), ("2,100", (2.0, 100.0))):
        assert _run(source, "--weights", weights, "-o", tmp_path / value.replace(",", "_"),
                    "--noise", value) == 0
        assert seen[-1] == expected
    # the same result as the Python API with that noise
    expected = api.restore(tifffile.imread(source), model=weights, device="cpu", tile_size=32,
                           tile_overlap=8, axes="ZYX", noise=(2.0, 100.0))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "2_100" / "stack_denoised.tif"),
                                  expected)


@pytest.mark.parametrize("extra, message", [
    (["--noise", "loud"], "--noise must be 'auto', a Gaussian standard deviation"),
    (["--noise", "0"], "must be > 0, got 0.0 (for noise-free images use --strength 0)"),
    (["--noise", "-3"], "must be > 0"),
    (["--noise", "nan"], "finite"),
    (["--noise", "1,2,3"], "3 numbers"),
    (["--noise=-1,4"], "gain must be >= 0"),  # (a leading minus needs the = form)
    (["--noise", "0,-4"], "must be > 0"),
    (["--noise", "5", "--strength", "0.5"], "noise is used by strength='auto' when denoising"),
    (["--noise", "5", "--task", "deblur"], "noise is used by strength='auto' when denoising"),
])
def test_bad_noise_exits_2_with_one_line(tmp_path, images, weights, extra, message, capsys):
    args = ["restore", str(images), "-o", str(tmp_path / "o"), "-q", "--weights", weights,
            *extra]
    if "--task" in extra:
        args.remove("--weights")
        args.remove(weights)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "o").exists()  # refused before anything was done


def test_show_removed_writes_input_minus_result_and_never_overwrites(tmp_path, images,
                                                                     weights, capsys):
    out = tmp_path / "out"
    assert _run(images / "stack.tif", "--weights", weights, "-o", out, "--show-removed") == 0
    assert sorted(p.name for p in out.iterdir()) == ["stack_denoised.tif", "stack_removed.tif"]
    data = tifffile.imread(images / "stack.tif").astype(np.float32)
    result = tifffile.imread(out / "stack_denoised.tif")
    with tifffile.TiffFile(out / "stack_removed.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].dtype == np.float32
        np.testing.assert_array_equal(tif.asarray(), data - result)
    # the tiny untrained network removes more than noise: the warning names the planes
    err = capsys.readouterr().err
    assert ("removed structure" in err) == ("compare with strength 0.5" in err)
    removed = out / "stack_removed.tif"
    removed.write_bytes(b"keep me")
    assert _run(images / "stack.tif", "--weights", weights, "-o", tmp_path / "out",
                "--show-removed") == 1
    assert removed.read_bytes() == b"keep me"
    assert "stack_removed.tif" in capsys.readouterr().err


def test_show_removed_warns_where_structure_was_removed(tmp_path, weights, monkeypatch, capsys):
    from scipy import ndimage

    from napari_mprnet import api

    rng = np.random.default_rng(1)
    field = ndimage.gaussian_filter(rng.random((2, 48, 48)), (0, 2, 2)) * 3000 + 100
    tifffile.imwrite(tmp_path / "z.tif", rng.poisson(field).astype(np.uint16),
                     metadata={"axes": "ZYX"})

    def smoothing(image, *args, **kwargs):  # a "denoiser" that removes structure on plane 1
        data = np.asarray(image, np.float32)
        return [np.stack([field[0], ndimage.gaussian_filter(data[1], 2)]).astype(np.float32)]

    monkeypatch.setattr(api.Restorer, "iter_run", lambda self, image, *a, **k: (
        yield from ()) or smoothing(image))
    assert _run(tmp_path / "z.tif", "--weights", weights, "-o", tmp_path / "out",
                "--show-removed") == 0
    err = capsys.readouterr().err
    assert "z.tif: the denoiser removed structure on plane Z 1: compare with strength 0.5" in err


@pytest.mark.parametrize("dtype", ["foo", "complex64", "bool", "object"])
def test_an_output_dtype_that_cannot_hold_an_image_is_refused_before_any_work(
        tmp_path, images, weights, capsys, dtype):
    out = tmp_path / "out"
    assert _run(images, "--weights", weights, "-o", out, "--output-dtype", dtype) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--output-dtype" in err and "uint16" in err
    assert not out.exists()

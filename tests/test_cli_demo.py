"""napari-mprnet demo: the README's main job."""

import pytest

from napari_mprnet import api, save_model
from napari_mprnet.cli import main
from napari_mprnet.cli.demo import run_demo


def test_demo_reports_psnr_of_the_model_it_ran(tmp_path, tiny_model):
    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    out = tmp_path / "out"
    report = run_demo("natural", weights, out, device="cpu", tile_size=128, tile_overlap=16)
    assert report["psnr_input"] > 10 and report["psnr_restored"] > 0
    assert {p.name for p in out.iterdir()} == {
        "natural_noisy.tif", "natural_denoised.tif", "natural_noisy_reference.tif",
        "natural_noisy_denoised_reference.png"}


def test_demo_command_prints_gain(tmp_path, tiny_model, capsys):
    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    assert main(["demo", "--device", "cpu", "-o", str(tmp_path / "o"), "--weights",
                 str(weights)]) == 0
    out = capsys.readouterr().out
    assert "PSNR gain" in out and "PSNR noisy" in out


@pytest.mark.parametrize(("task", "sample", "label", "shape"), [
    ("deblur", "cells", "blurred", (384, 384)),
    ("deblur", "natural", "blurred", (512, 512)),
    ("derain", None, "rainy", (512, 512, 3)),
])
def test_demo_of_each_task_uses_its_model_and_sample(tmp_path, tiny_model, monkeypatch, task,
                                                    sample, label, shape):
    asked = []
    real_prepare = api.prepare_model

    def fake_prepare(weights, task_name="denoise", *args, **kwargs):
        if weights is None:  # the demo asking for the bundled model
            asked.append(task_name)
            return tiny_model
        return real_prepare(weights, task_name, *args, **kwargs)

    monkeypatch.setattr(api, "prepare_model", fake_prepare)
    out = tmp_path / "out"
    report = run_demo(sample, None, out, task, device="cpu", tile_size=256, tile_overlap=16)
    assert asked == [task]  # the bundled model of the task
    expected_sample = sample or "natural"
    assert report["label"] == label and report["sample"] == expected_sample
    assert 10 < report["psnr_input"] < 40 and 0 < report["ssim_input"] < 1
    done = {"deblur": "deblurred", "derain": "derained"}[task]
    assert {p.name for p in out.iterdir()} == {
        f"{expected_sample}_{label}.tif", f"{expected_sample}_{done}.tif",
        f"{expected_sample}_{label}_reference.tif",
        f"{expected_sample}_{label}_{done}_reference.png"}
    import tifffile

    assert tifffile.imread(out / f"{expected_sample}_{label}.tif").shape == shape


def test_demo_rejects_a_sample_the_task_lacks(tmp_path, tiny_model, capsys):
    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    assert main(["demo", "--task", "derain", "--sample", "cells", "--weights", str(weights),
                 "-o", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "no 'cells' sample for derain" in err and "natural" in err
    assert not (tmp_path / "o").exists()


def test_demo_command_names_the_degradation(tmp_path, tiny_model, capsys):
    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    assert main(["demo", "--task", "deblur", "--device", "cpu", "-o", str(tmp_path / "o"),
                 "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "PSNR blurred" in out and "PSNR gain" in out and "sample: cells" in out


def test_demo_leaves_no_untracked_folder_in_a_checkout(tmp_path, tiny_model, monkeypatch):
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(Path(__file__).parents[1] / ".gitignore", checkout / ".gitignore")
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    monkeypatch.chdir(checkout)
    assert main(["demo", "--device", "cpu", "--weights", str(weights)]) == 0
    assert (checkout / "mprnet-demo" / "cells_denoised.tif").exists()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=checkout, capture_output=True, text=True, check=True).stdout
    assert status.split() == ["??", ".gitignore"]


def test_demos_of_two_tasks_write_different_files(tmp_path, tiny_model, capsys):
    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    out = tmp_path / "o"
    written = {}
    for task in ("denoise", "deblur"):
        assert main(["demo", "--task", task, "--device", "cpu", "-o", str(out), "--weights",
                     str(weights)]) == 0
        written[task] = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # the deblur demo added its own four files and overwrote none of the denoise demo's
    assert len(written["deblur"]) == 8
    for name, stamp in written["denoise"].items():
        assert written["deblur"][name] == stamp
    assert "cells_deblurred.tif" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["denoise", "derain"])
def test_demo_says_when_its_photograph_is_a_stand_in(tmp_path, tiny_model, monkeypatch, capsys,
                                                     task):
    """Without scikit-image the natural samples are a procedural scene: the demo says so
    (its PSNR figures are not the documented ones) and the images are that scene."""
    from napari_mprnet import _sample_data

    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    args = ["demo", "--task", task, "--sample", "natural", "--device", "cpu", "--weights",
            str(weights), "--tile-size", "256"]
    assert main(args + ["-o", str(tmp_path / "with")]) == 0
    assert "procedural" not in capsys.readouterr().err
    monkeypatch.setattr(_sample_data, "_has_skimage", lambda: False)
    assert main(args + ["-o", str(tmp_path / "without")]) == 0
    err = capsys.readouterr().err
    photo = {"denoise": "camera", "derain": "astronaut"}[task]
    assert "procedural scene" in err and f"'{photo}'" in err
    import tifffile

    name = {"denoise": "natural_noisy_reference.tif", "derain": "natural_rainy_reference.tif"}
    stand_in = tifffile.imread(tmp_path / "without" / name[task])
    photograph = tifffile.imread(tmp_path / "with" / name[task])
    assert stand_in.shape == photograph.shape and not (stand_in == photograph).all()

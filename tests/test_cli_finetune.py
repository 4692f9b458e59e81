"""``napari-mprnet finetune`` end to end on tiny TIFF folders."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_mprnet.cli import main
from napari_mprnet.model import MPRNet, MPRNetConfig
from napari_mprnet.training.trainer import load_checkpoint
from napari_mprnet.weights import load_model, save_model

TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def folders(tmp_path):
    """Three 16-bit 48x48 noisy/clean pairs and a tiny base model file."""
    rng = np.random.default_rng(0)
    noisy_dir, clean_dir = tmp_path / "noisy", tmp_path / "clean"
    noisy_dir.mkdir()
    clean_dir.mkdir()
    yy, xx = np.mgrid[0:48, 0:48] / 48
    for i in range(3):
        clean = 1000 + 800 * np.sin(2 * np.pi * (yy * (i + 1) + xx))
        noisy = clean + 150 * rng.standard_normal(clean.shape)
        tifffile.imwrite(clean_dir / f"img{i}.tif", clean.astype(np.uint16))
        tifffile.imwrite(noisy_dir / f"img{i}.tif", np.clip(noisy, 0, None).astype(np.uint16))
    torch.manual_seed(0)
    base = save_model(MPRNet(TINY), tmp_path / "base.safetensors",
                      {"task": "denoise", "trained": False})
    return noisy_dir, clean_dir, base


def _args(folders, out, *extra):
    noisy_dir, clean_dir, base = folders
    return ["finetune", "--inputs", str(noisy_dir), "--targets", str(clean_dir),
            "--base", str(base), "--steps", "4", "--patch-size", "32", "--batch-size", "2",
            "--lr", "1e-3", "--device", "cpu", "--val-fraction", "0.34", "--out", str(out),
            *extra]


def test_finetune_end_to_end(folders, tmp_path, capsys):
    out = tmp_path / "models" / "tuned.safetensors"
    ckpt = tmp_path / "tuned.pt"
    status = main(_args(folders, out, "--checkpoint", str(ckpt), "--checkpoint-every", "2"))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "fine-tuned 4 steps" in captured.out
    assert "validation PSNR: base" in captured.out and "-> best" in captured.out
    assert f"saved model: {out}" in captured.out
    assert "2 training / 1 validation planes" in captured.out
    # what it will do, before training, then the step rate after the first steps
    plan = next(line for line in captured.err.splitlines() if "fine-tuning the" in line)
    assert "2 training planes (2 x 48x48 grey), 1 validation planes; 4 steps of 2 x 32x32" in plan
    assert "on cpu (1 thread) in " in plan and f"checkpoint every 2 steps to {ckpt}" in plan
    assert captured.err.index(plan) < captured.err.index("s per step (")
    model = load_model(out)
    meta = model.metadata
    assert meta["trained"] is True and meta["normalization"]["mode"] == "percentile"
    assert meta["provenance"]["steps"] == 4 and meta["provenance"]["n_val_planes"] == 1
    assert str(folders[2]) in meta["base_model"]
    assert load_checkpoint(ckpt)["step"] == 4

    # --resume of a finished run trains nothing more and saves the same model
    again = tmp_path / "again.safetensors"
    status = main(_args(folders, again, "--resume", str(ckpt)))
    assert status == 0
    assert "fine-tuned 4 steps" in capsys.readouterr().out


def test_refuses_to_overwrite(folders, tmp_path, capsys):
    out = tmp_path / "tuned.safetensors"
    out.write_bytes(b"keep me")
    status = main(_args(folders, out))
    err = capsys.readouterr().err
    assert status == 2
    assert "--overwrite" in err and "Traceback" not in err
    assert out.read_bytes() == b"keep me"
    assert main(_args(folders, out, "--overwrite", "-q")) == 0
    assert capsys.readouterr().err == ""  # -q: no plan, no rate, no bar
    assert load_model(out).metadata["provenance"]["steps"] == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--inputs", "missing"), "folder not found"),
        (("--steps", "0"), "steps must be"),
        (("--patch-size", "30"), "patch_size must be"),
        (("--patch-size", "64"), "smaller than the patch size"),
        (("--device", "warp-drive"), "unknown device"),
        (("--base", "nope.safetensors"), "--base"),
        (("--out", "model.txt"), "--out must end in"),
    ],
)
def test_bad_inputs_give_one_line_errors(folders, tmp_path, capsys, change, message):
    args = _args(folders, tmp_path / "m.safetensors")
    flag, value = change
    if flag == "--inputs" or flag == "--out":
        value = str(tmp_path / value)
    args[args.index(flag) + 1] = value
    status = main(args)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


def test_unpaired_folders(folders, tmp_path, capsys):
    _, clean_dir, _ = folders
    (clean_dir / "img2.tif").unlink()
    status = main(_args(folders, tmp_path / "m.safetensors"))
    err = capsys.readouterr().err
    assert status == 2 and "unpaired files" in err and "img2.tif" in err


def test_unusable_outputs_and_checkpoints_fail_before_training(folders, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cases = [
        (_args(folders, blocker / "m.safetensors"), "save_to"),
        (_args(folders, tmp_path / "m.safetensors", "--checkpoint", str(blocker / "c.pt")),
         "checkpoint_path"),
        (_args(folders, tmp_path / "m.safetensors", "--resume", str(empty)), "is empty"),
    ]
    for args, message in cases:
        status = main(args)
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert status == 2, err
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
        assert "fine-tuning" not in err  # no progress bar: no step ran
    assert not (tmp_path / "m.safetensors").exists()


def _ssl_args(folders, out, *extra):
    args = _args(folders, out, *extra)
    at = args.index("--targets")
    return args[:at] + args[at + 2:]


def test_self_supervised_without_targets(folders, tmp_path, capsys):
    out = tmp_path / "n2v.safetensors"
    ckpt = tmp_path / "n2v.pt"
    status = main(_ssl_args(folders, out, "--checkpoint", str(ckpt)))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "validation loss (self-supervised" in captured.out
    assert "validation PSNR" not in captured.out
    prov = load_model(out).metadata["provenance"]
    assert prov["objective"]["name"] == "noise2void" and prov["best_val_loss"] is not None
    # a resumed self-supervised run continues the same objective
    status = main(_ssl_args(folders, tmp_path / "again.safetensors", "--resume", str(ckpt)))
    assert status == 0, capsys.readouterr().err
    assert load_checkpoint(ckpt)["args"]["objective"]["name"] == "noise2void"


def test_noise2noise_pairs_from_series_cli(tmp_path, folders, capsys):
    series = tmp_path / "series"
    series.mkdir()
    rng = np.random.default_rng(1)
    scene = 1000 + 800 * np.sin(2 * np.pi * np.mgrid[0:48, 0:48][0] / 24)
    stack = scene + 150 * rng.standard_normal((8, 48, 48))
    tifffile.imwrite(series / "movie.tif", stack.astype(np.uint16))
    args = _ssl_args(folders, tmp_path / "n2n.safetensors", "--pairs-from-series")
    args[args.index("--inputs") + 1] = str(series)
    args[args.index("--val-fraction") + 1] = "0.25"
    status = main(args)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    meta = load_model(tmp_path / "n2n.safetensors").metadata
    assert meta["provenance"]["objective"]["name"] == "noise2noise"


def test_method_needing_targets_says_so(folders, tmp_path, capsys):
    status = main(_ssl_args(folders, tmp_path / "m.safetensors", "--method", "supervised"))
    err = capsys.readouterr().err.strip()
    assert status == 2 and "needs targets" in err and len(err.splitlines()) == 1


def test_structured_blind_spot_cli(folders, tmp_path, capsys):
    out = tmp_path / "line.safetensors"
    status = main(_ssl_args(folders, out, "--blind-spot-mask", "vertical",
                            "--blind-spot-span", "1", "--blind-spot-loss", "charbonnier"))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    objective = load_model(out).metadata["provenance"]["objective"]
    assert (objective["name"], objective["mask"], objective["span"],
            objective["distance"]) == ("noise2void", "vertical", 1, "charbonnier")
    # a blind spot needs the blind-spot method: one line, before training
    status = main(_ssl_args(folders, tmp_path / "m.safetensors", "--pairs-from-series",
                            "--blind-spot-mask", "square"))
    err = capsys.readouterr().err.strip()
    assert status == 2 and "no blind spot" in err and len(err.splitlines()) == 1

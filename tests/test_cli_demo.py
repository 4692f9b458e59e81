"""napari-mprnet demo: the README's main job."""

from napari_mprnet import save_model
from napari_mprnet.cli import main
from napari_mprnet.cli.demo import run_demo


def test_demo_reports_psnr_of_the_model_it_ran(tmp_path, tiny_model):
    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    out = tmp_path / "out"
    report = run_demo("natural", weights, out, device="cpu", tile_size=128, tile_overlap=16)
    assert report["psnr_noisy"] > 10 and report["psnr_restored"] > 0
    assert {p.name for p in out.iterdir()} == {
        "natural_noisy.tif", "natural_restored.tif", "natural_clean.tif",
        "natural_noisy_restored_clean.png"}


def test_demo_command_prints_gain(tmp_path, tiny_model, capsys):
    weights = save_model(tiny_model, tmp_path / "tiny.safetensors")
    assert main(["demo", "--device", "cpu", "-o", str(tmp_path / "o"), "--weights",
                 str(weights)]) == 0
    out = capsys.readouterr().out
    assert "PSNR gain" in out and "PSNR noisy" in out

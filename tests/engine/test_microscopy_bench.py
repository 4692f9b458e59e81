"""The microscopy bench's quick subset as a gate on ``restore()``'s defaults (issue 30).

Generated fluorescence with exact references (``training.microscopy.bench_cases(quick=True)``,
96 px, bundled denoiser): photon counting and EMCCD on dark backgrounds, dense textured fields
at 1000-3000 photons, a binned nuclei field whose texture the network smooths (there strength
1 is below the input), and one case of each camera. The full bench is
``benchmarks/bench_microscopy.py`` (docs/microscopy_bench.md).
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_mprnet.training.microscopy import bench_cases

ROOT = Path(__file__).resolve().parents[2]
#: PSNR the defaults may lose against the input (dB): rounding only.
BELOW_INPUT_TOLERANCE_DB = 0.05
#: Where strength 1 beats the input by this much (dB), the defaults keep its gain ...
BEATS_INPUT_DB = 1.0
#: ... to within this (dB).
AUTO_TOLERANCE_DB = 0.2


@pytest.fixture(scope="module")
def quick_scores() -> dict:
    """PSNR (dB) of the input, the defaults and strength 1 on every quick case."""
    from napari_mprnet import restore

    scores = {}
    for case in bench_cases(quick=True):
        acq = case.generate()
        scores[case.name] = {
            "input": acq.psnr(acq.noisy),
            "defaults": acq.psnr(restore(acq.noisy, device="cpu")),
            "strength 1": acq.psnr(restore(acq.noisy, device="cpu", strength=1.0)),
        }
    return scores


def test_defaults_are_never_below_the_input(quick_scores):
    below = {name: round(s["defaults"] - s["input"], 2) for name, s in quick_scores.items()
             if s["defaults"] < s["input"] - BELOW_INPUT_TOLERANCE_DB}
    assert not below, f"restore() defaults below the noisy input (dB): {below}"
    # the binned nuclei case is one where following the network would lose
    binned = next(s for name, s in quick_scores.items() if "psf" in name)
    assert binned["strength 1"] < binned["input"]


def test_defaults_keep_the_networks_gain(quick_scores):
    applies = {name: s for name, s in quick_scores.items()
               if s["strength 1"] > s["input"] + BEATS_INPUT_DB}
    assert len(applies) >= 4
    lost = {name: round(s["defaults"] - s["strength 1"], 2) for name, s in applies.items()
            if s["defaults"] < s["strength 1"] - AUTO_TOLERANCE_DB}
    assert not lost, f"defaults more than {AUTO_TOLERANCE_DB} dB below strength 1: {lost}"


def _bench_script():
    spec = importlib.util.spec_from_file_location(
        "bench_microscopy_under_test", ROOT / "benchmarks" / "bench_microscopy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_script_reports_every_case_and_the_gate(tmp_path, tiny_model):
    from napari_mprnet.weights import save_model

    weights = save_model(tiny_model, tmp_path / "tiny.safetensors",
                         {"task": "denoise", "trained": False})
    bench = _bench_script()
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    report = bench.main(["--quick", "--size", "48", "--cases", "3", "--no-bm3d", "--model",
                         str(weights), "--device", "cpu", "--json", str(out_json),
                         "--markdown", str(out_md)])
    assert len(report["cases"]) == 3
    assert report["methods"] == ["input", "NL-means VST", "ours", "ours s=1",
                                 "ours true noise"]
    for case in report["cases"]:
        assert all(np.isfinite(v) for v in case["psnr"].values())
        # NL-means given the true noise beats the noisy input on every case
        assert case["psnr"]["NL-means VST"] > case["psnr"]["input"]
    gate = report["summary"]["gate"]
    below = sum(c["psnr"]["ours"] < c["psnr"]["input"] for c in report["cases"])
    assert gate["cases"] == 3 and gate["ours_below_input"] == below
    assert json.loads(out_json.read_text())["summary"]["gate"] == gate
    table = out_md.read_text()
    assert "| case | n | input |" in table and "UNTRAINED" in table
    # a second model's run reuses the baselines of the same cases, checked by the input PSNR
    again = bench.main(["--quick", "--size", "48", "--cases", "3", "--no-bm3d", "--model",
                        str(weights), "--device", "cpu", "--no-given-noise",
                        "--baselines-from", str(out_json)])
    for first, second in zip(report["cases"], again["cases"]):
        assert second["reused"] == ["NL-means VST"]
        assert second["psnr"]["NL-means VST"] == first["psnr"]["NL-means VST"]
    other_size = bench.main(["--quick", "--size", "40", "--cases", "1", "--no-bm3d",
                             "--model", str(weights), "--device", "cpu", "--no-given-noise",
                             "--baselines-from", str(out_json)])
    assert "reused" not in other_size["cases"][0]  # other images: computed again

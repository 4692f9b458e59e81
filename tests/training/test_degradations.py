"""Synthetic degradations, the pair stream, the quality benchmark and the training script."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")

from napari_mprnet.training.degradations import (
    DEGRADATION_MODEL,
    PairGenerator,
    blur,
    blur_kernel,
    degrade,
    gaussian_noise,
    poisson_gaussian,
    rain_streaks,
    sample_params,
)

ROOT = Path(__file__).resolve().parents[2]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- noise


def test_gaussian_noise_std_and_no_clipping():
    img = np.full((256, 256), 0.02, np.float32)
    sigma = 0.1
    noisy = gaussian_noise(img, sigma, _rng())
    assert noisy.dtype == np.float32 and noisy.shape == img.shape
    assert abs((noisy - img).std() / sigma - 1) < 0.05
    assert abs((noisy - img).mean()) < 0.01
    assert noisy.min() < 0  # not clipped: the noise statistics stay exact


@pytest.mark.parametrize("level", [0.1, 0.5, 0.9])
def test_poisson_gaussian_variance(level):
    photons, read = 40.0, 3.0
    img = np.full((256, 256), level, np.float32)
    noisy = poisson_gaussian(img, photons, read, _rng(1))
    assert noisy.dtype == np.float32
    in_photons = noisy.astype(np.float64) * photons
    expected = level * photons + read**2
    assert abs(in_photons.var() / expected - 1) < 0.10
    assert abs(noisy.mean() - level) < 0.01


def test_noise_rejects_bad_parameters():
    img = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError):
        gaussian_noise(img, -1, _rng())
    with pytest.raises(ValueError):
        poisson_gaussian(img, 0, 1, _rng())
    with pytest.raises(ValueError):
        gaussian_noise(np.zeros((8, 8, 5)), 0.1, _rng())


# --------------------------------------------------------------------------- blur


@pytest.mark.parametrize("kind", ["gaussian", "defocus", "motion"])
def test_kernels_normalised(kind):
    for seed in range(5):
        k = blur_kernel(kind, rng=_rng(seed))
        assert k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert k.dtype == np.float32
        assert (k >= 0).all()
        assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-5)
    fixed = blur_kernel(kind, size=21)
    assert fixed.shape == (21, 21) and math.isclose(float(fixed.sum()), 1.0, rel_tol=1e-5)
    np.testing.assert_array_equal(blur_kernel(kind, rng=_rng(3)), blur_kernel(kind, rng=_rng(3)))


def test_kernel_geometry():
    horizontal = blur_kernel("motion", length=9, angle=0)
    centre = horizontal.shape[0] // 2
    assert horizontal[centre].sum() > 0.99  # all mass on the middle row
    vertical = blur_kernel("motion", length=9, angle=90)
    assert vertical[:, centre].sum() > 0.99
    disk = blur_kernel("defocus", radius=3)
    np.testing.assert_allclose(disk, disk.T, atol=1e-7)
    np.testing.assert_allclose(disk, disk[::-1, ::-1], atol=1e-7)
    gauss = blur_kernel("gaussian", sigma=1.0)
    _, xx = np.mgrid[: gauss.shape[0], : gauss.shape[1]] - gauss.shape[0] // 2
    assert math.isclose(float((gauss * xx**2).sum()), 1.0, rel_tol=0.02)
    with pytest.raises(ValueError, match="kind"):
        blur_kernel("box")
    with pytest.raises(ValueError, match="odd"):
        blur_kernel("gaussian", size=4)


def test_blur_per_channel_and_borders():
    k = blur_kernel("defocus", radius=2)
    flat = np.full((20, 24, 3), 0.4, np.float32)
    np.testing.assert_allclose(blur(flat, k), flat, atol=1e-6)  # reflect: no dark borders
    img = _rng().random((20, 24, 3)).astype(np.float32)
    out = blur(img, k)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 1], blur(img[..., 1], k), atol=1e-6)
    delta = np.zeros((5, 5), np.float32)
    delta[2, 2] = 1
    np.testing.assert_allclose(blur(img, delta), img, atol=1e-6)
    assert out.std() < img.std()


# --------------------------------------------------------------------------- rain


def _streak_angle(layer: np.ndarray) -> float:
    """Dominant streak direction (degrees from vertical) by projection: summing the layer
    along the streak direction piles every streak into a sharp peak, so the projected
    profile is most uneven (largest sum of squares) at that angle."""
    yy, xx = np.mgrid[: layer.shape[0], : layer.shape[1]].astype(np.float64)
    best, best_score = 0.0, -1.0
    for angle in np.arange(-60.0, 60.5, 0.5):
        phi = math.radians(angle)
        across = xx * math.cos(phi) - yy * math.sin(phi)  # coordinate across the streaks
        bins = np.round(across - across.min()).astype(int).ravel()
        profile = np.bincount(bins, weights=layer.ravel())
        score = float(np.sum(profile**2))
        if score > best_score:
            best, best_score = float(angle), score
    return best


@pytest.mark.parametrize("angle", [-30.0, 0.0, 20.0])
def test_rain_streaks_angle_and_brightening(angle):
    dark = np.full((128, 128), 0.1, np.float32)
    out, layer = rain_streaks(dark, _rng(2), density=0.002, angle=angle, length=40,
                              width=0.6, brightness=0.9, return_layer=True)
    assert out.dtype == np.float32 and out.shape == dark.shape
    assert (out >= dark - 1e-6).all() and out.max() <= 1.0  # only brightens
    streaks = layer > 0.05
    assert 0.01 < streaks.mean() < 0.5
    np.testing.assert_allclose(out[layer == 0], dark[layer == 0], atol=1e-6)  # off-streak
    assert out[streaks].mean() > dark.mean() + 0.2
    measured = _streak_angle(layer)
    assert abs(measured - angle) < 3.0, measured


def test_rain_on_colour_is_neutral():
    img = np.zeros((32, 32, 3), np.float32)
    out = rain_streaks(img, _rng(), density=0.01, angle=0, length=10)
    assert out.shape == img.shape
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


# --------------------------------------------------------------------------- random models


@pytest.mark.parametrize("task", ["denoise", "deblur", "derain"])
def test_degrade_deterministic(task):
    img = _rng(5).random((32, 32, 3)).astype(np.float32)
    a = degrade(task, img, _rng(7))
    b = degrade(task, img, _rng(7))
    assert a.dtype == np.float32 and a.shape == img.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, img)
    grey = degrade(task, img[..., 0], _rng(7))
    assert grey.shape == (32, 32)


def test_degrade_unknown_task():
    with pytest.raises(ValueError, match="task"):
        degrade("dehaze", np.zeros((8, 8), np.float32), _rng())


def test_sampled_parameters_in_ranges():
    rng = _rng(11)
    model = DEGRADATION_MODEL
    kinds = set()
    for _ in range(200):
        p = sample_params("denoise", rng)
        kinds.add(p["noise"])
        if p["noise"] == "gaussian":
            assert 0 <= p["sigma"] <= 50 / 255
        else:
            assert 5 <= p["photons"] <= 3000
            assert 0 <= p["read_noise"] <= 4
    assert kinds == {"gaussian", "poisson_gaussian"}
    # low noise is well covered (nearly clean images must keep their detail), high noise too
    draws = [sample_params("denoise", rng) for _ in range(4000)]
    sigmas = np.array([p["sigma"] for p in draws if p["noise"] == "gaussian"]) * 255
    assert 0.27 < (sigmas < 5).mean() < 0.37
    assert 0.24 < (sigmas > 25).mean() < 0.34
    photons = np.array([p["photons"] for p in draws if p["noise"] != "gaussian"])
    assert 0.30 < (photons > 300).mean() < 0.42
    for _ in range(30):
        p = sample_params("derain", rng)
        lo, hi = model["derain"]["angle_deg_from_vertical"]
        for layer in p["layers"]:
            assert lo - 5 <= layer["angle"] <= hi + 5
            assert 8 <= layer["length"] <= 40
        p = sample_params("deblur", rng)
        assert p["kernel_kind"] in ("gaussian", "defocus", "motion")
        assert 0 <= p["sigma"] <= 2 / 255


# --------------------------------------------------------------------------- pair stream


def _grey_generator(task: str, device=None, seed: int = 0) -> PairGenerator:
    return PairGenerator(task, "train", 32, seed, batch_size=4, pool_size=3, pool_image_size=48,
                         families={"fluorescence": 1.0}, device=device)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_grey_noise_added_before_replication(device):
    gen = _grey_generator("denoise", device)
    assert gen.grey.all()
    degraded, clean = gen.sample()
    degraded, clean = np.asarray(degraded), np.asarray(clean)
    assert degraded.shape == clean.shape == (4, 3, 32, 32)
    assert degraded.dtype == np.float32
    np.testing.assert_array_equal(degraded[:, 0], degraded[:, 1])
    np.testing.assert_array_equal(degraded[:, 0], degraded[:, 2])
    assert np.abs(degraded - clean).mean() > 0  # noise was added


@pytest.mark.parametrize("task", ["denoise", "deblur", "derain"])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_pair_generator_deterministic(task, device):
    a = PairGenerator(task, "train", 32, 1, batch_size=3, pool_size=3, pool_image_size=48,
                      device=device)
    b = PairGenerator(task, "train", 32, 1, batch_size=3, pool_size=3, pool_image_size=48,
                      device=device)
    xa, ya = a.sample()
    xb, yb = b.sample()
    if device is not None:
        assert isinstance(xa, torch.Tensor) and xa.device.type == "cpu"
    np.testing.assert_array_equal(np.asarray(xa), np.asarray(xb))
    np.testing.assert_array_equal(np.asarray(ya), np.asarray(yb))
    assert not np.array_equal(np.asarray(xa), np.asarray(ya))
    assert np.asarray(ya).min() >= 0 and np.asarray(ya).max() <= 1
    x2, _ = next(iter(a))
    assert not np.array_equal(np.asarray(x2), np.asarray(xa))  # the stream moves on


def test_pair_generator_pairs_keep_grey_2d():
    gen = PairGenerator("denoise", "val", 32, 0, pool_size=4, pool_image_size=40)
    degraded, clean = gen.pairs(6)
    assert len(degraded) == len(clean) == 6
    for d, c in zip(degraded, clean):
        assert d.shape == c.shape and d.ndim in (2, 3) and d.dtype == np.float32


def test_pair_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        PairGenerator("dehaze", pool_size=1)
    with pytest.raises(ValueError, match="channels"):
        PairGenerator("denoise", channels=2, pool_size=1)


# --------------------------------------------------------------------------- scripts


def test_bench_quality_quick(tmp_path, tiny_model):
    from napari_mprnet.weights import save_model

    weights = save_model(tiny_model, tmp_path / "tiny.safetensors",
                         {"task": "denoise", "trained": False})
    bench = _load_script(ROOT / "benchmarks" / "bench_quality.py", "bench_quality_under_test")
    out_json, out_md = tmp_path / "q.json", tmp_path / "q.md"
    report = bench.main(["--quick", "--size", "48", "--tile", "32", "--sigmas", "25",
                         "--photons", "30", "--no-bm3d", "--weights", str(weights),
                         "--json", str(out_json), "--markdown", str(out_md)])
    rows = report["rows"]
    assert [r["level"] for r in rows] == ["sigma 25", "sigma 25", "30 photons"]
    for row in rows:
        results = row["results"]
        assert results["BM3D"] == {"status": "skipped"}
        for method in ("input", "NL-means", "model"):
            assert math.isfinite(results[method]["psnr"])
        assert results["NL-means"]["psnr"] > results["input"]["psnr"]
        assert math.isfinite(row["tiled_minus_whole_db"])
    assert json.loads(out_json.read_text())["rows"][0]["task"] == "denoise"
    table = out_md.read_text()
    assert "| natural grey | sigma 25 |" in table and "UNTRAINED" in table


def test_train_defaults_dry_run(tmp_path, capsys):
    script = _load_script(ROOT / "tools" / "train_defaults.py", "train_defaults_under_test")
    plans = script.main(["--tiny", "--dry-run", "--task", "derain", "--out-dir",
                         str(tmp_path)])
    assert len(plans) == 1 and plans[0]["task"] == "derain"
    assert plans[0]["train_pairs"]["count"] == 16
    assert plans[0]["config"] == script.TINY_CONFIG
    assert "finetune_available" in plans[0]
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
    assert '"task": "derain"' in capsys.readouterr().out


def test_train_defaults_smoke(tmp_path):
    trainer = pytest.importorskip("napari_mprnet.training.trainer")
    if not hasattr(trainer, "finetune"):
        pytest.skip("finetune not available")
    from safetensors import safe_open

    from napari_mprnet import restore
    from napari_mprnet.weights import load_model

    script = _load_script(ROOT / "tools" / "train_defaults.py", "train_defaults_smoke")
    script.main(["--tiny", "--steps", "3", "--task", "denoise", "--device", "cpu",
                 "--pairs", "4", "--val-pairs", "1", "--patch-size", "16", "--val-size", "16",
                 "--batch-size", "1", "--out-dir", str(tmp_path)])
    path = tmp_path / "denoise.safetensors"
    registry = json.loads((tmp_path / "registry.json").read_text())
    import hashlib

    assert registry["denoise"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert registry["denoise"]["trained"] is True
    assert "validation PSNR" in registry["denoise"]["summary"]
    with safe_open(str(path), framework="pt") as handle:
        assert handle.get_tensor("tail.weight").dtype == torch.float16
    model = load_model(path)
    meta = model.metadata
    assert meta["task"] == "denoise" and meta["trained"] is True
    prov = meta["provenance"]
    assert prov["steps"] == 3 and prov["seed"] == 0
    assert prov["script"] == "tools/train_defaults.py"
    assert math.isfinite(prov["val_psnr"]) and "wall_clock_s" in prov
    assert meta["normalization"]["mode"] == "identity"
    out = restore(np.zeros((16, 16), np.float32), model=model, device="cpu")
    assert out.shape == (16, 16)


def test_train_defaults_continues_from_a_model(tmp_path):
    """--init-from starts from the given weights (a vanishing learning rate keeps them) and
    chains the provenance; a different configuration is refused."""
    import hashlib

    from napari_mprnet.weights import load_model

    script = _load_script(ROOT / "tools" / "train_defaults.py", "train_defaults_continue")
    common = ["--tiny", "--task", "denoise", "--device", "cpu", "--pairs", "4",
              "--val-pairs", "1", "--patch-size", "16", "--val-size", "16", "--batch-size", "1"]
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    script.main([*common, "--steps", "3", "--out-dir", str(first_dir)])
    first = first_dir / "denoise.safetensors"
    script.main([*common, "--steps", "2", "--lr", "1e-12", "--min-lr", "1e-12", "--seed", "1",
                 "--init-from", str(first), "--out-dir", str(second_dir)])
    before, after = load_model(first), load_model(second_dir / "denoise.safetensors")
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        assert torch.equal(a, b), name
    prov = after.metadata["provenance"]
    assert prov["steps"] == 2 and prov["total_steps"] == 5
    assert prov["init_from"]["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert prov["init_from"]["provenance"]["steps"] == 3
    assert "trained 5 steps" in after.metadata["summary"]
    with pytest.raises(ValueError, match="configuration"):
        script.main([*common, "--steps", "1", "--n-feat", "12", "--init-from", str(first),
                     "--out-dir", str(tmp_path / "third")])
    with pytest.raises(SystemExit):
        script.main(["--tiny", "--task", "all", "--init-from", str(first)])


def test_train_defaults_family_mix(tmp_path, capsys, monkeypatch):
    """--families reaches the training pool (validation keeps the standard mix) and is
    recorded in the plan; bad specs are refused with a message."""
    from napari_mprnet.training import degradations
    from napari_mprnet.training.synthetic import FAMILIES

    seen = []
    real = degradations.PairGenerator

    def recording(task, split, *args, **kwargs):
        seen.append((split, kwargs.get("families")))
        return real(task, split, *args, **kwargs)

    monkeypatch.setattr(degradations, "PairGenerator", recording)
    script = _load_script(ROOT / "tools" / "train_defaults.py", "train_defaults_families")
    plans = script.main(["--tiny", "--dry-run", "--task", "denoise", "--families",
                         "natural=0,dead_leaves=1", "--out-dir", str(tmp_path)])
    mix = {"natural": 0.0, "dead_leaves": 1.0}
    assert plans[0]["families"] == mix
    assert seen == [("train", mix), ("val", None)]
    default = script.main(["--tiny", "--dry-run", "--task", "denoise", "--out-dir",
                           str(tmp_path)])
    assert default[0]["families"] == FAMILIES
    for bad, message in (("natural=x", "expected NAME=WEIGHT"), ("sky=1", "unknown family"),
                         ("natural=-1", ">= 0"), ("natural=0", "positive weight")):
        with pytest.raises(SystemExit):
            script.main(["--tiny", "--dry-run", "--families", bad])
        assert message in capsys.readouterr().err

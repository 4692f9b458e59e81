"""Fine-tuning: it learns, resumes exactly, stops cleanly, guards divergence and saves."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import napari_mprnet
from napari_mprnet import api
from napari_mprnet.engine.pipeline import normalization_for
from napari_mprnet.model import MPRNet, MPRNetConfig
from napari_mprnet.training import objectives
from napari_mprnet.training.metrics import psnr
from napari_mprnet.training.trainer import (
    FinetuneResult,
    StopTraining,
    TrainingDiverged,
    finetune,
    learning_rate_at,
    load_checkpoint,
)
from napari_mprnet.weights import load_model

TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(seed: int = 0) -> MPRNet:
    torch.manual_seed(seed)
    return MPRNet(TINY)


def _smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth image in [0.1, 0.9]: a few Gaussian blobs plus a sinusoid."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size))
    for _ in range(4):
        cy, cx = rng.random(2)
        s = 0.08 + 0.2 * rng.random()
        img += rng.random() * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    fy, fx = rng.uniform(1, 4, 2)
    img += 0.2 * np.sin(2 * np.pi * (fy * yy + fx * xx) + 6 * rng.random())
    img -= img.min()
    return 0.1 + 0.8 * img / img.max()


def synthetic_pairs(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 stacks: Poisson (peak 30) + Gaussian (sigma 0.05) noise."""
    rng = np.random.default_rng(seed)
    clean = np.stack([_smooth(rng, size) for _ in range(n)])
    noisy = rng.poisson(clean * 30.0) / 30.0 + 0.05 * rng.standard_normal(clean.shape)
    return np.clip(noisy, 0, 1).astype(np.float32), clean.astype(np.float32)


def _heldout_psnr(model: MPRNet, noisy: np.ndarray, clean: np.ndarray) -> float:
    """Mean PSNR of the model's output (grey: mean of the 3 channels) over the clean planes."""
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(noisy[:, None]).expand(-1, 3, -1, -1)
        out = model(x)[0].mean(dim=1)
    return float(np.mean([psnr(o, torch.from_numpy(c)) for o, c in zip(out, clean)]))


def _small_run(**kwargs) -> FinetuneResult:
    noisy, clean = synthetic_pairs(4, size=48, seed=1)
    options = {"model": _tiny(), "steps": 12, "patch_size": 32, "batch_size": 2,
               "learning_rate": 1e-3, "device": "cpu", "normalize": "none", "val_every": 6}
    options.update(kwargs)
    return finetune(list(noisy), list(clean), **options)


def _same_weights(a: MPRNet, b: MPRNet) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- must show


def test_finetune_raises_heldout_psnr():
    noisy, clean = synthetic_pairs(10, size=64, seed=0)
    base = _tiny()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    before = _heldout_psnr(base, noisy[8:], clean[8:])
    result = finetune(
        list(noisy[:8]), list(clean[:8]), val_inputs=list(noisy[8:]),
        val_targets=list(clean[8:]), model=base, steps=40, patch_size=32, batch_size=4,
        learning_rate=2e-3, device="cpu", normalize="none", val_every=10,
    )
    after = _heldout_psnr(result.model, noisy[8:], clean[8:])
    print(f"held-out PSNR {before:.2f} -> {after:.2f} dB (+{after - before:.2f}; noisy input "
          f"{psnr(noisy[8:], clean[8:]):.2f} dB)")
    assert after > before + 2.0
    assert after > psnr(noisy[8:], clean[8:]) + 2.0  # better than doing nothing
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    # the trainer reports the same held-out numbers and returns the best model
    assert result.base_val_psnr == pytest.approx(before, abs=1e-3)
    assert result.best_val_psnr == pytest.approx(after, abs=1e-3)
    assert result.best_val_psnr == max(h["val_psnr"] for h in result.history if "val_psnr" in h)
    assert not result.model.training
    assert result.n_train == 8 and result.n_val == 2 and result.steps_done == 40
    # the given model was copied, never trained in place
    assert all(torch.equal(original[k], v) for k, v in base.state_dict().items())
    assert result.model is not base


# --------------------------------------------------------------------------- resume


def test_resume_after_stop_reproduces_uninterrupted_run(tmp_path):
    full = _small_run(checkpoint_path=tmp_path / "full.pt", checkpoint_every=4)
    ckpt = tmp_path / "part.pt"
    part = _small_run(checkpoint_path=ckpt, checkpoint_every=4,
                      callback=lambda e: e["step"] < 5)
    assert part.stopped and part.steps_done == 5
    assert load_checkpoint(ckpt)["step"] == 5  # a clean stop writes a checkpoint
    resumed = _small_run(checkpoint_path=ckpt, checkpoint_every=4, resume_from=ckpt)
    assert not resumed.stopped and resumed.steps_done == 12
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in full.history]
    assert resumed.best_val_psnr == full.best_val_psnr
    assert _same_weights(resumed.model, full.model)


def test_crash_loses_at_most_one_checkpoint_interval(tmp_path):
    full = _small_run(checkpoint_path=tmp_path / "full.pt", checkpoint_every=4)
    ckpt = tmp_path / "crash.pt"

    def crash(event):
        if event["step"] == 7:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        _small_run(checkpoint_path=ckpt, checkpoint_every=4, callback=crash)
    saved = load_checkpoint(ckpt)
    assert saved["step"] == 4  # the last checkpoint before the crash survives
    resumed = _small_run(checkpoint_path=ckpt, checkpoint_every=4, resume_from=ckpt)
    np.testing.assert_allclose([h["loss"] for h in resumed.history],
                               [h["loss"] for h in full.history], rtol=0, atol=1e-6)
    assert _same_weights(resumed.model, full.model)


def test_resume_with_different_schedule_is_refused(tmp_path):
    ckpt = tmp_path / "c.pt"
    _small_run(steps=4, checkpoint_path=ckpt)
    with pytest.raises(ValueError, match="steps=6"):
        _small_run(steps=6, resume_from=ckpt)
    bad = tmp_path / "not_ckpt.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a napari-mprnet fine-tuning checkpoint"):
        _small_run(steps=4, resume_from=bad)


def test_checkpoint_is_readable_with_weights_only(tmp_path):
    ckpt = tmp_path / "sub" / "c.pt"
    _small_run(steps=4, checkpoint_path=ckpt, checkpoint_every=2)
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "step", "sampler", "torch_rng", "history",
                "best", "best_state", "config", "normalization", "args"):
        assert key in data, key
    assert data["step"] == 4 and data["config"] == TINY.to_dict()
    assert data["scheduler"]["last_step"] == 4
    assert data["sampler"]["bit_generator"] == "PCG64"
    assert data["args"]["patch_size"] == 32
    assert len(data["history"]) == 4
    from napari_mprnet.io.atomic import is_temporary

    assert not [p for p in ckpt.parent.iterdir() if is_temporary(p)]


# --------------------------------------------------------------------------- guards


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, monkeypatch):
    real_loss = objectives.mprnet_loss
    calls = {"n": 0}

    def flaky(stages, target, edge_weight=0.05):
        calls["n"] += 1
        loss = real_loss(stages, target, edge_weight)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(objectives, "mprnet_loss", flaky)
    ckpt = tmp_path / "c.pt"
    with pytest.raises(TrainingDiverged) as info:
        _small_run(checkpoint_path=ckpt, checkpoint_every=2)
    message = str(info.value)
    assert "training diverged at step 3: loss is nan" in message
    assert "lower learning_rate (now 0.001" in message
    assert isinstance(info.value, FloatingPointError) and info.value.step == 3
    assert load_checkpoint(ckpt)["step"] == 2  # the last good checkpoint is untouched


def test_non_finite_gradient_is_caught(monkeypatch):
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: torch.tensor(float("inf")))
    with pytest.raises(TrainingDiverged, match="step 1: gradient norm is inf"):
        _small_run(steps=3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"steps": 0}, "steps"),
        ({"patch_size": 20}, "patch_size"),
        ({"patch_size": 8}, "patch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"min_learning_rate": 1.0}, "min_learning_rate"),
        ({"warmup_steps": 50}, "warmup_steps"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_every": 0}, "val_every"),
        ({"checkpoint_every": 2}, "checkpoint_path"),
        ({"save_to": "model.txt"}, "save_to"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _small_run(**kwargs)


def test_data_errors_come_from_loading():
    noisy, clean = synthetic_pairs(2, size=48)
    with pytest.raises(ValueError, match="differ in shape"):
        finetune(noisy, clean[:, :40], model=_tiny(), steps=2, patch_size=32, device="cpu")
    with pytest.raises(ValueError, match="smaller than the patch size 64; pass patch_size=48 "):
        finetune(noisy, clean, model=_tiny(), steps=2, patch_size=64, device="cpu")
    # the advice works
    assert finetune(noisy, clean, model=_tiny(), steps=1, patch_size=48, device="cpu").model
    tiny_noisy, tiny_clean = synthetic_pairs(1, size=12)
    with pytest.raises(ValueError, match="drop the image .patches are at least 16"):
        finetune(tiny_noisy, tiny_clean, model=_tiny(), steps=2, patch_size=16, device="cpu")
    with pytest.raises(ValueError, match="val_inputs and val_targets"):
        finetune(noisy, clean, model=_tiny(), steps=2, patch_size=32, val_inputs=noisy)


# --------------------------------------------------------------------------- callback


def test_callback_events_and_stop():
    events = []

    def record(event):
        events.append(dict(event))
        return event["step"] < 7

    result = _small_run(callback=record)
    assert result.stopped and result.steps_done == 7 and len(result.history) == 7
    assert result.history[-1]["stopped"] is True
    info = [e for e in events if "loss" not in e]  # what the run reports besides steps
    events = [e for e in events if "loss" in e]
    assert [e["step"] for e in events] == list(range(1, 8))
    assert all({"step", "steps", "loss", "lr"} <= set(e) and e["steps"] == 12 for e in events)
    with_val = [e["step"] for e in events if "val_psnr" in e]
    assert with_val == [6] and "val_ssim" in events[5]
    assert not result.model.training
    assert [e["event"] for e in info] == ["plan", "start", "rate"] and info[2]["step"] == 4
    # the starting model's validation score (step 0): where the curve starts
    assert info[1]["step"] == 0 and info[1]["val_psnr"] == result.base_val_psnr
    assert all("steps_per_s" in e for e in events[4:]) and "steps_per_s" not in events[3]


def test_plan_and_rate_are_reported_before_and_after_the_first_steps(caplog):
    import logging

    events = []
    with caplog.at_level(logging.INFO, logger="napari_mprnet.training"):
        _small_run(steps=6, callback=events.append, precision="fp32", channels_last=False)
    plan, start, rate = [e for e in events if "loss" not in e]
    assert events[0] is plan and events[1] is start  # before the first step
    assert start["message"].startswith("starting model: val PSNR")
    message = plan["message"]
    parts = ("3 training planes (3 x 48x48 grey)", "1 validation planes",
             "6 steps of 2 x 32x32 patches", "on cpu (1 thread)", "in fp32", "MPRNet object")
    for part in parts:
        assert part in message, (part, message)
    assert plan["n_train"] == 3 and plan["precision"] == "fp32" and "\n" not in message
    assert events.index(rate) == 6  # right after the step event of step 4
    assert rate["steps_per_s"] > 0 and rate["eta_s"] == pytest.approx(2 / rate["steps_per_s"])
    assert "s per step" in rate["message"] and "remaining 2 steps" in rate["message"]
    logged = [r.getMessage() for r in caplog.records]
    assert message in logged and rate["message"] in logged


def test_stop_training_exception_stops_cleanly():
    def stop(event):
        if event["step"] == 2:
            raise StopTraining

    result = _small_run(callback=stop)
    assert result.stopped and result.steps_done == 2
    assert result.best_val_psnr is None  # no validation happened yet: the last model


# --------------------------------------------------------------------------- schedule


def test_learning_rate_warmup_then_cosine():
    steps, lr, low, warm = 100, 1e-3, 1e-6, 10
    rates = [learning_rate_at(s, steps, lr, low, warm) for s in range(1, steps + 1)]
    assert rates[:warm] == pytest.approx([lr * (s + 1) / warm for s in range(warm)])
    assert rates[warm] == pytest.approx(lr)
    assert all(a >= b for a, b in zip(rates[warm:], rates[warm + 1:]))
    assert rates[-1] == pytest.approx(low)
    middle = warm + (steps - warm - 1) / 2 + 1  # half-way through the cosine
    assert learning_rate_at(middle, steps, lr, low, warm) == pytest.approx((lr + low) / 2)
    # no warm-up: start at the peak
    assert learning_rate_at(1, 10, lr, low, 0) == pytest.approx(lr)


def test_history_follows_schedule():
    result = _small_run(steps=12, warmup_steps=3, learning_rate=1e-3)
    assert [h["lr"] for h in result.history] == pytest.approx(
        [learning_rate_at(s, 12, 1e-3, 1e-6, 3) for s in range(1, 13)]
    )
    assert result.history[0]["lr"] < result.history[2]["lr"] == pytest.approx(1e-3)
    assert result.history[-1]["lr"] == pytest.approx(1e-6)
    assert all(math.isfinite(h["loss"]) for h in result.history)


def test_default_warmup_length():
    stopped = _small_run(steps=1000, callback=lambda e: False)  # one step is enough
    assert stopped.steps_done == 1
    assert stopped.metadata["provenance"]["warmup_steps"] == 50
    assert stopped.history[0]["lr"] == pytest.approx(1e-3 / 50)


# --------------------------------------------------------------------------- saving


def test_save_to_round_trip_with_metadata(tmp_path):
    rng = np.random.default_rng(3)
    noisy, clean = synthetic_pairs(4, size=48, seed=3)
    scale = rng.uniform(900, 1100)
    raw_in = (noisy * scale + 100).astype(np.uint16)  # 16-bit: percentile normalisation
    raw_tgt = (clean * scale + 100).astype(np.uint16)
    out = tmp_path / "ft.safetensors"
    result = finetune(list(raw_in), list(raw_tgt), model=_tiny(), steps=4, patch_size=32,
                      batch_size=2, device="cpu", save_to=out, val_fraction=0.25)
    assert result.saved_to == str(out)
    loaded = load_model(out)
    assert _same_weights(loaded, result.model)
    meta = loaded.metadata
    assert meta["task"] == "denoise" and meta["trained"] is True
    norm = meta["normalization"]
    assert norm["mode"] == "percentile" and norm["percentiles"] == [0.5, 99.8]
    assert norm["low"] < norm["high"]
    prov = meta["provenance"]
    assert prov["steps"] == 4 and prov["patch_size"] == 32 and prov["batch_size"] == 2
    assert prov["learning_rate"] == 2e-4 and prov["device"] == "cpu"
    assert prov["n_train_planes"] == 3 and prov["n_val_planes"] == 1
    assert prov["best_val_psnr"] == pytest.approx(result.best_val_psnr)
    assert prov["best_val_ssim"] is not None and "date" in prov
    assert meta["base_model"] == "MPRNet object"
    # inference normalises new data the way the model was trained
    image = raw_in[0]
    got = normalization_for(image, "auto", (1.0, 99.0), loaded)
    assert got.mode == "percentile"
    restored = napari_mprnet.restore(image, model=loaded, device="cpu")
    assert restored.shape == image.shape and np.isfinite(restored).all()


def test_bundled_model_is_copied_not_modified():
    cached = api.prepare_model("denoise", "denoise")
    before = {k: v.clone() for k, v in cached.state_dict().items()}
    noisy, clean = synthetic_pairs(2, size=32)
    result = finetune(noisy, clean, model="denoise", steps=2, patch_size=32, batch_size=1,
                      learning_rate=1e-2, device="cpu", val_fraction=0)
    assert all(torch.equal(before[k], v) for k, v in cached.state_dict().items())
    assert not _same_weights(result.model, cached)
    assert result.best_val_psnr is None and result.n_val == 0
    assert result.metadata["task"] == "denoise" and "denoise" in result.metadata["base_model"]
    assert not cached.training and not result.model.training


# --------------------------------------------------------------------------- GPU paths on CPU


def test_compile_failure_falls_back(monkeypatch):
    def broken(model):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _small_run(steps=2, compile=True)
    assert result.steps_done == 2
    assert any("torch.compile unavailable" in str(w.message) for w in caught)


def test_compiled_forward_failing_at_first_step_falls_back(monkeypatch):
    def lazy_broken(model):
        def forward(x):
            raise RuntimeError("inductor exploded")
        return forward

    monkeypatch.setattr(torch, "compile", lazy_broken)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        result = _small_run(steps=2, compile=True)
    assert result.steps_done == 2


def test_bf16_autocast_and_channels_last_on_cpu():
    result = _small_run(steps=2, precision="bf16", channels_last=True)
    assert result.precision == "bf16" and result.steps_done == 2
    assert all(math.isfinite(h["loss"]) for h in result.history)
    with pytest.raises(ValueError, match="precision"):
        _small_run(steps=2, precision="fp8")


def test_auto_precision_follows_the_cpu(monkeypatch):
    """None/"auto" train in bf16 + channels-last where the CPU has native bf16, fp32 without."""
    seen = []
    real_to = MPRNet.to

    def spy_to(self, *args, **kwargs):
        seen.append(kwargs.get("memory_format"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(MPRNet, "to", spy_to)
    monkeypatch.setenv("NAPARI_MPRNET_CPU_BF16", "1")
    for precision in (None, "auto"):
        result = _small_run(steps=2, precision=precision, val_every=2)
        assert result.precision == "bf16" and result.metadata["provenance"]["precision"] == "bf16"
    assert torch.channels_last in seen
    seen.clear()
    monkeypatch.setenv("NAPARI_MPRNET_CPU_BF16", "0")  # forced: a CPU without bf16
    result = _small_run(steps=2, precision="auto", val_every=2)
    assert result.precision == "fp32" and result.steps_done == 2
    assert torch.channels_last not in seen
    assert all(math.isfinite(h["loss"]) for h in result.history)


def test_bf16_training_keeps_fp32_master_weights_and_the_guard(monkeypatch):
    from napari_mprnet.training import losses

    result = _small_run(steps=2, precision="bf16")
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    monkeypatch.setattr(objectives, "mprnet_loss",
                        lambda *a, **k: losses.mprnet_loss(*a, **k) * float("nan"))
    with pytest.raises(TrainingDiverged, match="loss is nan"):
        _small_run(steps=2, precision="bf16")



# --------------------------------------------------------------------------- checkpoint safety


def _rewrite(path, change) -> None:
    """Load a checkpoint, change it, store it again with a matching checksum."""
    from napari_mprnet.training.checkpoints import content_checksum

    data = torch.load(path, map_location="cpu", weights_only=True)
    change(data)
    data["checksum"] = content_checksum(data)
    torch.save(data, path)


def test_unwritable_outputs_fail_before_the_first_step(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    steps_run = []
    for kwargs, name in (
        ({"save_to": blocker / "sub" / "m.safetensors"}, "save_to"),
        ({"checkpoint_path": blocker / "c.pt"}, "checkpoint_path"),
        ({"save_to": "/proc/napari-mprnet-test/m.safetensors"}, "save_to"),
        ({"checkpoint_path": tmp_path}, "checkpoint_path"),
    ):
        with pytest.raises(ValueError, match=name) as info:
            _small_run(steps=2, callback=steps_run.append, **kwargs)
        assert "\n" not in str(info.value)
    assert steps_run == []  # refused before training, so nothing trained is lost


def test_damaged_checkpoints_are_refused_with_one_line(tmp_path):
    import zipfile

    ckpt = tmp_path / "c.pt"
    _small_run(steps=4, checkpoint_path=ckpt)
    assert load_checkpoint(ckpt)["checksum"]
    clean = ckpt.read_bytes()
    # a flipped byte inside the largest stored tensor: torch itself loads it without notice
    with zipfile.ZipFile(ckpt) as archive:
        record = max((info for info in archive.infolist() if "/data/" in info.filename),
                     key=lambda info: info.file_size)
    with open(ckpt, "rb") as handle:
        handle.seek(record.header_offset + 26)
        name_len, extra_len = np.frombuffer(handle.read(4), dtype="<u2")
    start = record.header_offset + 30 + int(name_len) + int(extra_len)
    for offset in (start, start + record.file_size // 2, start + record.file_size - 1):
        damaged = bytearray(clean)
        damaged[offset] ^= 0xFF
        ckpt.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match="is damaged: its checksum") as info:
            _small_run(steps=4, resume_from=ckpt)
        assert str(ckpt) in str(info.value) and "\n" not in str(info.value)
    # bytes flipped anywhere else: still one ValueError naming the file, never a traceback
    for offset in (0, 100, len(clean) // 3, len(clean) - 30):
        damaged = bytearray(clean)
        damaged[offset] ^= 0xFF
        ckpt.write_bytes(bytes(damaged))
        try:
            load_checkpoint(ckpt)
        except ValueError as err:
            assert str(ckpt) in str(err) and "\n" not in str(err)
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        _small_run(steps=4, resume_from=ckpt)


def test_resume_refuses_other_data_and_steps_beyond(tmp_path):
    ckpt = tmp_path / "c.pt"
    _small_run(steps=4, checkpoint_path=ckpt)
    data = load_checkpoint(ckpt)["data"]
    assert data["train_planes"] + data["val_planes"] == 4 and len(data["sha256"]) == 64
    noisy, clean = synthetic_pairs(4, size=48, seed=2)  # same counts and shapes, other pixels
    options = {"model": _tiny(), "steps": 4, "patch_size": 32, "batch_size": 2,
               "learning_rate": 1e-3, "device": "cpu", "normalize": "none", "val_every": 6}
    with pytest.raises(ValueError, match="trained on other data") as info:
        finetune(list(noisy), list(clean), resume_from=ckpt, **options)
    assert "sha256" in str(info.value) and "\n" not in str(info.value)
    resumed = finetune(list(noisy), list(clean), resume_from=ckpt, resume_other_data=True,
                       **options)
    assert resumed.steps_done == 4
    same_noisy, same_clean = synthetic_pairs(4, size=48, seed=1)  # the run's planes, one fewer
    with pytest.raises(ValueError, match="trained on other data"):
        finetune(list(same_noisy[:3]), list(same_clean[:3]), resume_from=ckpt, **options)
    _rewrite(ckpt, lambda d: d.update(step=9))
    with pytest.raises(ValueError, match="at step 9, beyond this run's 4 steps"):
        _small_run(steps=4, resume_from=ckpt)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("optimizer"), "'optimizer' is missing"),
        (lambda d: d.update(history="many"), "'history' is a str, not a list"),
        (lambda d: d.update(model={"nonsense": torch.zeros(2)}), "does not fit this run"),
        (lambda d: d["optimizer"].update(state={0: {"exp_avg": 1}}), "does not fit this run"),
        (lambda d: d.update(sampler={"bit_generator": "MT"}), "does not fit this run"),
        (lambda d: d.update(normalization={"mode": 3}), "does not fit this run"),
    ],
)
def test_malformed_checkpoint_contents_give_one_line(tmp_path, change, message):
    ckpt = tmp_path / "c.pt"
    _small_run(steps=4, checkpoint_path=ckpt)
    _rewrite(ckpt, change)
    with pytest.raises(ValueError, match=message) as info:
        _small_run(steps=4, resume_from=ckpt)
    assert str(ckpt) in str(info.value) and "\n" not in str(info.value)


def test_checksum_is_checked_whatever_the_version_says(tmp_path):
    ckpt = tmp_path / "c.pt"
    _small_run(steps=2, checkpoint_path=ckpt)
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    data["version"], data["step"] = 1, 1  # an older version number hides no damage
    torch.save(data, ckpt)
    with pytest.raises(ValueError, match="is damaged"):
        load_checkpoint(ckpt)
    del data["checksum"]  # a version-1 file (no checksum) still loads
    torch.save(data, ckpt)
    assert load_checkpoint(ckpt)["step"] == 1

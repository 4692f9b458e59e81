"""finetune without clean images: Noise2Void, Noise2Noise from a series, validation, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mprnet.model import MPRNet, MPRNetConfig
from napari_mprnet.training.self_supervised import Noise2Void
from napari_mprnet.training.trainer import finetune, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny() -> MPRNet:
    """A fresh tiny network, the same every call."""
    torch.manual_seed(0)
    return MPRNet(MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1))


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.3 + 0.2 * np.sin(2 * np.pi * (rng.uniform(1, 3) * yy + rng.uniform(1, 3) * xx))
    for _ in range(3):
        cy, cx = rng.random(2)
        img += 0.4 * rng.random() * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
    return img


def _noisy(n: int, size: int = 48, seed: int = 0, sigma: float = 0.15):
    rng = np.random.default_rng(seed)
    clean = np.stack([_scene(rng, size) for _ in range(n)]).astype(np.float32)
    return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32), clean


def _run(inputs, **kwargs):
    options = {"model": _tiny(), "steps": 16, "patch_size": 32, "batch_size": 4,
               "learning_rate": 2e-3, "device": "cpu", "normalize": "none", "val_every": 4,
               "seed": 0}
    options.update(kwargs)
    return finetune(inputs, **options)


def test_noise2void_lowers_the_self_supervised_validation_loss():
    noisy, _ = _noisy(5)
    result = _run(list(noisy), val_fraction=0.2)
    assert result.metadata["provenance"]["objective"]["name"] == "noise2void"
    assert result.n_train == 4 and result.n_val == 1
    val = [h for h in result.history if "val_loss" in h]
    assert len(val) == 4 and all("val_psnr" not in h for h in val)
    assert result.best_val_psnr is None  # no clean images: no PSNR
    assert result.best_val_loss < 0.95 * result.base_val_loss
    assert result.best_step > 0
    assert result.best_val_loss == min(h["val_loss"] for h in val)
    assert result.metadata["provenance"]["best_val_loss"] == pytest.approx(result.best_val_loss)


def test_clean_validation_images_decide_by_psnr_and_loss_is_reported_too():
    noisy, clean = _noisy(6)
    result = _run(list(noisy[:4]), val_inputs=list(noisy[4:]), val_targets=list(clean[4:]))
    val = [h for h in result.history if "val_psnr" in h]
    assert val and all("val_loss" in h and "val_ssim" in h for h in val)
    assert result.best_val_psnr == max(h["val_psnr"] for h in val)
    assert result.base_val_loss is not None and result.base_val_psnr is not None


def test_starting_model_is_kept_when_no_step_beats_it():
    noisy, _ = _noisy(5)
    good = _run(list(noisy), val_fraction=0.2).model
    # a learning rate far too high wrecks the model: the validation loss never improves
    wrecked = _run(list(noisy), model=good, val_fraction=0.2, learning_rate=0.03, steps=8)
    assert wrecked.best_step == 0
    assert wrecked.best_val_loss == wrecked.base_val_loss
    state, kept = good.state_dict(), wrecked.model.state_dict()
    assert all(torch.equal(state[k], kept[k]) for k in state)


def test_noise2noise_pairs_from_series():
    rng = np.random.default_rng(0)
    scene = _scene(rng, 48).astype(np.float32)
    stack = scene + 0.15 * rng.standard_normal((20, 48, 48)).astype(np.float32)
    result = _run(stack, pairs_from_series=True, val_fraction=0.2)
    prov = result.metadata["provenance"]
    assert prov["objective"]["name"] == "noise2noise"
    # 20 frames in blocks of 2: 2 validation blocks (2 or 3 pairs: adjacent blocks make 3),
    # training pairs both ways
    assert result.n_val in (2, 3) and result.n_train % 2 == 0 and result.n_train >= 2 * 12
    assert result.best_val_loss < result.base_val_loss
    model = result.model
    with torch.no_grad():
        out = model(torch.from_numpy(stack[:1, None]).expand(-1, 3, -1, -1))[0].mean(1)[0]
    assert float(((out.numpy() - scene) ** 2).mean()) < float(((stack[0] - scene) ** 2).mean())


def test_noise2noise_with_given_noisy_targets():
    a, _ = _noisy(4, seed=1)
    b, _ = _noisy(4, seed=1)  # same scenes ...
    b = b + 0.1 * np.random.default_rng(9).standard_normal(b.shape).astype(np.float32)
    result = _run(list(a), targets=list(b), method="noise2noise", steps=4, val_every=2)
    assert result.metadata["provenance"]["objective"]["name"] == "noise2noise"
    assert result.best_val_psnr is None and result.base_val_loss is not None


def test_resume_reproduces_an_uninterrupted_noise2void_run(tmp_path):
    noisy, _ = _noisy(5)
    kwargs = {"val_fraction": 0.2, "steps": 10, "checkpoint_every": 3}
    full = _run(list(noisy), checkpoint_path=tmp_path / "full.pt", **kwargs)
    ckpt = tmp_path / "part.pt"
    part = _run(list(noisy), checkpoint_path=ckpt, callback=lambda e: e["step"] < 4, **kwargs)
    assert part.stopped and load_checkpoint(ckpt)["args"]["objective"]["name"] == "noise2void"
    resumed = _run(list(noisy), checkpoint_path=ckpt, resume_from=ckpt, **kwargs)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert resumed.best_val_loss == full.best_val_loss
    sa, sb = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # another objective (or another replacement) cannot continue this checkpoint
    with pytest.raises(ValueError, match="objective"):
        _run(list(noisy), checkpoint_path=ckpt, resume_from=ckpt,
             objective=Noise2Void(replacement="neighbour"), **kwargs)


def test_method_and_data_must_agree():
    noisy, clean = _noisy(2)
    with pytest.raises(ValueError, match="needs targets"):
        _run(list(noisy), method="supervised")
    with pytest.raises(ValueError, match="give no targets"):
        _run(list(noisy), targets=list(clean), method="noise2void")
    with pytest.raises(ValueError, match="pairs_from_series"):
        _run(noisy, pairs_from_series=True, method="noise2void")
    with pytest.raises(ValueError, match="method"):
        _run(list(noisy), method="noise2self")
    with pytest.raises(ValueError, match="not a series"):
        _run(noisy[0], pairs_from_series=True)


def test_structured_blind_spot_from_finetune():
    noisy, _ = _noisy(5)
    result = _run(list(noisy), val_fraction=0.2, blind_spot_mask="horizontal",
                  blind_spot_span=3)
    objective = result.metadata["provenance"]["objective"]
    assert objective["name"] == "noise2void"
    assert objective["mask"] == "horizontal" and objective["span"] == 3
    assert result.best_val_loss < result.base_val_loss
    with pytest.raises(ValueError, match="no blind spot"):
        _run(noisy, pairs_from_series=True, blind_spot_mask="square")
    with pytest.raises(ValueError, match="blind_spot_mask must be one of"):
        _run(list(noisy), blind_spot_mask="ring")
    charbonnier = _run(list(noisy), steps=1, val_fraction=0.0,
                       blind_spot_distance="charbonnier")
    assert charbonnier.metadata["provenance"]["objective"]["distance"] == "charbonnier"
    with pytest.raises(ValueError, match="distance must be one of"):
        _run(list(noisy), blind_spot_distance="l1")
    with pytest.raises(ValueError, match="blind-spot settings to the objective"):
        _run(list(noisy), objective=Noise2Void(), blind_spot_mask="square")


def test_default_learning_rate_is_lower_for_self_supervised_methods():
    noisy, clean = _noisy(2)
    ssl = _run(list(noisy), steps=1, learning_rate=None, val_fraction=0.0)
    sup = _run(list(noisy), targets=list(clean), steps=1, learning_rate=None, val_fraction=0.0)
    assert ssl.metadata["provenance"]["learning_rate"] == 5e-5
    assert sup.metadata["provenance"]["learning_rate"] == 2e-4

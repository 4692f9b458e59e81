"""Generated microscopy acquisitions as training pairs, in restore()'s input domain."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_mprnet.engine.normalize import choose_normalization
from napari_mprnet.training.acquisitions import AcquisitionPairs, network_pair


def _fake_acquisition(dtype, offset, gain, photons, seed=0):
    rng = np.random.default_rng(seed)
    clean = np.zeros((64, 64))
    clean[20:30, 20:40] = 1.0
    clean[45, 10:50] = 0.6
    expected = offset + gain * photons * clean
    counts = rng.poisson(photons * clean) * gain + offset
    info = np.iinfo(dtype)
    noisy = np.clip(np.round(counts), 0, info.max).astype(dtype)
    return SimpleNamespace(noisy=noisy, clean=expected)


@pytest.mark.parametrize("dtype, offset, gain", [(np.uint16, 100.0, 8.0), (np.uint8, 10.0, 1.0)])
def test_network_pair_maps_noisy_and_clean_by_restores_map_of_the_noisy_image(dtype, offset,
                                                                              gain):
    acq = _fake_acquisition(dtype, offset, gain, photons=20)
    noisy, clean = network_pair(acq)
    norm = choose_normalization(acq.noisy, "auto")  # what restore() does by default
    assert noisy.dtype == clean.dtype == np.float32
    np.testing.assert_allclose(noisy, norm.apply(acq.noisy), atol=1e-6)
    # the clean reference goes through the noisy image's map, not one fitted on itself
    np.testing.assert_allclose(clean, (acq.clean - norm.low) / (norm.high - norm.low),
                               rtol=1e-5, atol=1e-6)
    # so the camera offset stays where the network sees it in the noisy image
    background = acq.clean == offset
    assert abs(float(clean[background].mean()) - float(noisy[background].mean())) < 0.02
    if dtype == np.uint8:
        assert (norm.low, norm.high) == (0.0, 255.0)


def test_acquisition_pairs_are_reproducible_crops_and_splits_differ():
    one = AcquisitionPairs("train", 48, seed=3, field_size=96)
    again = AcquisitionPairs("train", 48, seed=3, field_size=96)
    val = AcquisitionPairs("val", 48, seed=3, field_size=96)
    x1, y1 = one.pairs(3)
    x2, y2 = again.pairs(3)
    xv, _ = val.pairs(3)
    assert [a.shape for a in x1 + y1] == [(48, 48)] * 6
    for a, b in zip(x1 + y1, x2 + y2):
        np.testing.assert_array_equal(a, b)
    assert not any(np.array_equal(a, b) for a, b in zip(x1, xv))
    # noisy and clean are aligned in one range: the residual is small next to the signal
    for noisy, clean in zip(x1, y1):
        assert np.isfinite(noisy).all() and np.isfinite(clean).all()
        assert np.corrcoef(noisy.ravel(), clean.ravel())[0, 1] > 0.3


def test_acquisition_pairs_reject_bad_settings():
    with pytest.raises(ValueError, match="split"):
        AcquisitionPairs("benchmark")
    with pytest.raises(ValueError, match="size"):
        AcquisitionPairs("train", 300, field_size=256)
    with pytest.raises(ValueError, match="cameras"):
        AcquisitionPairs("train", 64, cameras=("film",))
    with pytest.raises(ValueError, match="photons"):
        AcquisitionPairs("train", 64, photons=(0, 10))


def _train_defaults():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "train_defaults.py"
    spec = importlib.util.spec_from_file_location("train_defaults_generated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_defaults_mixes_in_generated_acquisitions_and_records_them():
    script = _train_defaults()
    plan = script.main(["--tiny", "--dry-run", "--task", "denoise", "--generated", "0.5",
                        "--generated-field", "64", "--pairs", "6", "--val-pairs", "2"])[0]
    assert plan["train_pairs"]["count"] == 6 and plan["val_pairs"]["count"] == 2
    generated = plan["generated"]
    assert generated["share"] == 0.5 and generated["cameras"] == ["photon_counting",
                                                                  "read_noise"]
    assert generated["split"] == "train"
    base = SimpleNamespace(pairs=lambda n: ([np.zeros((4, 4))] * n, [np.ones((4, 4))] * n))
    stream = SimpleNamespace(pairs=lambda n: ([np.full((4, 4), 2.0)] * n,
                                              [np.full((4, 4), 3.0)] * n))
    inputs, targets = script.MixedPairs(base, stream, 0.25).pairs(8)
    assert [float(x[0, 0]) for x in inputs] == [0.0] * 6 + [2.0] * 2
    assert len(targets) == 8
    assert script.main(["--tiny", "--dry-run", "--task", "denoise"])[0]["generated"] is None
    for bad in (["--task", "deblur", "--generated", "0.5"], ["--generated", "1.5"],
                ["--generated", "0.5", "--generated-field", "16"]):
        with pytest.raises(SystemExit):
            script.main(["--tiny", "--dry-run", *bad])

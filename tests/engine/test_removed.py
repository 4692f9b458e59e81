"""What a restoration removed: input - result, and the per-plane check that it is noise."""

import warnings

import numpy as np
import pytest
from scipy import ndimage

from napari_mprnet import restore
from napari_mprnet.engine.removed import (
    STRUCTURE_THRESHOLD,
    RemovedPart,
    removed_part,
    structure_fraction,
)
from napari_mprnet.training import microscopy


def _acquisition(family="nuclei", camera="read_noise", photons=3000.0, bits=16, seed=0,
                 psf=None):
    rng = np.random.default_rng(seed)
    field = microscopy.clean_field(family, 96, rng, psf_sigma=psf)
    return microscopy.acquire(field, camera, photons, bits, rng)


def test_white_noise_scores_zero_and_smooth_structure_one():
    rng = np.random.default_rng(0)
    white = rng.standard_normal((128, 128))
    assert abs(structure_fraction(white)) < 0.02
    # noise whose level follows the image (Poisson) is still white
    level = np.linspace(1, 100, 128)[None, :] * np.ones((128, 1))
    assert abs(structure_fraction(rng.poisson(level) - level)) < 0.02
    assert structure_fraction(white - ndimage.gaussian_filter(white, 1)) < 0  # high-passed
    smooth = ndimage.gaussian_filter(white, 3)
    assert structure_fraction(smooth) > 0.8


@pytest.mark.parametrize("camera", microscopy.CAMERAS)
@pytest.mark.parametrize("family", ["nuclei", "puncta", "cytoplasm"])
def test_removing_exactly_the_noise_passes(family, camera):
    """A perfect denoiser (the exact expected signal) removed only noise: never flagged."""
    for photons in (10.0, 3000.0):
        acq = _acquisition(family, camera, photons, seed=int(photons))
        check = removed_part(acq.noisy, acq.clean)
        assert not check.flagged, (photons, check.planes)
        assert check.message() is None


def test_removing_structure_is_flagged():
    """Smoothing a high-photon field removes texture and peaks with the noise."""
    for seed, family in enumerate(["nuclei", "puncta", "filaments", "cytoplasm"]):
        acq = _acquisition(family, photons=3000.0, seed=seed)
        smoothed = ndimage.gaussian_filter(acq.noisy.astype(np.float64), 1.5)
        check = removed_part(acq.noisy, smoothed)
        assert check.planes[0].structure > STRUCTURE_THRESHOLD, family
        assert check.flagged and "compare with strength 0.5" in check.message()


def test_removed_is_exactly_input_minus_result_and_planes_are_named():
    planes = [_acquisition(seed=s) for s in range(3)]
    stack = np.stack([a.noisy for a in planes])
    result = np.stack([a.clean for a in planes]).astype(np.float32)
    result[1] = ndimage.gaussian_filter(stack[1].astype(np.float32), 1.5)  # plane 1 smoothed
    check = removed_part(stack, result)
    assert check.data.dtype == np.float32
    np.testing.assert_array_equal(check.data, stack.astype(np.float32) - result)
    assert [p.flagged for p in check.planes] == [False, True, False]
    assert [p.position for p in check.planes] == [{"Z": 0}, {"Z": 1}, {"Z": 2}]
    assert "on plane Z 1:" in check.message()
    record = check.record()
    assert record["flagged_planes"] == [1] and record["planes"][1]["flagged"]
    with pytest.raises(ValueError, match="shape"):
        removed_part(stack, result[:2])


def test_other_tasks_are_not_checked():
    acq = _acquisition()
    check = removed_part(acq.noisy, ndimage.gaussian_filter(acq.clean, 2), task="deblur")
    assert check.planes == () and check.message() is None
    assert check.record()["checked"] is False


def test_restore_returns_the_removed_part(tiny_model):
    image = _acquisition(photons=100.0).noisy[:64, :64]
    result, removed = restore(image, model=tiny_model, device="cpu", tile_size=64,
                              return_removed=True)
    assert isinstance(removed, RemovedPart) and len(removed.planes) == 1
    np.testing.assert_array_equal(removed.data, image.astype(np.float32) - result)
    alone = restore(image, model=tiny_model, device="cpu", tile_size=64)
    np.testing.assert_array_equal(alone, result)  # the option changes nothing else
    stages, _ = restore(image, model=tiny_model, device="cpu", tile_size=64, stages=True,
                        return_removed=True)
    assert len(stages) == 3
    with pytest.raises(TypeError, match="return_removed"):
        restore(image, model=tiny_model, return_removed="yes")


def test_restore_warns_when_structure_was_removed(tiny_model, monkeypatch):
    from napari_mprnet import api

    acq = _acquisition()
    flagged = removed_part(acq.noisy, ndimage.gaussian_filter(acq.noisy * 1.0, 1.5))
    monkeypatch.setattr(api, "removed_part", lambda *a, **k: flagged)
    with pytest.warns(UserWarning, match="removed structure"):
        restore(acq.noisy[:32, :32], model=tiny_model, device="cpu", return_removed=True)
    clean = removed_part(acq.noisy, acq.clean)
    monkeypatch.setattr(api, "removed_part", lambda *a, **k: clean)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restore(acq.noisy[:32, :32], model=tiny_model, device="cpu", return_removed=True)


def test_dask_input_is_refused_with_advice(tiny_model):
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="compute the dask array first"):
        restore(da.zeros((32, 32), chunks=16), model=tiny_model, return_removed=True)

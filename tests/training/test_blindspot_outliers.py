"""Hot and dead pixels in blind-spot training: found, left out of the loss, taught away."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_mprnet.training.outliers import INJECTED_SHARE, batch_outliers, teach_outliers
from napari_mprnet.training.self_supervised import Noise2Void
from spotty_fields import spotty_field


def _with_hot(noisy, rng, fraction=0.01):
    hot = rng.random(noisy.shape) < fraction
    out = noisy.copy()
    out[hot] += rng.uniform(0.5, 2.0, hot.sum())
    return out, hot


def _tensor(*planes):
    return torch.from_numpy(np.stack(planes)[:, None].astype(np.float32)).repeat(1, 3, 1, 1)


def test_outliers_leave_the_loss_and_are_planted_on_hidden_centres():
    _, noisy, rng = spotty_field()
    hot_image, _ = _with_hot(noisy, rng, 0.02)
    inputs = _tensor(hot_image)
    masked = inputs.clone()
    mask = torch.zeros((1, 1, 64, 64))
    mask[0, 0, ::4, ::4] = 1.0
    new_masked, new_mask = teach_outliers(inputs, masked, mask, np.random.default_rng(0))
    flags = batch_outliers(inputs)[0]
    assert new_mask[flags].sum() == 0  # no hot pixel is a target
    assert new_mask.sum() == mask.sum() - (mask.bool() & flags).sum()
    changed = (new_masked != masked).any(1, keepdim=True)
    assert new_mask[changed].all()  # planted on loss positions only
    assert changed.sum() == round(INJECTED_SHARE * float(new_mask.sum()))
    assert torch.equal(masked, inputs)  # the given tensors are not modified
    # a batch without outliers is left as it was
    clean_batch = _tensor(noisy)
    same_masked, same_mask = teach_outliers(clean_batch, clean_batch, mask,
                                            np.random.default_rng(0))
    assert same_masked is clean_batch and same_mask is mask


def test_noise2void_uses_it_by_default_and_can_switch_it_off():
    _, noisy, rng = spotty_field()
    hot_image, _ = _with_hot(noisy, rng, 0.02)
    inputs = _tensor(hot_image)
    flags = batch_outliers(inputs)[0]
    with_outliers = Noise2Void(fraction=0.05).prepare(inputs, inputs, np.random.default_rng(3))
    without = Noise2Void(fraction=0.05, outliers=False).prepare(inputs, inputs,
                                                                np.random.default_rng(3))
    assert with_outliers.mask[flags].sum() == 0
    assert without.mask[flags].sum() > 0
    assert Noise2Void().describe()["outliers"] is True


@pytest.mark.usefixtures("one_torch_thread")
def test_finetuned_network_stops_reproducing_hot_pixels():
    """Blind-spot fine-tuning never trains what the network does with a visible centre, so a
    network that passes its input through (the tiny fresh MPRNet, like a supervised denoiser
    facing a spike) kept 94 % of every hot pixel's excess; planting outliers on the hidden
    centres teaches it to drop them."""
    from scipy import ndimage

    from napari_mprnet.model import MPRNet, MPRNetConfig
    from napari_mprnet.training.trainer import finetune

    _, noisy, rng = spotty_field(photons=50.0)
    image, hot = _with_hot(noisy, rng, 0.01)
    image = image.astype(np.float32)
    excess_in = (image - ndimage.median_filter(image, 3))[hot].mean()
    kept = {}
    for outliers in (False, True):
        torch.manual_seed(0)
        model = MPRNet(MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4,
                                    num_cab=1))
        result = finetune([image], None, model=model, objective=Noise2Void(outliers=outliers),
                          steps=8, patch_size=32, batch_size=4, learning_rate=3e-3,
                          device="cpu", normalize="none", val_fraction=0.0, seed=0)
        with torch.no_grad():
            out = result.model(_tensor(image))[0][0, 0].numpy()
        kept[outliers] = (out - ndimage.median_filter(out, 3))[hot].mean() / excess_in
    assert kept[False] > 0.7  # the old behaviour: hot pixels pass through
    assert kept[True] < 0.3

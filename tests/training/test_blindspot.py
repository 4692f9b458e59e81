"""Blind-spot masking: statistics, no centre leak, replacements from the window, masked loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mprnet.training.blindspot import (
    MAX_HIDDEN,
    blind_spot_loss,
    mask_batch,
    masked_charbonnier,
    stratified_positions,
    structure_offsets,
)


def _unique_batch(b=4, c=3, size=64, seed=0):
    """Every pixel value distinct within a patch, channels offset: a copy can be traced."""
    values = torch.randperm(size * size, generator=torch.Generator().manual_seed(seed))
    plane = values.reshape(size, size).float() / (size * size)
    return torch.stack([torch.stack([plane + 10 * ch + 100 * i for ch in range(c)])
                        for i in range(b)])


@pytest.mark.parametrize("fraction", [0.005, 0.015, 0.02])
def test_fraction_and_stratification(fraction):
    rng = np.random.default_rng(0)
    pos = stratified_positions(8, 64, 64, fraction, rng)
    side = max(2, round(1 / np.sqrt(fraction)))
    share = len(pos) / (8 * 64 * 64)
    assert abs(share - fraction) < 0.35 * fraction
    # at most one position per cell per patch, and positions unique
    cells = {(b, y // side, x // side) for b, y, x in pos}
    assert len(cells) == len(pos)
    assert len({tuple(p) for p in pos}) == len(pos)


def test_positions_are_uniform_over_the_patch():
    rng = np.random.default_rng(1)
    counts = np.zeros((16, 16))
    for _ in range(400):
        for _, y, x in stratified_positions(1, 16, 16, 1 / 16, rng):
            counts[y, x] += 1
    # every pixel drawn; no pixel more than ~3x its expected count (400 / 16 = 25)
    assert counts.min() > 5 and counts.max() < 75


@pytest.mark.parametrize("replacement", ["neighbour", "median", "mean"])
def test_no_centre_leak_and_values_from_the_window(replacement):
    x = _unique_batch()
    rng = np.random.default_rng(3)
    masked, mask = mask_batch(x, rng, fraction=0.02, radius=2, replacement=replacement)
    assert mask.shape == (4, 1, 64, 64)
    chosen = mask[:, 0] > 0
    assert abs(float(chosen.float().mean()) - 0.02) < 0.01
    # unmasked pixels untouched, input not modified in place
    assert torch.equal(masked[~chosen.unsqueeze(1).expand_as(x)],
                       x[~chosen.unsqueeze(1).expand_as(x)])
    assert not torch.equal(masked, x)
    b, ys, xs = torch.nonzero(chosen, as_tuple=True)
    for i in range(len(b)):
        bi, y, xx = int(b[i]), int(ys[i]), int(xs[i])
        window = x[bi, :, max(0, y - 2): y + 3, max(0, xx - 2): xx + 3]
        wy, wx = y - max(0, y - 2), xx - max(0, xx - 2)
        ring = torch.ones(window.shape[1:], dtype=torch.bool)
        ring[wy, wx] = False
        for ch in range(3):
            new = masked[bi, ch, y, xx]
            assert new != x[bi, ch, y, xx], "the centre's own value leaked"
            others = window[ch][ring]
            if replacement == "neighbour":
                assert bool((others == new).any())
            elif replacement == "median":
                assert torch.isclose(new, others.median())
            else:
                assert torch.isclose(new, others.mean())
        if replacement == "neighbour":  # the same neighbour in every channel
            diffs = masked[bi, :, y, xx] - 10 * torch.arange(3.0)
            assert torch.allclose(diffs, diffs[0].expand(3))


def test_neighbour_offsets_cover_the_window_without_centre():
    x = _unique_batch(b=1, c=1, size=32)
    seen = set()
    for seed in range(30):
        masked, mask = mask_batch(x, np.random.default_rng(seed), fraction=0.05,
                                  radius=1, replacement="neighbour")
        for _, _, y, xx in torch.nonzero(mask):
            y, xx = int(y), int(xx)
            hit = torch.nonzero(x[0, 0] == masked[0, 0, y, xx])
            dy, dx = int(hit[0, 0]) - y, int(hit[0, 1]) - xx
            seen.add((dy, dx))
    assert seen == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)} - {(0, 0)}


def test_same_rng_state_same_masks():
    x = _unique_batch()
    a = mask_batch(x, np.random.default_rng(7))
    b = mask_batch(x, np.random.default_rng(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_arguments():
    x = _unique_batch()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="replacement"):
        mask_batch(x, rng, replacement="zeros")
    with pytest.raises(ValueError, match="fraction"):
        mask_batch(x, rng, fraction=0.5)
    with pytest.raises(ValueError, match="radius"):
        mask_batch(x, rng, radius=0)
    with pytest.raises(ValueError, match="4-D"):
        mask_batch(x[0], rng)


def test_loss_only_at_masked_pixels():
    torch.manual_seed(0)
    noisy = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, ::8, ::8] = 1
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss = masked_charbonnier(pred, noisy, mask)
    loss.backward()
    grad_off_mask = pred.grad * (1 - mask)
    assert float(grad_off_mask.abs().max()) == 0.0
    assert float(pred.grad[mask.bool().expand_as(pred)].abs().min()) > 0
    # changing unmasked predictions does not change the loss; changing a masked one does
    with torch.no_grad():
        other = pred.detach().clone()
        other[:, :, 1::8, 1::8] += 5.0
        assert torch.isclose(masked_charbonnier(other, noisy, mask), loss.detach())
        other[:, :, ::8, ::8] += 0.5
        assert not torch.isclose(masked_charbonnier(other, noisy, mask), loss.detach())
    # a perfect prediction at the masked pixels scores eps, whatever the rest is
    exact = torch.where(mask.bool().expand_as(noisy), noisy, noisy + 1)
    assert abs(float(masked_charbonnier(exact, noisy, mask)) - 1e-3) < 1e-7


def test_blind_spot_loss_sums_stages():
    noisy = torch.rand(1, 1, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 3, 4] = 1
    a, b = torch.rand_like(noisy), torch.rand_like(noisy)
    total = blind_spot_loss([a, b], noisy, mask)
    assert torch.isclose(total, masked_charbonnier(a, noisy, mask)
                         + masked_charbonnier(b, noisy, mask))
    with pytest.raises(ValueError, match="no pixel"):
        masked_charbonnier(a, noisy, torch.zeros_like(mask))
    with pytest.raises(TypeError):
        blind_spot_loss(a, noisy, mask)


@pytest.mark.parametrize("mask,span,shape", [("horizontal", 2, (1, 5)), ("vertical", 3, (7, 1)),
                                             ("square", 2, (5, 5))])
def test_structure_offsets(mask, span, shape):
    offsets = structure_offsets(mask, span)
    assert tuple(offsets[0]) == (0, 0)  # the centre first
    assert len({tuple(o) for o in offsets}) == len(offsets) == shape[0] * shape[1]
    assert np.ptp(offsets[:, 0]) + 1 == shape[0] and np.ptp(offsets[:, 1]) + 1 == shape[1]
    assert structure_offsets("pixel", span).tolist() == [[0, 0]]


@pytest.mark.parametrize("mask", ["horizontal", "vertical", "square"])
def test_structured_mask_hides_the_correlated_neighbours(mask):
    span = 2
    x = _unique_batch()
    masked, loss_mask = mask_batch(x, np.random.default_rng(5), fraction=0.015, mask=mask,
                                   span=span)
    offsets = structure_offsets(mask, span)
    b, ys, xs = torch.nonzero(loss_mask[:, 0] > 0, as_tuple=True)
    assert len(b) > 0
    hidden = torch.zeros_like(loss_mask[:, 0], dtype=torch.bool)
    for i, y, xx in zip(b.tolist(), ys.tolist(), xs.tolist()):
        for dy, dx in offsets:
            if 0 <= y + dy < 64 and 0 <= xx + dx < 64:
                hidden[i, y + dy, xx + dx] = True
                value = masked[i, :, y + dy, xx + dx]
                # the value of another pixel of the same patch, all channels from one pixel,
                # farther than 2 * span from this centre: none of the centre's neighbours
                source = torch.nonzero(x[i, 0] == value[0])
                assert len(source) == 1
                sy, sx = source[0].tolist()
                assert max(abs(sy - y), abs(sx - xx)) > 2 * span
                assert torch.equal(value, x[i, :, sy, sx])
    # every pixel outside the structures is untouched; inside, none keeps its own value
    keep = ~hidden.unsqueeze(1).expand_as(x)
    assert torch.equal(masked[keep], x[keep])
    assert not (masked[~keep] == x[~keep]).any()
    # the loss counts at the centres only; at most about MAX_HIDDEN of the patch is hidden
    assert float(loss_mask.sum()) == len(b) < float(hidden.sum())
    assert float(hidden.float().mean()) <= MAX_HIDDEN * 1.1


def test_square_masks_draw_fewer_positions():
    x = _unique_batch()
    _, pixel = mask_batch(x, np.random.default_rng(0), fraction=0.015)
    _, square = mask_batch(x, np.random.default_rng(0), fraction=0.015, mask="square", span=3)
    assert float(square.sum()) < 0.5 * float(pixel.sum())


def test_structured_mask_arguments():
    x = _unique_batch(size=16)
    with pytest.raises(ValueError, match="mask must be one of"):
        mask_batch(x, np.random.default_rng(0), mask="diagonal")
    with pytest.raises(ValueError, match="span"):
        mask_batch(x, np.random.default_rng(0), mask="square", span=0)
    with pytest.raises(ValueError, match="too small"):
        mask_batch(x, np.random.default_rng(0), mask="horizontal", span=3)


def test_squared_error_distance_seeks_the_mean_of_skewed_noise():
    # targets 0, 0, 0, 3 at one masked pixel: the mean is 0.75, the median 0
    noisy = torch.tensor([0.0, 0.0, 0.0, 3.0]).reshape(4, 1, 1, 1).expand(4, 1, 4, 4).clone()
    mask = torch.zeros(4, 1, 4, 4)
    mask[:, :, 1, 2] = 1

    def best(distance):
        pred = torch.zeros(1, 1, 4, 4, requires_grad=True)
        optimiser = torch.optim.SGD([pred], lr=0.05)
        for _ in range(400):
            optimiser.zero_grad()
            blind_spot_loss([pred.expand(4, 1, 4, 4)], noisy, mask, distance=distance).backward()
            optimiser.step()
        return float(pred.detach()[0, 0, 1, 2])

    assert abs(best("mse") - 0.75) < 0.02
    assert abs(best("charbonnier")) < 0.1
    diff = torch.zeros(4, 1, 4, 4)
    assert float(masked_charbonnier(diff, noisy, mask, distance="mse")) == pytest.approx(
        9 / 4)
    with pytest.raises(ValueError, match="distance"):
        masked_charbonnier(diff, noisy, mask, distance="l1")

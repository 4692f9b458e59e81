"""Impulses (hot pixels) take the network output after the automatic strength's blend."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mprnet.engine.impulses import (
    IMPULSE_COLUMNS,
    impulse_model,
    impulses,
    neighbour_median,
    replace_impulses,
)


def _plane_with_hot_pixels(seed=0, size=64, sd=0.01):
    rng = np.random.default_rng(seed)
    x = 0.3 + rng.normal(0, sd, (1, size, size, 1))
    hot = (np.zeros(5, int), rng.integers(1, size - 1, 5), rng.integers(1, size - 1, 5),
           np.zeros(5, int))
    x[hot] += 0.5
    output = np.full_like(x, 0.3)  # a network that removed noise and hot pixels
    return x, output, hot


def test_hot_pixels_take_the_network_output_and_nothing_else_changes():
    x, output, hot = _plane_with_hot_pixels()
    blended = x + 0.4 * (output - x)  # a weight of 0.4 keeps 60 % of every hot pixel
    camera = np.array([[1e-4, 0.01**2 - 0.3e-4]])  # Poisson-Gaussian: 0.01**2 at 0.3
    model = impulse_model(x[0], camera, np.zeros((1, 2)))
    assert model.shape == (IMPULSE_COLUMNS,)
    result = replace_impulses(x, blended, output, model[None])
    np.testing.assert_array_equal(result[hot], output[hot].astype(np.float32))
    others = np.ones(x.shape, bool)
    others[hot] = False
    np.testing.assert_array_equal(result[others], blended[others].astype(np.float32))
    # a plane without a model (too small to measure) keeps its blend, and so does one with
    # Gaussian noise (a photograph: an isolated bright pixel is more often detail)
    for rows in (np.full((1, IMPULSE_COLUMNS), np.nan),
                 impulse_model(x[0], np.array([[0.0, 0.01**2]]), np.zeros((1, 2)))[None]):
        kept = replace_impulses(x, blended, output, rows)
        np.testing.assert_array_equal(kept, blended.astype(np.float32))
    # a rising envelope is a camera's noise too
    enveloped = impulse_model(x[0], np.array([[0.0, 0.01**2]]), camera)
    np.testing.assert_array_equal(replace_impulses(x, blended, output, enveloped[None])[hot],
                                  output[hot].astype(np.float32))


def test_a_noise_level_given_too_low_does_not_make_noise_impulses():
    x, output, hot = _plane_with_hot_pixels(sd=0.03)
    too_low = impulse_model(x[0], np.array([[1e-9, 1e-8]]), np.zeros((1, 2)))
    found = replace_impulses(x, x, output, too_low[None]) != x.astype(np.float32)
    assert found[hot].all() and found.sum() <= len(hot[0]) + 2  # the robust spread rules


def test_whole_plane_equals_the_probe_windows_rule():
    # replace_impulses over a plane finds what impulses() finds with the same variance
    x, output, _ = _plane_with_hot_pixels(seed=3)
    variance = np.full(x.shape[1:], 0.01**2)  # output 0.3 everywhere: 1e-4 * 0.3 + 0.7e-4
    model = impulse_model(x[0], np.array([[1e-4, 0.7e-4]]), np.zeros((1, 2)))
    replaced = replace_impulses(x, x, output, model[None]) != x.astype(np.float32)
    np.testing.assert_array_equal(replaced[0], impulses(x[0], output[0], variance))


def test_channels_share_the_largest_model():
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 0.02, (40, 40, 3))
    lines = np.array([[0.1, 0.001], [0.3, -0.002], [0.2, 0.004]])
    envelopes = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    a1, b1, a2, b2, robust = impulse_model(x, lines, envelopes)
    assert (a1, b1, a2, b2) == (0.3, 0.004, 0.5, 0.0)
    assert robust == pytest.approx(np.max(np.var(x - neighbour_median(x), axis=(0, 1))),
                                   rel=0.3)


def test_defaults_remove_the_hot_pixels_the_strength_would_keep():
    # sCMOS at 3000 photons on a dark sparse field: the strength keeps part of the input
    # (the network smooths bright structure a little), and would keep part of every hot pixel
    from napari_mprnet import restore
    from napari_mprnet.training import cameras, microscopy

    rng = np.random.default_rng(np.random.SeedSequence([30, 83]))
    clean = microscopy.clean_field("dark_sparse", 128, rng)
    acq = cameras.acquire(clean, "scmos", 3000.0, 16, rng)
    assert acq.hot.any()
    auto = restore(acq.noisy, device="cpu")
    network = restore(acq.noisy, device="cpu", strength=1.0)
    half = restore(acq.noisy, device="cpu", strength=0.5)
    np.testing.assert_array_equal(auto[acq.hot], network[acq.hot])
    assert np.all(half[acq.hot] != network[acq.hot])  # a fixed strength is the user's blend
    assert acq.psnr(auto) > acq.psnr(acq.noisy) + 0.5

"""Layers proposed by meaning: degraded input, clean target, never our own results."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_mprnet._widgets.layer_roles import (
    is_result_layer,
    looks_like_target,
    propose_input,
    propose_pair,
    run_names,
)


def layer(name, visible=True, shape=(8, 8), result=False):
    metadata = {"napari_mprnet": {"stage": "final"}} if result else {}
    return SimpleNamespace(name=name, visible=visible, data=np.zeros(shape), metadata=metadata)


@pytest.mark.parametrize("name", ["clean cells", "GT", "cells_gt", "ground truth 1",
                                  "Ground-Truth", "target", "reference", "sharp camera"])
def test_names_that_mean_target(name):
    assert looks_like_target(layer(name))


@pytest.mark.parametrize("name", ["noisy cells", "gtx scan", "cleaner", "targets2", "image"])
def test_names_that_do_not(name):
    assert not looks_like_target(layer(name))


def test_plugin_sample_order_gives_noisy_input_clean_target():
    clean, noisy = layer("clean cells", visible=False), layer("noisy cells")
    assert propose_pair([clean, noisy]) == (noisy, clean)
    assert propose_pair([noisy, clean]) == (noisy, clean)


def test_hidden_unnamed_reference_is_the_target():
    ref, raw = layer("img2", visible=False), layer("img1")
    assert propose_pair([ref, raw]) == (raw, ref)


def test_target_with_the_input_shape_and_never_one_layer_twice():
    raw = layer("raw", shape=(16, 16))
    wrong, right = layer("gt small", shape=(4, 4)), layer("gt", shape=(16, 16))
    assert propose_pair([wrong, right, raw]) == (raw, right)
    only = layer("only")
    assert propose_pair([only]) == (only, None)
    assert propose_pair([only], only, only) == (only, None)
    assert propose_pair([]) == (None, None)


def test_user_choices_are_kept():
    clean, noisy, other = layer("clean"), layer("noisy"), layer("other")
    assert propose_pair([clean, noisy, other], other, noisy) == (other, noisy)
    assert propose_pair([clean, noisy, other], other) == (other, clean)


def test_results_are_not_proposed_as_input():
    noisy, out = layer("noisy"), layer("noisy (denoised)", result=True)
    assert is_result_layer(out) and not is_result_layer(noisy)
    assert propose_input([noisy, out], active=out) is noisy
    assert propose_input([noisy, out], active=noisy) is noisy
    assert propose_input([layer("clean", visible=False), noisy, out]) is noisy
    assert propose_pair([noisy, out, layer("clean")])[0] is noisy


def test_results_are_not_proposed_as_target():
    noisy = layer("noisy")
    out = layer("noisy (denoised)", result=True)
    # after a self-supervised run, its own output is no clean reference: no target proposed
    assert propose_pair([noisy, out], noisy) == (noisy, None)
    assert propose_pair([noisy, out]) == (noisy, None)
    hidden_out = layer("noisy (denoised)", visible=False, result=True)
    named_out = layer("clean (denoised)", result=True)
    assert propose_pair([noisy, hidden_out, named_out], noisy) == (noisy, None)
    # a real clean layer is still found beside them; the user's own pick of a result is kept
    clean = layer("clean cells", visible=False)
    assert propose_pair([clean, noisy, out], noisy) == (noisy, clean)
    assert propose_pair([noisy, out], noisy, out) == (noisy, out)


def test_run_names_number_every_layer_of_a_run():
    names = ["a (denoised)", "a (denoised, stage 2)", "a (denoised, stage 1)"]
    assert run_names(names, {"a"}) == names
    assert run_names(names, {"a", "a (denoised)"}) == [f"{n} #2" for n in names]
    taken = {"a (denoised)", "a (denoised) #2", "a (denoised, stage 1) #3"}
    assert run_names(names, taken) == [f"{n} #4" for n in names]

"""Which Image layer is what: degraded input, clean target, or one of our own results.

The widgets propose layers by meaning, not by position: a hidden layer or one whose name says
clean / target / GT / ground truth / reference is a target, a layer this plugin produced is
never proposed as an input nor as a clean target (training towards the plugin's own output
would teach the network to imitate itself; the user may still pick one), and one layer is
never proposed for two roles.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["is_result_layer", "looks_like_target", "propose_input", "propose_pair",
           "run_names"]

#: Words in a layer name that mark a clean reference (matched as whole words, any case).
_TARGET_WORDS = re.compile(
    r"(?<![a-z0-9])(clean|target|gt|ground[\s_-]*truth|groundtruth|reference|ref|sharp)"
    r"(?![a-z0-9])", re.IGNORECASE
)


def is_result_layer(layer: Any) -> bool:
    """Whether napari-mprnet produced ``layer`` (a restored image or one of its stages)."""
    return "napari_mprnet" in (getattr(layer, "metadata", None) or {})


def _named_as_target(layer: Any) -> bool:
    return bool(_TARGET_WORDS.search(str(getattr(layer, "name", ""))))


def looks_like_target(layer: Any) -> bool:
    """A clean reference: named so (clean, target, GT, ground truth...) or hidden."""
    return _named_as_target(layer) or not bool(getattr(layer, "visible", True))


def propose_input(layers: Sequence[Any], active: Any = None) -> Any:
    """The layer to restore: the active one unless it is one of our results, else the topmost
    degraded-looking layer, else the topmost layer that is not a result; None if none."""
    if active is not None and active in layers and not is_result_layer(active):
        return active
    originals = [layer for layer in layers if not is_result_layer(layer)]
    degraded = [layer for layer in originals if not looks_like_target(layer)]
    for group in (degraded, originals):
        if group:
            return group[-1]
    return None


def _shape(layer: Any) -> tuple:
    return tuple(getattr(getattr(layer, "data", None), "shape", ()))


def propose_pair(layers: Sequence[Any], current_input: Any = None,
                 current_target: Any = None) -> tuple[Any, Any]:
    """(input, target) for fine-tuning: two different layers (or None where there are too few).

    Choices still present are kept (the user's word wins); otherwise the target is the best
    clean-looking layer (by name, then hidden) and the input a degraded-looking layer of the
    same shape. None of this plugin's results is proposed as the target.
    """
    layers = list(layers)
    inp = current_input if current_input in layers else None
    tgt = current_target if current_target in layers else None
    if inp is not None and inp is tgt:
        tgt = None
    if tgt is None:
        sources = [layer for layer in layers if layer is not inp and not is_result_layer(layer)]
        named = [layer for layer in sources if _named_as_target(layer)]
        hidden = [layer for layer in sources if looks_like_target(layer)]
        candidates = named + [layer for layer in hidden if layer not in named]
        if inp is not None:  # one that can pair with the chosen input
            pairable = [c for c in candidates if _shape(c) == _shape(inp)]
        else:  # one that some degraded-looking layer can pair with
            inputs = [layer for layer in layers if not looks_like_target(layer)]
            pairable = [c for c in candidates
                        if any(_shape(i) == _shape(c) for i in inputs if i is not c)]
        candidates = pairable or candidates
        tgt = candidates[0] if candidates else None
    if inp is None:
        others = [layer for layer in layers if layer is not tgt]
        degraded = [layer for layer in others if not looks_like_target(layer)]
        originals = [layer for layer in degraded if not is_result_layer(layer)]
        for group in (originals, degraded, others):
            same = [layer for layer in group if tgt is None or _shape(layer) == _shape(tgt)]
            if same or group:
                inp = (same or group)[-1]
                break
    if tgt is None:  # nothing looks clean: any other original, preferring the same shape
        others = [layer for layer in layers if layer is not inp and not is_result_layer(layer)]
        same = [layer for layer in others if _shape(layer) == _shape(inp)]
        tgt = (same or others or [None])[0]
    return inp, tgt


def run_names(names: Sequence[str], taken: set[str]) -> list[str]:
    """``names`` of one run's layers, numbered together when any is taken already.

    ``["a (denoised)", "a (denoised, stage 1)"]`` becomes ``["a (denoised) #2",
    "a (denoised, stage 1) #2"]`` (then #3...) so that a run's layers stay recognisable as one.
    """
    names = list(names)
    if not any(name in taken for name in names):
        return names
    run = 2
    while any(f"{name} #{run}" in taken for name in names):
        run += 1
    return [f"{name} #{run}" for name in names]

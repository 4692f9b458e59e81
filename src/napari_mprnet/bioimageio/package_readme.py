"""The README.md of a bioimage.io package: what the model is, its input and output, how it
was trained, its test tensors and citation."""

from __future__ import annotations

from ..model.arch import MPRNet
from .content import (
    ARCH_CALLABLE,
    ARCH_FILE,
    MODEL_FILE,
    PAPER_TEXT,
    PAPER_URL,
    SAMPLE_INPUT_FILE,
    SAMPLE_OUTPUT_FILE,
    TEST_INPUT_FILE,
    TEST_OUTPUT_FILE,
    WEIGHTS_FILE,
    training_method,
)
from .intensity import IntensityMapping

__all__ = ["readme"]


def readme(name: str, description: str, model: MPRNet, mapping: IntensityMapping,
           test_shape: tuple[int, ...], halo: int, min_size: int | None = None,
           tile: int = 0) -> str:
    """The package's README.md (no local paths: metadata is cleaned by the caller)."""
    meta = model.metadata or {}
    prov = meta.get("provenance") or {}
    config = model.config.to_dict()
    channels = test_shape[1]
    grey = channels == 1 and config["in_c"] == 3
    lines = [
        f"# {name}", "", description, "", "## What it is", "",
        (f"An MPRNet (multi-stage progressive restoration network) for "
         f"**{meta.get('task', '?')}** exported by napari-mprnet as a bioimage.io model. The "
         f"architecture is in `{ARCH_FILE}` (class `{ARCH_CALLABLE}`: the network with only "
         f"the final image as output), the weights in `{WEIGHTS_FILE}` (a PyTorch state dict) "
         f"and `{MODEL_FILE}` (the same model as napari-mprnet saves it, with its metadata)."),
        "",
        "Configuration: " + ", ".join(f"{k}={v}" for k, v in config.items()) + ".", "",
        "## Input and output", "",
        (f"One image tensor `(batch, channel, y, x)` with {channels} channel(s) of "
         f"{mapping.dtype} data (uint8, uint16 and float32 images are cast to it without "
         f"loss); y and x must be multiples of {MPRNet.size_multiple}. "
         + ("The grey plane goes through the 3-channel network as three copies and the output "
            "channels are averaged, as napari-mprnet does. " if grey else "")
         + "The output is float32, shaped like the input."), "",
        mapping.note, "",
        (f"The output axes declare a halo of {halo} pixels and the input a smallest side of "
         f"{test_shape[-1] if min_size is None else min_size} pixels: tiled (blockwise) "
         "prediction overlaps the blocks by the halo and never cuts smaller blocks. "
         + ("The network runs without MPRNet's patch split (stages 1 and 2 see the whole "
            "input instead of its quarters and halves), so a block is restored like the same "
            "pixels inside the whole image: blockwise prediction agrees with whole-image "
            "prediction to a fraction of a percent of the output range at the worst pixel "
            "(napari-mprnet's measurement with its bundled denoiser, see its "
            "docs/bioimageio.md). "
            + (f"The network restores its input on a grid of {tile}-pixel tiles starting "
               f"inside the halo, each with {halo} pixels of context (this bounds the memory "
               "of whole-image prediction). " if tile else
               "Whole-image prediction gives napari-mprnet's result computed in one piece.")
            if halo else "Whole-image prediction gives napari-mprnet's result."))
        + (" This is the network's own output, napari-mprnet's `restore(strength=1.0)`; for "
           "denoising, napari-mprnet's default `strength=\"auto\"` may also blend in some of "
           "the input on nearly clean images, which this package does not do."
           if meta.get("task") == "denoise" else ""), "",
        "## How it was trained", "",
    ]
    if meta.get("summary"):
        lines += [str(meta["summary"]), ""]
    method = training_method(meta)
    if method in ("noise2void", "noise2noise"):
        lines += [(f"Fine-tuned **self-supervised** ({method}): on noisy images alone, "
                   "without clean targets."), ""]
    if prov:
        lines += ["| | |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in prov.items() if value is not None]
        lines.append("")
    else:
        lines += ["No training record is stored with this model.", ""]
    if meta.get("trained") is False:
        lines += ["**Warning:** this model is marked as untrained (placeholder weights).", ""]
    lines += [
        "## Test tensors", "",
        (f"`{TEST_INPUT_FILE}` (shape {tuple(test_shape)}) and `{TEST_OUTPUT_FILE}`: the "
         "output of this package's processing and network on the test input as bioimage.io's "
         "test feeds it (unpadded: the outer halo pixels are context only). The cover shows "
         "the test input (left) and output (right)."), "",
        "## Validation", "",
        ("Validated at export with bioimageio.spec (format 0.5); the test output was computed "
         "by this package's own source and weights, and `bioimageio test` reproduces it. "
         f"`{SAMPLE_INPUT_FILE}` and `{SAMPLE_OUTPUT_FILE}` show the test input and what "
         "whole-image prediction gives for it. napari-mprnet's measurements with "
         "bioimageio.core on its default packages (its docs/bioimageio.md): whole-image "
         "prediction equals `restore(strength=1.0)` to float32 rounding for uint8, uint16 "
         "and float32 images; blockwise prediction stays within a fraction of a percent of "
         "the range."), "",
        "## Citation", "", PAPER_TEXT + f" {PAPER_URL}", "",
        ("The network code is napari-mprnet's own implementation, written from the paper; it "
         "is compatible with the released MPRNet checkpoints through parameter names only."), "",
    ]
    return "\n".join(lines)

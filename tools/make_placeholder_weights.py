"""Write clearly labelled, UNTRAINED placeholder weights for the bundled registry.

They exist only so that the engine, the plugin and the command line work end to end before
trained default models are bundled; they do not restore images. Run from the repo root:

    python tools/make_placeholder_weights.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from napari_mprnet.model import MPRNet, MPRNetConfig
from napari_mprnet.weights import save_model

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_mprnet" / "pretrained"
CONFIG = MPRNetConfig(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=2)


def main() -> None:
    registry_file = OUT / "registry.json"
    registry = json.loads(registry_file.read_text()) if registry_file.exists() else {}
    for seed, task in enumerate(("denoise", "deblur", "derain")):
        if registry.get(task, {}).get("trained"):
            continue  # never replace trained weights with a placeholder
        torch.manual_seed(seed)
        model = MPRNet(CONFIG)
        path = OUT / f"{task}.safetensors"
        summary = f"UNTRAINED placeholder for {task}: random weights, does not restore images"
        save_model(
            model, path, {"task": task, "trained": False, "summary": summary,
                          "normalization": None, "provenance": {"seed": seed}},
            dtype=torch.float16,
        )
        registry[task] = {
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "trained": False,
            "summary": summary,
        }
    registry_file.write_text(json.dumps(registry, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

"""What the bioimage.io test modules share: the tiny network, its per-image-percentile
package, and readers of a package's rdf.yaml and arrays."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import torch
import yaml

from napari_mprnet.bioimageio import export_bioimageio
from napari_mprnet.model import MPRNet, MPRNetConfig

TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
PERCENTILE = {"mode": "percentile", "low": 3.0, "high": 900.0, "percentiles": [0.5, 99.8]}


def tiny(normalization=None, seed: int = 0) -> MPRNet:
    """The tiny network with a denoiser's metadata (``normalization`` as stored)."""
    torch.manual_seed(seed)
    model = MPRNet(TINY).eval()
    model.metadata = {
        "task": "denoise", "trained": True, "summary": "tiny test model",
        "normalization": normalization,
        "provenance": {"finetuned": True, "steps": 7, "best_val_psnr": 31.5},
    }
    return model


def percentile_package(path):
    """The tiny network trained with per-image percentiles, exported to ``path``."""
    return export_bioimageio(tiny(PERCENTILE), path, name="Tiny denoiser",
                             description="A tiny MPRNet for tests",
                             authors=["Ada", {"name": "Bob"}])


def read_rdf(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.load(io.BytesIO(archive.read(name)), allow_pickle=False)

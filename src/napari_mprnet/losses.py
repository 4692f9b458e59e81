"""The paper's training losses, public: ``napari_mprnet.losses.charbonnier_loss`` etc.

Re-exported from :mod:`napari_mprnet.training.losses`.
"""

from __future__ import annotations

from .training.losses import GAUSS_TAPS, charbonnier_loss, edge_loss, laplacian, mprnet_loss

__all__ = ["GAUSS_TAPS", "charbonnier_loss", "edge_loss", "laplacian", "mprnet_loss"]

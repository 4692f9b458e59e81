"""Restoration engine: axes, normalisation, tiling, running and blending."""

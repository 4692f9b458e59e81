"""Denoising pairs from generated microscopy acquisitions, in the network's input domain.

The generated microscopy families of :mod:`napari_mprnet.training.microscopy` (clean fields
with exact references, stored by a simulated camera as 8-, 12- or 16-bit counts with an
offset and quantisation) are what a user hands to ``restore()``. A network learns from them
only if it sees them the way ``restore()`` shows images to it: the stored noisy counts go
through the very intensity map ``restore()`` would choose for them (uint8 divided by 255,
other integers percentile-normalised, :func:`napari_mprnet.engine.pipeline.normalization_for`)
and the clean reference, in the same image units, goes through **the same map** (not one
fitted on itself), so the target holds the camera offset, the true brightness of peaks above
the 99.8th percentile and every bit of texture exactly where the network must put them.

Photon counts are drawn log-uniformly over ``photons`` and, half of the time, over the high
range ``high_photons`` only: at high counts the noise is small next to real texture
(chromatin, thin filaments, bright peaks), which a blind denoiser must then keep. Cameras are
those whose noise the bundled denoiser models (photon counting, Poisson + Gaussian read
noise); EMCCD excess noise, hot pixels and sCMOS pixel maps are left to self-supervised
fine-tuning (docs/self_supervised.md).

Every random choice comes from a stream keyed by ``(seed, split, GENERATED_KEY)``: neither
the bench's fixed cases nor the train/validation splits share one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..engine.normalize import DEFAULT_PERCENTILES
from ..engine.pipeline import normalization_for

__all__ = ["GENERATED_KEY", "TRAINING_CAMERAS", "AcquisitionPairs", "network_pair"]

#: Key of the generated streams (the bench's cases use their own fixed seeds).
GENERATED_KEY = 0x6E_7A_31
#: Cameras whose noise the bundled denoiser is trained for.
TRAINING_CAMERAS = ("photon_counting", "read_noise")
_SPLITS = {"train": 0, "val": 1}


def network_pair(acquisition) -> tuple[np.ndarray, np.ndarray]:
    """The (noisy, clean) float32 planes a network sees for ``acquisition``.

    ``acquisition.noisy`` (stored counts) is mapped as ``restore()`` maps an image by default
    and ``acquisition.clean`` (exact expected counts, same units) by that same map.
    """
    norm = normalization_for(np.asarray(acquisition.noisy), "auto", DEFAULT_PERCENTILES,
                             model=None)
    return norm.apply(acquisition.noisy), norm.apply(np.asarray(acquisition.clean))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = np.log(bounds[0]), np.log(bounds[1])
    return float(np.exp(rng.uniform(low, high)))


@dataclass
class AcquisitionPairs:
    """An endless, reproducible stream of generated (noisy, clean) training crops.

    Parameters
    ----------
    split : {"train", "val"}
        Keys the random stream (the splits never share an acquisition).
    size : int
        Side of the returned square crops.
    seed : int
        Seed of the stream.
    field_size : int
        Side of each generated field; the intensity map is fitted on the whole field (as
        ``restore()`` fits it on a whole image) before a crop of ``size`` is cut.
    photons : (float, float)
        Photons at the peak, log-uniform, for half of the acquisitions.
    high_photons : (float, float)
        The range of the other half (high counts, where texture must survive).
    cameras : sequence of str
        Camera models drawn uniformly.
    bits : sequence of int
        Stored bit depths drawn uniformly.
    families : sequence of str, optional
        Clean-field families (default: all of the generator's).
    """

    split: str = "train"
    size: int = 128
    seed: int = 0
    field_size: int = 256
    photons: tuple[float, float] = (3.0, 3000.0)
    high_photons: tuple[float, float] = (300.0, 5000.0)
    cameras: Sequence[str] = TRAINING_CAMERAS
    bits: Sequence[int] = (8, 12, 16)
    families: Sequence[str] | None = None
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from . import microscopy

        if self.split not in _SPLITS:
            raise ValueError(f"split must be 'train' or 'val', got {self.split!r}")
        if not 16 <= self.size <= self.field_size:
            raise ValueError(f"size must be in [16, field_size={self.field_size}], "
                             f"got {self.size!r}")
        for name in ("photons", "high_photons"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, "
                                 f"got {getattr(self, name)!r}")
        unknown = set(self.cameras) - set(microscopy.CAMERAS)
        if unknown or not self.cameras:
            raise ValueError(f"cameras must be among {microscopy.CAMERAS}, got "
                             f"{tuple(self.cameras)!r}")
        self.families = tuple(self.families or microscopy.FAMILIES)
        unknown = set(self.families) - set(microscopy.FAMILIES)
        if unknown:
            raise ValueError(f"families must be among {microscopy.FAMILIES}, got "
                             f"{sorted(unknown)}")
        self._rng = np.random.default_rng(
            np.random.SeedSequence([int(self.seed), _SPLITS[self.split], GENERATED_KEY]))

    def describe(self) -> dict:
        """What the provenance records about the stream."""
        return {"generator": "napari_mprnet.training.microscopy", "split": self.split,
                "seed": self.seed, "key": GENERATED_KEY, "field_size": self.field_size,
                "photons": list(self.photons), "high_photons": list(self.high_photons),
                "high_share": 0.5, "cameras": list(self.cameras), "bits": list(self.bits),
                "families": list(self.families),
                "normalisation": "restore()'s default map of the noisy counts, applied to "
                                 "noisy and clean alike"}

    def acquisition(self):
        """One generated acquisition (whole field) from the stream."""
        from . import microscopy

        rng = self._rng
        family = str(rng.choice(self.families))
        camera = str(rng.choice(list(self.cameras)))
        bits = int(rng.choice(list(self.bits)))
        photons = _log_uniform(rng, self.high_photons if rng.random() < 0.5 else self.photons)
        clean = microscopy.clean_field(family, (self.field_size, self.field_size), rng)
        # as the bench images them: the brightest spots of "bright_spots" saturate
        full_scale = microscopy.BRIGHT_FULL_SCALE if family == "bright_spots" else None
        return microscopy.acquire(clean, camera, photons, bits, rng, full_scale=full_scale)

    def pairs(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``n`` crops as two lists of (size, size) float32 planes: noisy, clean."""
        noisy_out, clean_out = [], []
        for _ in range(int(n)):
            noisy, clean = network_pair(self.acquisition())
            top, left = self._rng.integers(0, self.field_size - self.size + 1, 2)
            window = np.s_[top:top + self.size, left:left + self.size]
            noisy_out.append(np.ascontiguousarray(noisy[window], dtype=np.float32))
            clean_out.append(np.ascontiguousarray(clean[window], dtype=np.float32))
        return noisy_out, clean_out

"""Camera noise models for generated microscopy: what a camera stores for a clean field.

Image units
-----------
Everything is in the stored image's own units (ADU, the integer values of the file). A pixel
of relative intensity ``f`` (peak about 1) collects on average ``photons * f``
photo-electrons; the camera stores

    noisy = clip(round(offset + gain * (electrons + read)), 0, 2**bits - 1)

with ``electrons`` drawn from the camera's law around ``photons * f`` and ``read`` Gaussian
read noise. :attr:`Acquisition.clean` is the exact expected value of the signal,
``offset + gain * photons * f`` per pixel (per-pixel maps for sCMOS), before quantisation,
clipped to the stored range; ``gain`` is in ADU per photo-electron, ``offset`` in ADU and
``read_sd`` in ADU (``gain`` times the read noise in electrons). Away from saturation the
variance of ``noisy`` about ``clean`` is

    var = excess * gain * (clean - offset) + read_sd**2 + 1/12

(``1/12``: rounding to integers), so BM3D after a generalised Anscombe transform, or
``restore(noise=...)``, can be given the truth through :meth:`Acquisition.noise_law`.

Cameras
-------
photon_counting
    Poisson photo-electrons, read noise 0.1-0.5 e-, gain 1 ADU/e- (counts) when it fits.
read_noise
    Poisson plus Gaussian read noise of 1-6 e- (CCD / CMOS), gain 0.5-2 ADU/e-.
emccd
    Electron-multiplying CCD: each photo-electron is multiplied by a gamma-distributed gain
    (mean 1 in photo-electron units), doubling the shot-noise variance (``excess`` 2), then
    read noise of 0.2-1.5 e- (referred to the input); gain 10-40 ADU/e-.
scmos
    Per-pixel gain (1.5 % spread), offset (about 1 ADU spread) and read noise (log-normal
    around 1-2 e-) maps, and a few hot pixels (0.03 % of the pixels, extra dark counts of
    0.2-2 times the peak signal). :attr:`Acquisition.clean` holds the maps but not the hot
    pixels: they are defects, flagged in :attr:`Acquisition.hot`.

The gain is lowered when the peak would not fit the stored range (``full_scale``: the
relative intensity that reaches the top; given explicitly, the gain is set so that it does,
which saturates everything brighter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BIT_DEPTHS", "CAMERAS", "Acquisition", "acquire"]

CAMERAS = ("photon_counting", "read_noise", "emccd", "scmos")
BIT_DEPTHS = (8, 12, 16)
#: Relative intensity that reaches the top of the stored range unless told otherwise.
DEFAULT_FULL_SCALE = 1.15
_HOT_FRACTION = 3e-4


@dataclass(frozen=True, eq=False)
class Acquisition:
    """A generated camera image and the truth about it (all in the stored image's units).

    Attributes
    ----------
    noisy : numpy.ndarray
        The stored image: uint8 for 8 bits, uint16 for 12 and 16 bits.
    clean : numpy.ndarray
        float64, the exact expected signal of every pixel (see the module notes).
    camera, photons, bits
        The camera law, photo-electrons at relative intensity 1, the bit depth.
    gain, offset, read_sd : float
        ADU per photo-electron, ADU at zero signal, read noise sd in ADU (nominal values; the
        per-pixel truth is in the maps).
    excess : float
        Variance factor of the shot noise: 2 for EMCCD, 1 otherwise.
    gain_map, offset_map, read_sd_map : numpy.ndarray
        Per-pixel truth (constant but for sCMOS).
    hot : numpy.ndarray
        bool mask of hot pixels (sCMOS; none elsewhere).
    """

    noisy: np.ndarray
    clean: np.ndarray
    camera: str
    photons: float
    bits: int
    gain: float
    offset: float
    read_sd: float
    excess: float
    gain_map: np.ndarray
    offset_map: np.ndarray
    read_sd_map: np.ndarray
    hot: np.ndarray

    @property
    def white_level(self) -> int:
        """The largest value the stored image can hold."""
        return 2**self.bits - 1

    def variance(self) -> np.ndarray:
        """Expected variance of ``noisy`` about ``clean`` per pixel (away from saturation
        and hot pixels)."""
        signal = np.maximum(self.clean - self.offset_map, 0.0)
        return self.excess * self.gain_map * signal + self.read_sd_map**2 + 1.0 / 12.0

    def psnr(self, image: np.ndarray) -> float:
        """PSNR (dB) of an estimate of :attr:`clean` in the same units, over all pixels, with
        the clean image's own range ``clean.max() - clean.min()`` as the data range."""
        error = np.asarray(image, np.float64) - self.clean
        if error.shape != self.clean.shape:
            raise ValueError(f"image shape {error.shape} is not the clean {self.clean.shape}")
        data_range = float(self.clean.max() - self.clean.min())
        return float(10 * np.log10(data_range**2 / max(float(np.mean(error**2)), 1e-30)))

    def noise_law(self) -> tuple[float, float]:
        """``(a, b)`` with variance ``a * I + b`` at stored intensity ``I``: the nominal
        Poisson-Gaussian law (``restore(noise=...)``'s pair; the excess factor included)."""
        a = self.excess * self.gain
        return float(a), float(self.read_sd**2 + 1.0 / 12.0 - a * self.offset)


def _check(camera: str, photons: float, bits: int) -> None:
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
    if not np.isfinite(photons) or photons <= 0:
        raise ValueError(f"photons must be a positive number, got {photons!r}")
    if bits not in BIT_DEPTHS:
        raise ValueError(f"bits must be one of {BIT_DEPTHS}, got {bits!r}")


def _camera_settings(camera: str, bits: int, rng: np.random.Generator) -> tuple:
    """Typical (gain ADU/e-, offset ADU, read noise e-) of a camera at a bit depth."""
    offset = {8: rng.integers(3, 13), 12: rng.integers(50, 201), 16: rng.integers(100, 1001)}[
        bits]
    if camera == "photon_counting":
        return 1.0, float(offset), rng.uniform(0.1, 0.5)
    if camera == "emccd":
        return rng.uniform(10.0, 40.0), float(offset), rng.uniform(0.2, 1.5)
    read = rng.uniform(1.0, 6.0) if camera == "read_noise" else rng.uniform(1.0, 2.0)
    return rng.uniform(0.5, 2.0), float(offset), read


def acquire(
    clean: np.ndarray,
    camera: str,
    photons: float,
    bits: int,
    rng: np.random.Generator,
    *,
    full_scale: float | None = None,
) -> Acquisition:
    """Image a clean relative field with a camera.

    Parameters
    ----------
    clean : numpy.ndarray
        (H, W) relative fluorescence >= 0, peak about 1
        (:func:`~napari_mprnet.training.microscopy.clean_field`).
    camera : {"photon_counting", "read_noise", "emccd", "scmos"}
    photons : float
        Photo-electrons collected at relative intensity 1 (3 to 3000 in the bench).
    bits : {8, 12, 16}
        Stored bit depth.
    rng : numpy.random.Generator
        Draws the camera's settings and the noise (the result is a function of its state).
    full_scale : float, optional
        Relative intensity that reaches the top of the stored range; given, the gain is set
        so that it does (brighter pixels saturate). Default: the camera's typical gain,
        lowered where intensity 1.15 would not fit.

    Returns
    -------
    Acquisition
    """
    _check(camera, photons, bits)
    field = np.asarray(clean, np.float64)
    if field.ndim != 2 or not np.all(np.isfinite(field)) or field.min() < 0:
        raise ValueError("clean must be a finite, non-negative 2-D array")
    gain, offset, read_e = _camera_settings(camera, bits, rng)
    white = 2**bits - 1
    fit = (white - offset) / (photons * (full_scale or DEFAULT_FULL_SCALE))
    gain = fit if full_scale is not None else min(gain, fit)
    shape = field.shape
    gain_map = np.full(shape, gain)
    offset_map = np.full(shape, offset)
    read_e_map = np.full(shape, read_e)
    hot = np.zeros(shape, bool)
    if camera == "scmos":
        gain_map = gain * (1.0 + 0.015 * rng.standard_normal(shape))
        offset_map = offset + rng.standard_normal(shape) * min(1.0, offset / 4)
        read_e_map = read_e * np.exp(0.3 * rng.standard_normal(shape))
        read_e = float(np.sqrt(np.mean(read_e_map**2)))
        count = max(2, round(_HOT_FRACTION * field.size))
        hot.flat[rng.choice(field.size, count, replace=False)] = True
    rate = field * photons
    electrons = rng.poisson(rate).astype(np.float64)
    excess = 1.0
    if camera == "emccd":
        electrons = rng.gamma(electrons, 1.0)  # shape 0 gives 0
        excess = 2.0
    if hot.any():
        dark = rng.uniform(0.2, 2.0, int(hot.sum())) * photons + 20.0
        electrons[hot] += rng.poisson(dark)
    electrons += read_e_map * rng.standard_normal(shape)
    stored = np.clip(np.rint(offset_map + gain_map * electrons), 0, white)
    return Acquisition(
        noisy=stored.astype(np.uint8 if bits == 8 else np.uint16),
        clean=np.clip(offset_map + gain_map * rate, 0.0, white),
        camera=camera, photons=float(photons), bits=int(bits), gain=float(gain),
        offset=float(offset), read_sd=float(gain * read_e), excess=excess,
        gain_map=gain_map, offset_map=offset_map, read_sd_map=gain_map * read_e_map, hot=hot,
    )

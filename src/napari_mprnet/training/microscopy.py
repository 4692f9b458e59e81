"""Generated fluorescence microscopy with exact clean references: families and bench cases.

Shared by the microscopy bench (``benchmarks/bench_microscopy.py``), the tests and training.
numpy/scipy only.

Interface
---------
:data:`FAMILIES`, :data:`CAMERAS`, :data:`PHOTON_LEVELS`, :data:`BIT_DEPTHS`
    What is generated.
:func:`clean_field` ``(family, shape, rng)``
    float32 (H, W) relative fluorescence >= 0 with its peak at exactly 1.
:func:`acquire` ``(clean, camera, photons, bits, rng)`` -> :class:`Acquisition`
    What a camera stores (``.noisy``: uint8 for 8 bits, uint16 for 12/16 bits) and the truth
    (``.clean`` float64 expected signal in the same units, ``.gain`` ADU per photo-electron,
    ``.offset`` ADU, ``.read_sd`` ADU, ``.excess`` 2 for EMCCD, per-pixel maps, ``.hot``).
    ``noisy - clean`` has variance ``excess * gain * (clean - offset) + read_sd**2 + 1/12``
    (:meth:`Acquisition.variance`; ``Acquisition.noise_law()`` gives the pair ``(a, b)`` of
    ``a * I + b`` for ``restore(noise=...)`` or a generalised Anscombe transform). The image
    unit conventions are those of :mod:`~napari_mprnet.training.cameras`.
:func:`bench_cases` ``(quick=False)`` -> list of :class:`BenchCase`
    Named cases with fixed seeds; ``case.generate()`` makes the acquisition.
:func:`random_acquisition` ``(rng, shape)`` and :func:`training_rng` ``(index, seed)``
    Training draws: ``training_rng`` streams are keyed apart from the bench's, so training
    never sees a bench case.

Families (peak 1; Gaussian PSF 0.7-1.8 px, nuclei and cytoplasm from 0.35-0.4 px: binned)
----------------------------------------------------------
puncta        sparse diffraction-limited spots over a faint haze
filaments     microtubule-like persistent random walks
nuclei        nuclei with chromatin texture, chromocentres and darker nucleoli
cytoplasm     dense cells: membranes over a reticular textured cytoplasm and vesicles
dark_sparse   a few textured objects; 80-95 % of the pixels below 5 % of the peak
bright_spots  near-saturating spots over a dim cellular background
shading       cells under uneven illumination and out-of-focus haze
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .cameras import BIT_DEPTHS, CAMERAS, Acquisition, acquire
from .procedural import _blobs, _filaments, _membranes, check_size, fluorescence

__all__ = [
    "BIT_DEPTHS", "CAMERAS", "FAMILIES", "PHOTON_LEVELS", "Acquisition", "BenchCase",
    "acquire", "bench_cases", "clean_field", "random_acquisition", "training_rng",
]

FAMILIES = ("puncta", "filaments", "nuclei", "cytoplasm", "dark_sparse", "bright_spots",
            "shading")
PHOTON_LEVELS = (3, 10, 30, 100, 300, 1000, 3000)
#: Pixels below this fraction of the peak count as dark (``dark_sparse``: 80-95 % of them).
DARK_LEVEL = 0.05
#: ``full_scale`` of bright-spot acquisitions: the brightest spots saturate.
BRIGHT_FULL_SCALE = 0.92
BENCH_SEED = 30
_BENCH_KEY, _TRAIN_KEY = 0xBE4C, 0x7A1
BENCH_SIZE, QUICK_SIZE = 128, 96


def _unit_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to [-1, 1]."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / max(float(np.abs(field).max()), 1e-12)


def _spots(shape: tuple[int, int], count: int, rng: np.random.Generator, sigma: tuple,
           amplitude: tuple, mask: np.ndarray | None = None) -> np.ndarray:
    """Sum of ``count`` Gaussian spots of peak ``amplitude`` (range), inside ``mask``."""
    out = np.zeros(shape)
    if mask is not None and mask.any():
        flat = rng.choice(np.flatnonzero(mask), count)
        centres = np.stack(np.unravel_index(flat, shape), 1) + rng.uniform(-0.5, 0.5, (count, 2))
    else:
        centres = rng.uniform(0, 1, (count, 2)) * np.array(shape)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for (cy, cx), s, a in zip(centres, rng.uniform(*sigma, count), rng.uniform(*amplitude,
                                                                              count)):
        half = int(4 * s) + 1
        y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, shape[0])
        x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, shape[1])
        if y0 < y1 and x0 < x1:
            d2 = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2
            out[y0:y1, x0:x1] += a * np.exp(-0.5 * d2 / s**2)
    return out


def _area(shape: tuple[int, int]) -> float:
    return shape[0] * shape[1] / 128**2


def _puncta(shape, rng):
    count = max(3, int(_area(shape) * rng.uniform(40, 250)))
    points = np.zeros(shape)
    ys, xs = rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)
    np.add.at(points, (ys, xs), rng.lognormal(0.0, 0.5, count))
    points = ndimage.gaussian_filter(points, rng.uniform(1.0, 1.6))
    haze = rng.uniform(0.0, 0.08) * np.clip(_unit_noise(shape, rng, 8) + 0.5, 0, None)
    return points / points.max() + haze


def _filament_field(shape, rng):
    lines = _filaments(*shape, rng).astype(np.float64)
    lines = ndimage.gaussian_filter(lines, rng.uniform(0.5, 1.0))
    haze = rng.uniform(0.0, 0.1) * np.clip(_unit_noise(shape, rng, 10) + 0.6, 0, None)
    return lines / max(lines.max(), 1e-12) + haze


def _nuclei(shape, rng):
    count = max(2, int(_area(shape) * rng.uniform(3, 9)))
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    # chromatin is granular below the resolution: the PSF decides how much of it is seen
    # (undersampled or binned fields keep pixel-scale texture)
    chromatin = (0.6 + 0.45 * _unit_noise(shape, rng, 0.5) + 0.25 * _unit_noise(shape, rng, 1.0)
                 + 0.2 * _unit_noise(shape, rng, 2.5))
    img = np.zeros(shape)
    for _ in range(count):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry = rng.uniform(7, 20) * np.sqrt(max(shape) / 128)
        rx = ry * rng.uniform(0.7, 1.4)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u, v = ((yy - cy) * c + (xx - cx) * s) / ry, (-(yy - cy) * s + (xx - cx) * c) / rx
        inside = 1.0 / (1.0 + np.exp(np.clip((np.sqrt(u * u + v * v) - 1.0) * 12, -30, 30)))
        img = np.maximum(img, inside * rng.uniform(0.4, 1.0))
    nuclear = img > 0.2
    foci = _spots(shape, max(1, int(count * rng.uniform(2, 6))), rng, (0.8, 1.8), (0.3, 0.8),
                  nuclear)
    nucleoli = _spots(shape, count, rng, (1.5, 3.0), (0.2, 0.5), nuclear)
    return img * np.clip(chromatin + foci - nucleoli, 0.05, None)


def _cytoplasm(shape, rng):
    borders = _membranes(*shape, rng).astype(np.float64)
    reticulum = np.clip(0.5 + 0.5 * _unit_noise(shape, rng, 1.2) + 0.3 * _unit_noise(
        shape, rng, 4), 0, None)
    vesicles = _spots(shape, int(_area(shape) * rng.uniform(20, 80)), rng, (0.8, 2.0),
                      (0.2, 0.7))
    return 0.15 + rng.uniform(0.4, 0.8) * borders + 0.4 * reticulum + vesicles


def _dark_sparse(shape, rng):
    smooth = _unit_noise(shape, rng, rng.uniform(4, 7))
    threshold = np.quantile(smooth, 1 - rng.uniform(0.06, 0.14))
    body = np.clip((smooth - threshold) / (smooth.max() - threshold), 0, 1) ** 0.5
    texture = 0.7 + 0.3 * _unit_noise(shape, rng, 1.5)
    inside = _spots(shape, max(1, int(_area(shape) * rng.uniform(5, 20))), rng, (0.8, 1.5),
                    (0.3, 1.0), body > 0.3)
    return body * texture + inside * (body > 0)


def _bright_spots(shape, rng):
    background = fluorescence(shape, rng, "mixed") * rng.uniform(0.1, 0.3)
    spots = _spots(shape, max(2, int(_area(shape) * rng.uniform(3, 12))), rng, (1.2, 3.0),
                   (0.6, 1.0))
    return background + spots


def _shading(shape, rng):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    illumination = 1 - rng.uniform(0.3, 0.6) * ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
    illumination += rng.uniform(-0.2, 0.2) * (yy - 0.5) + rng.uniform(-0.2, 0.2) * (xx - 0.5)
    haze = 0.3 + 0.35 * (_unit_noise(shape, rng, max(shape) / 6) + 1)
    cells = _blobs(*shape, rng).astype(np.float64)
    cells /= max(float(np.percentile(cells, 99.9)), 1e-12)
    return np.clip(illumination, 0.2, None) * (0.45 * haze + 0.55 * cells)


_FAMILY_MAKERS = {
    "puncta": (_puncta, (0.8, 1.3)), "filaments": (_filament_field, (0.7, 1.2)),
    "nuclei": (_nuclei, (0.35, 1.2)), "cytoplasm": (_cytoplasm, (0.4, 1.5)),
    "dark_sparse": (_dark_sparse, (1.0, 1.5)), "bright_spots": (_bright_spots, (0.8, 1.4)),
    "shading": (_shading, (1.0, 1.8)),
}


def clean_field(family: str, shape: int | tuple[int, int], rng: np.random.Generator, *,
                psf_sigma: float | None = None) -> np.ndarray:
    """A clean relative fluorescence field of one family.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    shape : int or (int, int)
        Side or (height, width), each >= 8.
    rng : numpy.random.Generator
        The result is a function of its state.
    psf_sigma : float, optional
        Gaussian PSF sd in pixels; default random in the family's range (0.35-1.8 px; below
        0.5 px: an undersampled or binned field).

    Returns
    -------
    numpy.ndarray
        float32 (H, W), >= 0, maximum exactly 1.
    """
    if family not in _FAMILY_MAKERS:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    shape = check_size(shape)
    make, psf = _FAMILY_MAKERS[family]
    sigma = rng.uniform(*psf) if psf_sigma is None else float(psf_sigma)
    img = ndimage.gaussian_filter(make(shape, rng), sigma, mode="reflect")
    img = np.clip(img, 0, None)
    background = 0.0 if family == "dark_sparse" else rng.uniform(0.0, 0.03)
    img = background + img / max(float(img.max()), 1e-12)
    return (img / img.max()).astype(np.float32)


@dataclass(frozen=True)
class BenchCase:
    """One generated bench case: a family imaged by a camera (fixed seed ``index``)."""

    family: str
    camera: str
    photons: float
    bits: int
    size: int
    index: int
    psf_sigma: float | None = None

    @property
    def name(self) -> str:
        psf = "" if self.psf_sigma is None else f"/psf{self.psf_sigma:g}"
        return (f"{self.family}/{self.camera}/{self.photons:g}ph/{self.bits}bit{psf}"
                f"#{self.index}")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([BENCH_SEED, _BENCH_KEY,
                                                             self.index]))

    def generate(self) -> Acquisition:
        """The case's acquisition (the same for every call)."""
        rng = self.rng()
        field = clean_field(self.family, self.size, rng, psf_sigma=self.psf_sigma)
        full_scale = BRIGHT_FULL_SCALE if self.family == "bright_spots" else None
        return acquire(field, self.camera, self.photons, self.bits, rng, full_scale=full_scale)


#: The quick subset (family, camera, photons, bits, PSF sd or None): small, seconds; holds the
#: failure modes of issue 30 (photon counting and EMCCD on dark backgrounds; textured fields
#: at high photon counts, here a binned nuclei field whose texture the network smooths) and
#: one case of each camera.
QUICK_CASES = (
    ("puncta", "photon_counting", 30, 16, None), ("dark_sparse", "photon_counting", 10, 12, None),
    ("nuclei", "read_noise", 1000, 8, None), ("cytoplasm", "read_noise", 3000, 12, None),
    ("filaments", "emccd", 30, 16, None), ("shading", "scmos", 100, 16, None),
    ("bright_spots", "read_noise", 300, 16, None), ("nuclei", "read_noise", 3000, 16, 0.35),
)


def bench_cases(quick: bool = False, size: int | None = None, replicates: int = 2
                ) -> list[BenchCase]:
    """The bench's cases, in a fixed order with fixed seeds.

    The full set is a covering design, not the full product: every family meets every
    photon level once per replicate, with the camera and bit depth rotating so that every
    family x camera, camera x photon level, family x bit depth, photon level x bit depth and
    camera x bit depth pair occurs (7 x 7 = 49 cases per replicate). ``quick``: the
    :data:`QUICK_CASES`, 96 px.
    """
    if quick:
        side = size or QUICK_SIZE
        return [BenchCase(f, c, float(p), b, side, 1000 + i, psf)
                for i, (f, c, p, b, psf) in enumerate(QUICK_CASES)]
    side = size or BENCH_SIZE
    cases = []
    for rep in range(replicates):
        for i, family in enumerate(FAMILIES):
            for j, photons in enumerate(PHOTON_LEVELS):
                camera = CAMERAS[(i + j + rep) % len(CAMERAS)]
                bits = BIT_DEPTHS[(i + 2 * j + rep) % len(BIT_DEPTHS)]
                cases.append(BenchCase(family, camera, float(photons), bits, side,
                                       len(cases)))
    return cases


def training_rng(index: int, seed: int = 0) -> np.random.Generator:
    """The generator of training draw ``index``: keyed apart from every bench case."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _TRAIN_KEY, int(index)]))


def random_acquisition(rng: np.random.Generator, shape: int | tuple[int, int]) -> Acquisition:
    """A random family, camera, photon level (log-uniform 2-5000) and bit depth, imaged.

    Use an ``rng`` from :func:`training_rng` so that training never draws a bench case.
    """
    family = str(rng.choice(FAMILIES))
    field = clean_field(family, shape, rng)
    photons = float(np.exp(rng.uniform(np.log(2.0), np.log(5000.0))))
    full_scale = BRIGHT_FULL_SCALE if family == "bright_spots" else None
    return acquire(field, str(rng.choice(CAMERAS)), photons, int(rng.choice(BIT_DEPTHS)), rng,
                   full_scale=full_scale)

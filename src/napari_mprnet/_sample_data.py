"""Sample images with their clean references, generated locally (no network access).

- :func:`noisy_cells`: a synthetic fluorescence image (blurred nuclei-like blobs and
  filaments) with Poisson-Gaussian camera noise, uint16.
- :func:`noisy_natural`: scikit-image's "camera" photograph (shipped inside the
  scikit-image wheel) or, without scikit-image, a procedural scene; Gaussian noise with
  sigma 25/255, uint8.

- :func:`blurred_cells`: the fluorescence scene out of focus (Gaussian PSF, sigma 2 px)
  with mild noise, uint16; :func:`blurred_natural`: "camera" defocused (disk, radius 3 px)
  with mild noise, uint8.
- :func:`rainy_natural`: scikit-image's "astronaut" colour photograph (or a procedural
  scene) under synthetic rain streaks, uint8 RGB.
- :func:`noisy_cells_stack`: four fields of the fluorescence scene (a stack, for
  fine-tuning: validation holds out whole planes), uint16.

The degradations are those of the benchmark (``benchmarks/bench_quality.py``); none of these
images is in the training data of the bundled models. All are deterministic (fixed seeds).
:func:`degraded_pair` picks one by task and sample name; the ``*_sample`` functions are the
napari sample-data contributions (*File > Open Sample > MPRNet restoration*).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CELLS_SHAPE",
    "DEGRADED_NAMES",
    "NATURAL_SIGMA",
    "TASK_SAMPLES",
    "blurred_cells",
    "blurred_cells_sample",
    "blurred_natural",
    "blurred_natural_sample",
    "cells_sample",
    "cells_stack_sample",
    "degraded_pair",
    "natural_sample",
    "noisy_cells",
    "noisy_cells_stack",
    "noisy_natural",
    "rainy_natural",
    "rainy_sample",
    "sample_source",
]

#: Shape of the synthetic fluorescence image.
CELLS_SHAPE = (384, 384)
#: Noise level of the natural sample, in uint8 grey levels.
NATURAL_SIGMA = 25.0
_SEED = 20210301

# camera model of the fluorescence sample: counts = offset + gain * Poisson(photons) + read noise
_PEAK_PHOTONS = 40.0
_BACKGROUND_PHOTONS = 4.0
_GAIN = 8.0
_OFFSET = 100.0
_READ_NOISE = 4.0

# deblur samples: sharp image -> blur -> Gaussian noise of this sigma (in units of the range)
_DEBLUR_NOISE = 1.0 / 255.0
_CELLS_PSF_SIGMA = 2.0
_DEFOCUS_RADIUS = 3.0
_BLURRED_CELLS_RANGE = 4000.0  # camera counts above the offset at the brightest pixel
# derain sample: two layers of streaks, as the "heavy" row of the benchmark
_RAIN_LAYERS = (
    {"density": 0.004, "angle": -20.0, "length": 30.0, "width": 1.0, "brightness": 0.8},
    {"density": 0.002, "angle": -15.0, "length": 16.0, "width": 0.6, "brightness": 0.6},
)

#: The degraded images each task's demo can use (see :func:`degraded_pair`).
TASK_SAMPLES = {"denoise": ("cells", "natural"), "deblur": ("cells", "natural"),
                "derain": ("natural",)}
#: What a degraded image of each task is called in layer and file names.
DEGRADED_NAMES = {"denoise": "noisy", "deblur": "blurred", "derain": "rainy"}


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur through the FFT (numpy only)."""
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    transfer = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(image) * transfer, s=image.shape)


def _fluorescence_scene(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Fluorophore density in [0, 1]: nuclei-like blobs with texture, and filaments."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    scene = np.zeros(shape)

    # nuclei: soft-edged ellipses, each drawn in its own bounding box
    n_blobs = int(height * width / 4000)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(6, 16), rng.uniform(6, 16)
        angle = rng.uniform(0, np.pi)
        brightness = rng.uniform(0.5, 1.0)
        reach = 1.6 * max(ry, rx)
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, height)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, width)
        if y0 >= y1 or x0 >= x1:
            continue
        cos, sin = np.cos(angle), np.sin(angle)
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = (cos * dx + sin * dy) / rx
        v = (-sin * dx + cos * dy) / ry
        radius = np.sqrt(u**2 + v**2)
        scene[y0:y1, x0:x1] += brightness / (1.0 + np.exp((radius - 1.0) * 8.0))

    texture = _gaussian_blur(rng.standard_normal(shape), 2.0)
    texture /= np.abs(texture).max()
    scene *= 1.0 + 0.35 * texture

    # filaments: smooth random walks drawn as thin lines
    lines = np.zeros(shape)
    for _ in range(int((height + width) / 24)):
        y, x = rng.uniform(0, height), rng.uniform(0, width)
        heading = rng.uniform(0, 2 * np.pi)
        brightness = rng.uniform(0.3, 0.8)
        for _step in range(int(rng.uniform(80, 300))):
            heading += rng.normal(0.0, 0.08)
            y += np.sin(heading)
            x += np.cos(heading)
            iy, ix = int(y), int(x)
            if not (0 <= iy < height and 0 <= ix < width):
                break
            lines[iy, ix] = max(lines[iy, ix], brightness)
    scene += 2.0 * _gaussian_blur(lines, 0.8)

    scene = _gaussian_blur(scene, 1.5)  # the microscope's point spread function
    scene = np.clip(scene, 0.0, None)
    return scene / scene.max()


def noisy_cells(
    shape: tuple[int, int] = CELLS_SHAPE, seed: int = _SEED
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic fluorescence image with Poisson-Gaussian noise.

    Returns
    -------
    (noisy, clean) : tuple of uint16 arrays of ``shape``
        ``clean`` is the noise-free expected camera signal on the same intensity scale.
    """
    rng = np.random.default_rng(seed)
    photons = _BACKGROUND_PHOTONS + _PEAK_PHOTONS * _fluorescence_scene(tuple(shape), rng)
    clean = _OFFSET + _GAIN * photons
    noisy = (
        _OFFSET
        + _GAIN * rng.poisson(photons).astype(np.float64)
        + rng.normal(0.0, _READ_NOISE, photons.shape)
    )
    limit = np.iinfo(np.uint16).max
    as_uint16 = [np.clip(np.rint(a), 0, limit).astype(np.uint16) for a in (noisy, clean)]
    return as_uint16[0], as_uint16[1]


#: Planes and plane shape of the fluorescence stack sample.
STACK_SHAPE = (4, 256, 256)


def noisy_cells_stack(shape: tuple[int, int, int] = STACK_SHAPE,
                      seed: int = _SEED) -> tuple[np.ndarray, np.ndarray]:
    """Fields of the fluorescence scene, each with its own cells and camera noise.

    Returns
    -------
    (noisy, clean) : tuple of uint16 arrays of ``shape`` (planes, height, width)
    """
    pairs = [noisy_cells(tuple(shape[1:]), seed=seed + 1 + plane) for plane in range(shape[0])]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _procedural_scene(size: int, rng: np.random.Generator) -> np.ndarray:
    """A grey scene in [0, 255] with smooth shading, hard edges and fine texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    scene = 60.0 + 120.0 * (0.6 * yy + 0.4 * xx)
    for _ in range(12):  # discs
        cy, cx, radius = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.15)
        scene[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.uniform(0, 255)
    for _ in range(8):  # rectangles
        y0, x0 = rng.uniform(0, 0.8, 2)
        h, w = rng.uniform(0.05, 0.25, 2)
        box = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        scene[box] = rng.uniform(0, 255)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 24 * (xx + 0.3 * yy))
    patch = (yy > 0.65) & (xx < 0.35)
    scene[patch] = 40.0 + 170.0 * stripes[patch]
    return np.clip(scene, 0.0, 255.0)


def _has_skimage() -> bool:
    from importlib.util import find_spec

    return find_spec("skimage") is not None


#: The scikit-image photograph behind each task's "natural" sample.
_PHOTOGRAPHS = {"denoise": "camera", "deblur": "camera", "derain": "astronaut"}


def sample_source(task: str = "denoise", sample: str = "cells") -> tuple[str, bool]:
    """What the clean image of a sample is, and whether it is the documented one.

    Returns
    -------
    (description, documented) : tuple of str and bool
        e.g. ("scikit-image's 'astronaut' photograph", True); without scikit-image a
        "natural" sample is a procedural scene: (..., False), so its PSNR figures differ from
        the documented ones.
    """
    if sample == "cells":
        return "synthetic fluorescence", True
    photo = _PHOTOGRAPHS[task]
    if _has_skimage():
        return f"scikit-image's '{photo}' photograph", True
    stand_in = (f"a procedural scene (scikit-image is not installed; the documented figures "
                f"use its '{photo}' photograph: pip install scikit-image)")
    return stand_in, False


def _natural_clean(rng: np.random.Generator) -> np.ndarray:
    if not _has_skimage():
        return np.rint(_procedural_scene(512, rng)).astype(np.uint8)
    from skimage import data

    return np.asarray(data.camera(), dtype=np.uint8)


def noisy_natural(sigma: float = NATURAL_SIGMA, seed: int = _SEED) -> tuple[np.ndarray, np.ndarray]:
    """A natural grey photograph with additive Gaussian noise of ``sigma`` grey levels.

    Returns
    -------
    (noisy, clean) : tuple of uint8 arrays (512 x 512)
    """
    rng = np.random.default_rng(seed)
    clean = _natural_clean(rng)
    noisy = clean.astype(np.float64) + rng.normal(0.0, sigma, clean.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), clean


def _blurred(unit: np.ndarray, kernel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from .training import degradations

    return degradations.gaussian_noise(degradations.blur(unit, kernel), _DEBLUR_NOISE, rng)


def blurred_cells(seed: int = _SEED) -> tuple[np.ndarray, np.ndarray]:
    """The fluorescence scene out of focus: Gaussian PSF (sigma 2 px) and mild noise.

    Returns
    -------
    (blurred, sharp) : tuple of uint16 arrays of :data:`CELLS_SHAPE`
    """
    from .training.degradations import blur_kernel

    rng = np.random.default_rng(seed)
    sharp = _fluorescence_scene(CELLS_SHAPE, rng).astype(np.float32)
    blurred = _blurred(sharp, blur_kernel("gaussian", sigma=_CELLS_PSF_SIGMA), rng)
    limit = np.iinfo(np.uint16).max
    return tuple(  # type: ignore[return-value]
        np.clip(np.rint(_OFFSET + _BLURRED_CELLS_RANGE * a), 0, limit).astype(np.uint16)
        for a in (blurred, sharp)
    )


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def blurred_natural(seed: int = _SEED) -> tuple[np.ndarray, np.ndarray]:
    """A natural grey photograph defocused (disk of radius 3 px) with mild noise.

    Returns
    -------
    (blurred, sharp) : tuple of uint8 arrays (512 x 512)
    """
    from .training.degradations import blur_kernel

    rng = np.random.default_rng(seed)
    sharp = _natural_clean(rng)
    kernel = blur_kernel("defocus", radius=_DEFOCUS_RADIUS)
    return _to_uint8(_blurred(sharp / np.float32(255.0), kernel, rng)), sharp


def _colour_clean(rng: np.random.Generator) -> np.ndarray:
    if not _has_skimage():
        grey = np.rint(_procedural_scene(512, rng)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    from skimage import data

    return np.asarray(data.astronaut(), dtype=np.uint8)


def rainy_natural(seed: int = _SEED) -> tuple[np.ndarray, np.ndarray]:
    """A colour photograph under two layers of synthetic rain streaks.

    Returns
    -------
    (rainy, clean) : tuple of uint8 RGB arrays (512 x 512 x 3)
    """
    from .training.degradations import rain_streaks

    rng = np.random.default_rng(seed)
    clean = _colour_clean(rng)
    rainy = clean / np.float32(255.0)
    for layer in _RAIN_LAYERS:
        rainy = rain_streaks(rainy, rng, **layer)
    return _to_uint8(rainy), clean


_PAIRS = {
    ("denoise", "cells"): noisy_cells,
    ("denoise", "natural"): noisy_natural,
    ("deblur", "cells"): blurred_cells,
    ("deblur", "natural"): blurred_natural,
    ("derain", "natural"): rainy_natural,
}


def degraded_pair(task: str = "denoise", sample: str = "cells") -> tuple[np.ndarray, np.ndarray]:
    """The degraded sample of ``task`` and its clean reference.

    Parameters
    ----------
    task : {"denoise", "deblur", "derain"}
    sample : str
        One of :data:`TASK_SAMPLES` ``[task]``: "cells" (synthetic fluorescence) or "natural"
        (a photograph).

    Returns
    -------
    (degraded, clean) : tuple of arrays with the same shape and dtype
    """
    if task not in TASK_SAMPLES:
        raise ValueError(f"task must be one of {sorted(TASK_SAMPLES)}, got {task!r}")
    if sample not in TASK_SAMPLES[task]:
        raise ValueError(f"there is no {sample!r} sample for {task}; choose one of "
                         f"{list(TASK_SAMPLES[task])}")
    return _PAIRS[task, sample]()


def _sample_layers(task: str, sample: str) -> list[tuple]:
    """LayerData tuples: the degraded image of ``task`` on top of its (hidden) clean
    reference, both displayed alike (grey images: gray colormap, the same contrast limits)."""
    degraded, clean = degraded_pair(task, sample)
    if clean.ndim == 3:
        stem, common = "photo", {}
    elif sample == "cells":
        limits = [float(np.percentile(clean, 0.5)), float(np.percentile(clean, 99.8))]
        stem, common = "cells", {"colormap": "gray", "contrast_limits": limits}
    else:
        stem, common = "camera", {"colormap": "gray", "contrast_limits": [0, 255]}
    return [
        (clean, {"name": f"clean {stem}", "visible": False, **common}, "image"),
        (degraded, {"name": f"{DEGRADED_NAMES[task]} {stem}", **common}, "image"),
    ]


def cells_sample() -> list[tuple]:
    """napari sample data: the noisy fluorescence image and its clean reference."""
    return _sample_layers("denoise", "cells")


def cells_stack_sample() -> list[tuple]:
    """napari sample data: a 4-plane noisy fluorescence stack and its clean reference, for
    the Fine-tune widget (validation holds out whole planes)."""
    noisy, clean = noisy_cells_stack()
    limits = [float(np.percentile(clean, 0.5)), float(np.percentile(clean, 99.8))]
    common = {"colormap": "gray", "contrast_limits": limits}
    return [
        (clean, {"name": "clean cells stack", "visible": False, **common}, "image"),
        (noisy, {"name": "noisy cells stack", **common}, "image"),
    ]


def natural_sample() -> list[tuple]:
    """napari sample data: the noisy natural image and its clean reference."""
    return _sample_layers("denoise", "natural")


def blurred_cells_sample() -> list[tuple]:
    """napari sample data: the out-of-focus fluorescence image and its sharp reference."""
    return _sample_layers("deblur", "cells")


def blurred_natural_sample() -> list[tuple]:
    """napari sample data: the defocused photograph and its sharp reference."""
    return _sample_layers("deblur", "natural")


def rainy_sample() -> list[tuple]:
    """napari sample data: the rainy colour photograph and its clean reference."""
    return _sample_layers("derain", "natural")

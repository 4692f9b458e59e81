"""Synthetic degradations for training and benchmarking: noise, blur and rain.

All functions take float32 images in [0, 1], shaped (H, W) (grey) or (H, W, 3) (colour),
and a :class:`numpy.random.Generator`; results are deterministic for a given generator state.

Noise is **not clipped**: a clipped noisy image has a biased mean and a smaller variance
near 0 and 1, which would teach the network the wrong noise model (and breaks the variance
checks in the tests). Blurred and rained images stay within [0, 1] up to the (mild, unclipped)
noise added to them.

Grey data and 3-channel networks: degrade the single grey channel first and replicate it
afterwards (:class:`PairGenerator` does), never the other way round: with independent
noise per channel a network learns to average the copies and fails on real grey images.

Random degradation models (:func:`sample_params`, :func:`degrade`)
------------------------------------------------------------------
denoise
    Half of the images: Gaussian noise, sigma = 50/255 * u^2 with u uniform (blind; in
    [0, 50]/255, low noise drawn more often than high so that nearly clean images keep
    their detail). The other half:
    Poisson-Gaussian noise of a photon-counting camera, photons at intensity 1 log-uniform in
    [5, 3000], Gaussian read noise uniform in [0, 4] photons (electrons) rms.
deblur
    One kernel per image, the kind uniform among Gaussian (sigma 0.5-3 px, anisotropic,
    rotated), defocus (disk radius 1-5 px) and motion (length 3-21 px, any angle, slightly
    curved); then mild Gaussian noise, sigma uniform in [0, 2]/255.
derain
    Rain streaks screen-blended over the image: density (streak seeds per pixel) log-uniform
    in [0.0005, 0.006], angle uniform in [-35, 35] degrees from vertical (one per image, varied
    per layer by up to 5 degrees), length 8-40 px, width 0.4-1.2 px, brightness 0.3-1,
    one or two layers.
"""

from .blur import blur, blur_kernel
from .common import DEGRADATION_MODEL, TASK_NAMES
from .models import apply_params, degrade, sample_params
from .noise import gaussian_noise, poisson_gaussian
from .pairs import PairGenerator
from .rain import rain_streaks, streak_kernel

__all__ = [
    "DEGRADATION_MODEL",
    "TASK_NAMES",
    "PairGenerator",
    "apply_params",
    "blur",
    "blur_kernel",
    "degrade",
    "gaussian_noise",
    "poisson_gaussian",
    "rain_streaks",
    "sample_params",
    "streak_kernel",
]

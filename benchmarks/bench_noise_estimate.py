"""Accuracy of the blind noise estimate on the real held-out images, against a classical one.

For every case of the real denoise benchmark (``bench_quality.py --corpus``: grey
photographs with Gaussian noise at sigma 5-50, microscopy fields with Poisson-Gaussian noise
at 10-1000 photons, the same seeds and images), the ratio of the estimated to the true noise
standard deviation at the image's mean intensity, for

- ``estimate_noise`` (the estimate ``strength="auto"`` uses), and
- the wavelet MAD estimate measured in the same run (Donoho and Johnstone: the median
  absolute value of the finest diagonal Haar coefficients / 0.6745), a Gaussian-only
  classic, as the baseline.

A ratio above 1 makes "auto" smooth as much as the network does (fine texture is lost); below 1
puts noise back. Microscopy references carry noise of their own, so a ratio a little above 1
at 1000 photons can be right (the image has more noise than was added).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_noise_estimate.py \
        --corpus ~/.cache/napari-mprnet/corpus
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality  # the benchmark cases: same images, seeds and noise


def wavelet_mad_sd(plane: np.ndarray) -> float:
    """Gaussian noise sd from the finest diagonal Haar detail band (median / 0.6745)."""
    h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    p = plane[:h, :w].astype(np.float64)
    diagonal = (p[0::2, 0::2] - p[0::2, 1::2] - p[1::2, 0::2] + p[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(diagonal)) / 0.6745)


def _true_variance(info: dict, level: float) -> float:
    noise = bench_quality.true_noise(info)
    if isinstance(noise, tuple):
        return noise[0] * level + noise[1]
    return noise**2


def _summary(ratios: list[float]) -> str:
    r = np.asarray(ratios)
    return f"{np.median(r):.3f} [{r.min():.2f}, {r.max():.2f}]"


def main(argv: list[str] | None = None) -> list[dict]:
    from napari_mprnet.engine.noise import estimate_noise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="corpus built by tools/build_corpus.py")
    parser.add_argument("--photos", type=int, default=23)
    parser.add_argument("--fields", type=int, default=5)
    args = parser.parse_args(argv)
    bench_args = bench_quality.parse_args(["--corpus", args.corpus, "--tile", "0",
                                           "--photos", str(args.photos),
                                           "--fields", str(args.fields)])
    images = bench_quality.real_held_out_images(args.corpus, bench_args.size, args.photos,
                                                args.fields)
    rows, started = [], time.perf_counter()
    print("| data | noise | n | estimate_noise: median [min, max] | wavelet MAD (baseline) |")
    print("|---|---|---|---|---|")
    for group, level, cases in bench_quality.denoise_cases(images, bench_args):
        ours, baseline = [], []
        for _name, _clean, noisy, info in cases:
            mean = float(np.maximum(noisy, 0).mean())
            true_sd = np.sqrt(_true_variance(info, mean))
            a, b = estimate_noise(noisy)
            ours.append(np.sqrt(max(a * mean + b, 0.0)) / true_sd)
            baseline.append(wavelet_mad_sd(noisy) / true_sd)
        rows.append({"data": group, "level": level, "ours": ours, "baseline": baseline})
        print(f"| {group} | {level} | {len(cases)} | {_summary(ours)} | "
              f"{_summary(baseline)} |", flush=True)
    worst = max(abs(np.log(r)) for row in rows for r in row["ours"])
    worst_base = max(abs(np.log(r)) for row in rows for r in row["baseline"])
    print(f"\nworst ratio (either way): estimate_noise {np.exp(worst):.2f}x, wavelet MAD "
          f"{np.exp(worst_base):.2f}x; {time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()

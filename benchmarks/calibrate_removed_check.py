"""Calibrate the "what was removed looks like noise" check on many generated microscopy cases.

Each case is a random family, camera, photon level (3-3000, log-uniform), bit depth and PSF
(a third of them binned, PSF 0.35 px) from ``training.microscopy``, drawn from its own seed
stream (neither the bench's cases nor training draws). Every case gives several results of
the same noisy image, from pure noise removal to deliberate structure removal:

- ``network``: the bundled denoiser at strength 1;
- ``half``: halfway between the input and the network (removes half the noise);
- ``network smoothed``: the network output blurred by 1 px more (removes structure);
- ``blur 1`` / ``blur 2``: the input blurred by 1 / 2 px (noise at low photon counts,
  structure at high ones).

The truth of a result: it *removed structure* when the image halfway between it and the input
is closer to the clean image (mean squared error) than the result itself: following the
result all the way lost more signal than the noise it removed -- what the warning's advice
("compare with strength 0.5") tests. The script reports, for thresholds on the structure
fraction (:func:`napari_mprnet.engine.removed.structure_fraction`), how many results that
removed structure are flagged and how many that did not are flagged wrongly. Each sample also
records the energy test the check does not use (``excess_est`` / ``excess_true``: the share of
the removed energy above what the estimated / true noise law predicts): blind, the noise
estimate reads too low on photon-counting and EMCCD fields and the test would flag good
results; given the true law it still misses most structure the network removes (docs/removed.md).

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/calibrate_removed_check.py \
        --cases 200 --json docs/benchmarks/removed_check_calibration.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

CALIBRATION_SEED = 3003
THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3)


def draw_case(index: int, size: int):
    from napari_mprnet.training import microscopy

    rng = np.random.default_rng(np.random.SeedSequence([CALIBRATION_SEED, index]))
    family = str(rng.choice(microscopy.FAMILIES))
    camera = str(rng.choice(microscopy.CAMERAS))
    photons = float(np.exp(rng.uniform(np.log(3.0), np.log(3000.0))))
    bits = int(rng.choice(microscopy.BIT_DEPTHS))
    psf = 0.35 if rng.random() < 1 / 3 else None
    field = microscopy.clean_field(family, size, rng, psf_sigma=psf)
    acq = microscopy.acquire(field, camera, photons, bits, rng)
    return f"{family}/{camera}/{photons:.0f}ph/{bits}bit/psf{psf}#{index}", acq


def results_of(acq, network: np.ndarray) -> dict[str, np.ndarray]:
    noisy = acq.noisy.astype(np.float64)
    return {
        "network": network,
        "half": 0.5 * (noisy + network),
        "network smoothed": ndimage.gaussian_filter(network, 1.0),
        "blur 1": ndimage.gaussian_filter(noisy, 1.0),
        "blur 2": ndimage.gaussian_filter(noisy, 2.0),
    }


def main(argv: list[str] | None = None) -> dict:
    from napari_mprnet import restore
    from napari_mprnet.engine.noise import estimate_noise
    from napari_mprnet.engine.removed import STRUCTURE_THRESHOLD, structure_fraction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    samples = []
    for index in range(args.cases):
        name, acq = draw_case(index, args.size)
        noisy = acq.noisy.astype(np.float64)
        network = np.asarray(restore(acq.noisy, strength=1.0, device="cpu"), np.float64)
        a_est, b_est = estimate_noise(noisy)
        a_true, b_true = acq.noise_law()
        for kind, result in results_of(acq, network).items():
            removed = noisy - result
            energy = float(np.mean(removed**2))
            level = np.maximum(result, 0)
            error = np.mean((result - acq.clean) ** 2)
            halfway = np.mean((result + removed / 2 - acq.clean) ** 2)
            samples.append({"case": name, "result": kind,
                            "structure": round(structure_fraction(removed), 5),
                            "excess_est": round(1 - float(np.mean(a_est * level + b_est))
                                                / max(energy, 1e-30), 5),
                            "excess_true": round(1 - float(np.mean(a_true * level + b_true))
                                                 / max(energy, 1e-30), 5),
                            "removed_structure": bool(halfway < error),
                            "gain_db": round(10 * np.log10(
                                np.mean((noisy - acq.clean) ** 2) / error), 3)})
        if (index + 1) % 10 == 0:
            print(f"{index + 1}/{args.cases} cases", file=sys.stderr, flush=True)
    table = []
    positives = [s for s in samples if s["removed_structure"]]
    negatives = [s for s in samples if not s["removed_structure"]]
    for threshold in sorted({*THRESHOLDS, STRUCTURE_THRESHOLD}):
        caught = sum(s["structure"] > threshold for s in positives)
        false = sum(s["structure"] > threshold for s in negatives)
        false_network = sum(s["structure"] > threshold for s in negatives
                            if s["result"] == "network")
        table.append({"threshold": threshold, "detected": caught, "false_alarms": false,
                      "false_alarms_network": false_network})
    print(f"{len(samples)} results of {args.cases} cases: {len(positives)} removed structure, "
          f"{len(negatives)} did not; network at strength 1: "
          f"{sum(s['result'] == 'network' for s in positives)} removed structure")
    print("| threshold | structure removed, flagged | noise only, flagged (all / network) |")
    print("|---|---|---|")
    for row in table:
        mark = " (used)" if row["threshold"] == STRUCTURE_THRESHOLD else ""
        print(f"| {row['threshold']:.2f}{mark} | {row['detected']} of {len(positives)} | "
              f"{row['false_alarms']} / {row['false_alarms_network']} of {len(negatives)} |")
    report = {"cases": args.cases, "size": args.size, "seed": CALIBRATION_SEED,
              "threshold_used": STRUCTURE_THRESHOLD, "table": table, "samples": samples,
              "runtime_s": round(time.perf_counter() - started, 1)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report) + "\n")
    return report


if __name__ == "__main__":
    main()

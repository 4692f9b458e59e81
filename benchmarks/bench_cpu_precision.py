"""What bf16 costs in quality on a CPU: PSNR of each bundled model in bf16 vs fp32.

The held-out images and degradations of ``bench_quality.py`` (natural photographs, dead
leaves and fluorescence; Gaussian and Poisson-Gaussian noise, three blur kernels, light and
heavy rain), each restored twice with the same tiles, once with ``precision="fp32"`` and
once with ``precision="bf16"`` (autocast). Reports per model the mean and the worst
PSNR(bf16) - PSNR(fp32) against the clean image, the agreement (PSNR between the two
outputs) and the engine's own probe (:func:`napari_mprnet.engine.precision.bf16_agreement_db`,
which decides whether "auto" may use bf16 for a model).

    python benchmarks/bench_cpu_precision.py                 # all three bundled models
    python benchmarks/bench_cpu_precision.py --size 128 --tasks denoise
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_quality  # the held-out cases live there


def check(task: str, size: int) -> dict:
    import torch

    from napari_mprnet import restore
    from napari_mprnet.api import prepare_model
    from napari_mprnet.engine.precision import bf16_agreement_db

    model = prepare_model(task, task)
    cases = argparse.Namespace(sigmas=bench_quality.DENOISE_SIGMAS,
                               photons=bench_quality.PHOTON_LEVELS, corpus=None)
    images = bench_quality.held_out_images(size, quick=False)
    deltas, agreements = [], []
    for _group, _level, group_cases in bench_quality.CASES[task](images, cases):
        for _name, clean, degraded, _info in group_cases:
            outputs = {}
            for precision in ("fp32", "bf16"):
                outputs[precision] = np.clip(restore(
                    degraded, task, model=model, device="cpu", tile_size=size, tile_overlap=32,
                    normalize="none", rgb=degraded.ndim == 3, precision=precision), 0, 1)
            deltas.append(bench_quality._metrics(outputs["bf16"], clean)[0]
                          - bench_quality._metrics(outputs["fp32"], clean)[0])
            mse = float(np.mean((outputs["bf16"] - outputs["fp32"]) ** 2))
            agreements.append(-10 * np.log10(max(mse, 1e-20)))
    return {"task": task, "n": len(deltas), "mean_delta_db": float(np.mean(deltas)),
            "worst_delta_db": float(np.min(deltas)),
            "agreement_db_min": float(np.min(agreements)),
            "probe_agreement_db": bf16_agreement_db(model), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(bench_quality.TASKS))
    parser.add_argument("--size", type=int, default=256, help="image edge (one tile)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for task in args.tasks:
        row = check(task, args.size)
        rows.append(row)
        print(f"{task:8s} n={row['n']:3d}  bf16 - fp32: mean {row['mean_delta_db']:+.4f} dB, "
              f"worst {row['worst_delta_db']:+.4f} dB; outputs agree to >= "
              f"{row['agreement_db_min']:.1f} dB; probe {row['probe_agreement_db']:.1f} dB",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()

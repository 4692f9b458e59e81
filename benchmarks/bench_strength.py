"""Cost of ``strength="auto"``: restore() time with it over restore() time with strength=1.0.

"auto" adds the noise estimate and two forwards of the central 256 x 256 window per plane,
so the ratio is largest for small images. Both settings run in the same process, alternated,
on a synthetic noisy image of each size; the best of ``--repeats`` runs is compared.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_strength.py --sizes 256 1024
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _image(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / 64.0
    clean = 0.5 + 0.25 * np.sin(xx) * np.cos(1.3 * yy)
    return (clean + rng.normal(0, 15 / 255, clean.shape)).astype(np.float32)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from napari_mprnet import restore
    from napari_mprnet.engine.pipeline import Restorer

    restorer = Restorer(None, "denoise", device=args.device)  # warm-up and the precision
    restorer.run(_image(64))
    rows = []
    print(f"device {args.device}, precision {restorer.runner.precision}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load {os.getloadavg()[0]:.1f}")
    for size in args.sizes:
        image = _image(size)
        times: dict[str, list[float]] = {"1.0": [], "auto": []}
        for _ in range(args.repeats):
            for name, strength in (("1.0", 1.0), ("auto", "auto")):
                start = time.perf_counter()
                restore(image, device=args.device, strength=strength)
                times[name].append(time.perf_counter() - start)
        fixed, auto = min(times["1.0"]), min(times["auto"])
        rows.append({"size": size, "strength_1_s": fixed, "auto_s": auto,
                     "ratio": auto / fixed})
        print(f"{size:5d} px: strength=1.0 {fixed:7.2f} s, auto {auto:7.2f} s, "
              f"ratio {auto / fixed:.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main()

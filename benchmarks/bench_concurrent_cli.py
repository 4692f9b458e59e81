"""Two ``napari-mprnet restore`` runs at once against the same two runs one after the other.

Each run restores its own folder of noisy photographs (the scikit-image camera, mirror-tiled,
Gaussian sigma 25/255, uint8) on the CPU with the bundled denoiser and every default. Two
thread policies are measured in the same session, each pair and its sequential baseline
back to back:

- ``automatic``: what a user gets (the thread count follows the machine's load during the
  run, :func:`napari_mprnet.engine.devices.follow_cpu_load`);
- ``every core each``: ``NAPARI_MPRNET_THREADS`` set to the physical core count in both
  processes, which is what each run chose when two started together on an idle machine
  before the count followed the load (oversubscription).

The ratio ``at once / one after the other`` is 1.0 when two runs share the cores perfectly
(the pair finishes when the same work done sequentially would), below 1 when running
together uses the cores better, and above 1 when the runs get in each other's way (issue 35:
122 s and 180 s at once against 14.7 s alone on an idle 2-core machine).

    nice -n 10 python benchmarks/bench_concurrent_cli.py                 # 2 images of 384 px
    python benchmarks/bench_concurrent_cli.py --images 3 --size 512 --json result.json

Prints one line per measurement and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _photos(folder: Path, count: int, size: int, seed: int) -> None:
    import tifffile
    from skimage import data

    camera = data.camera().astype(np.float64)
    reps = -(-size // camera.shape[0]) + 1
    tiled = np.pad(camera, [(0, camera.shape[0] * reps)] * 2, mode="symmetric")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for index in range(count):
        y, x = rng.integers(0, tiled.shape[0] - size, 2)
        noisy = tiled[y:y + size, x:x + size] + rng.normal(0, 25, (size, size))
        tifffile.imwrite(folder / f"photo{index}.tif",
                         np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def _command(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "napari_mprnet.cli", "restore", str(source), "-o", str(out),
            "--task", "denoise", "--device", "cpu", "--quiet", "--overwrite"]


def _environment(threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NAPARI_MPRNET_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    if threads is not None:
        env["NAPARI_MPRNET_THREADS"] = str(threads)
    return env


def _run_together(commands: list[list[str]], env: dict[str, str]) -> tuple[float, list[float]]:
    """Start every command at once; the wall time of the whole and of each."""
    start = time.perf_counter()
    runs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True) for c in commands]
    ends: list[float] = [0.0] * len(runs)
    while any(e == 0.0 for e in ends):
        for index, run in enumerate(runs):
            if ends[index] == 0.0 and run.poll() is not None:
                ends[index] = time.perf_counter() - start
                if run.returncode != 0:
                    raise SystemExit(f"a restore run failed: {run.stderr.read().strip()}")
        time.sleep(0.05)
    return max(ends), ends


def _pair(work: Path, folders: list[Path], threads: int | None, label: str) -> dict:
    env = _environment(threads)
    outs = [work / f"out-{label}-{i}" for i in range(len(folders))]
    commands = [_command(f, o) for f, o in zip(folders, outs)]
    sequential = [_run_together([c], env)[0] for c in commands]
    together, each = _run_together(commands, env)
    ratio = together / sum(sequential)
    print(f"{label:>16}: one after the other {sum(sequential):6.1f} s "
          f"({' + '.join(f'{t:.1f}' for t in sequential)}), at once {together:6.1f} s "
          f"(runs end at {', '.join(f'{t:.1f}' for t in each)} s): ratio {ratio:.2f}",
          flush=True)
    return {"threads": threads or "automatic", "sequential_s": sequential,
            "together_s": together, "together_each_s": each, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="images per run (default 2)")
    parser.add_argument("--size", type=int, default=384, help="image edge in px (384)")
    parser.add_argument("--policies", nargs="+", default=["automatic", "every-core"],
                        choices=["automatic", "every-core"])
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    from napari_mprnet.engine.devices import physical_cpu_cores

    cores = physical_cpu_cores()
    print(f"{platform.processor() or platform.machine()}, {cores} physical core(s) available, "
          f"load average {os.getloadavg()[0]:.1f} before", flush=True)
    results = {"cores": cores, "images": args.images, "size": args.size,
               "load_before": os.getloadavg()[0], "policies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folders = [work / f"in{i}" for i in range(2)]
        for index, folder in enumerate(folders):
            _photos(folder, args.images, args.size, seed=index)
        _run_together([_command(folders[0], work / "warm-up")], _environment(None))
        for policy in args.policies:
            threads = None if policy == "automatic" else cores
            results["policies"][policy] = _pair(work, folders, threads, policy)
    results["load_after"] = os.getloadavg()[0]
    print(f"load average {results['load_after']:.1f} after")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Scale-out throughput: restore a large zarr image on 1, 2 and 4 dask workers.

A ``size`` x ``size`` uint16 zarr image (written chunk by chunk, so even 16k x 16k never sits
in memory) is restored lazily (``restore(da.from_zarr(...))``) and streamed into an output
zarr store by a ``LocalCluster`` of single-threaded worker processes (one per GPU with
``--device cuda``). For each worker count it reports throughput, scaling efficiency
(throughput / (workers x single-worker throughput)), each worker's peak resident memory and
the client's peak, which stays flat however large the image.

    python benchmarks/bench_scale.py --size 2048 --config tiny          # quick, CPU
    python benchmarks/bench_scale.py                                    # 16k x 16k, small
    python benchmarks/bench_scale.py --device cuda --config denoise --workers 1 2 4 8

Prints a table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "tiny": {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "num_cab": 1},
    "small": {"n_feat": 32, "scale_unetfeats": 16, "scale_orsnetfeats": 16, "num_cab": 4},
    "derain": {"n_feat": 40, "scale_unetfeats": 20, "scale_orsnetfeats": 16},
    "denoise": {"n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32},
}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def make_input(path: Path, size: int, chunk: int = 1024) -> None:
    """A smooth noisy uint16 test image, written block by block."""
    import numpy as np
    import zarr

    store = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(chunk, chunk),
                            dtype="u2")
    store.attrs["axes"] = "YX"
    rng = np.random.default_rng(0)
    for y in range(0, size, chunk):
        for x in range(0, size, chunk):
            yy, xx = np.mgrid[y:min(y + chunk, size), x:min(x + chunk, size)]
            clean = 2000 + 1500 * np.sin(yy / 97.0) * np.cos(xx / 131.0)
            noisy = clean + rng.normal(0, 300, clean.shape)
            store[y:y + chunk, x:x + chunk] = np.clip(noisy, 0, 65535).astype(np.uint16)


def run_one(n_workers: int, args: argparse.Namespace, weights: Path, source: Path,
            work: Path) -> dict:
    import dask.array as da
    from distributed import Client

    from napari_mprnet import restore
    from napari_mprnet.io.zarr import write_zarr
    from napari_mprnet.scale.distributed import local_cluster, worker_load_counts

    gpus = args.device.startswith("cuda")
    cluster = local_cluster(n_workers, gpus=gpus)
    client = Client(cluster)
    try:
        workers = len(client.scheduler_info()["workers"])
        options = {"model": str(weights), "tile_size": args.tile, "tile_overlap": args.overlap,
                   "device": args.device, "precision": args.precision,
                   "chunk_size": args.chunk, "output_dtype": "uint16"}
        warm = da.zeros((64, 64), dtype="u2", chunks=32) + 1000
        restore(warm, normalize="range", **{**options, "tile_size": 32, "tile_overlap": 8,
                                            "chunk_size": None}).compute()
        start = time.perf_counter()
        lazy_out = restore(da.from_zarr(str(source)), **options)
        planned = time.perf_counter() - start
        target = work / f"out_{n_workers}.zarr"
        write_zarr([lazy_out], [target], "YX", overwrite=True)
        elapsed = time.perf_counter() - start
        peaks = client.run(_peak_rss_bytes)
        loads = worker_load_counts(client)
        return {
            "workers": workers,
            "seconds": elapsed,
            "plan_seconds": planned,
            "mpix_per_s": args.size ** 2 / elapsed / 1e6,
            "blocks": lazy_out.npartitions,
            "chunks": [lazy_out.chunks[0][0], lazy_out.chunks[1][0]],
            "worker_peak_rss_mib": sorted(p / 2**20 for p in peaks.values()),
            "model_loads_per_worker": sorted(loads.values()),
        }
    finally:
        client.close()
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=16384, help="image edge (default 16384)")
    parser.add_argument("--config", choices=CONFIGS, default="small")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per worker)")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=None,
                        help="Y/X chunk edge (default: size/4, at most 4096)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the zarr stores go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.chunk is None:
        args.chunk = min(4096, max(2 * args.tile, args.size // 4))

    import torch

    from napari_mprnet import save_model
    from napari_mprnet.model import MPRNet, MPRNetConfig

    if args.device.startswith("cuda"):
        count = torch.cuda.device_count()
        args.workers = [n for n in args.workers if n <= count] or [1]
    work = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.workdir))
    try:
        torch.manual_seed(0)
        weights = save_model(MPRNet(MPRNetConfig(**CONFIGS[args.config])).eval(),
                             work / "model.safetensors")
        source = work / "input.zarr"
        start = time.perf_counter()
        make_input(source, args.size)
        print(f"input {args.size}x{args.size} uint16 zarr written in "
              f"{time.perf_counter() - start:.1f} s; config {args.config}, tiles "
              f"{args.tile}/{args.overlap}, chunks {args.chunk}, device {args.device}, "
              f"{os.cpu_count()} CPUs", file=sys.stderr)
        rows = []
        for n in args.workers:
            rows.append(run_one(n, args, weights, source, work))
            print(f"  {n} worker(s): {rows[-1]['seconds']:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["mpix_per_s"] / rows[0]["workers"]
    print(f"\n{'workers':>7} {'time s':>8} {'Mpix/s':>8} {'speed-up':>8} {'effic.':>7} "
          f"{'blocks':>6} {'peak RSS/worker MiB':>22} {'loads':>6}")
    for row in rows:
        row["speedup"] = row["mpix_per_s"] / rows[0]["mpix_per_s"]
        row["efficiency"] = row["mpix_per_s"] / (base * row["workers"])
        peaks = row["worker_peak_rss_mib"]
        print(f"{row['workers']:>7} {row['seconds']:>8.1f} {row['mpix_per_s']:>8.3f} "
              f"{row['speedup']:>8.2f} {row['efficiency']:>7.0%} {row['blocks']:>6} "
              f"{f'{min(peaks):.0f}-{max(peaks):.0f}':>22} "
              f"{'/'.join(map(str, row['model_loads_per_worker'])):>6}")
    client_peak = _peak_rss_bytes() / 2**20
    print(f"client peak RSS {client_peak:.0f} MiB (input is "
          f"{args.size ** 2 * 2 / 2**20:.0f} MiB)")
    if args.json:
        args.json.write_text(json.dumps({
            "size": args.size, "config": args.config, "tile": args.tile,
            "overlap": args.overlap, "chunk": args.chunk, "device": args.device,
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "client_peak_rss_mib": client_peak, "rows": rows,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

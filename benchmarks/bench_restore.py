"""Throughput and peak memory of the tiled engine against a naive whole-image forward.

Each measurement runs in a fresh process so that its peak memory is its own: peak resident
memory above the process's baseline on CPU (model and input loaded), peak allocated memory
on CUDA. The naive pass is what the reference code does: the whole image, fp32, one forward.

    python benchmarks/bench_restore.py                       # small config, 512/1024/2048
    python benchmarks/bench_restore.py --sizes 1024 2048 4096 --config small
    python benchmarks/bench_restore.py --config denoise --device cuda --precision fp16

Prints a table and writes JSON with --json PATH.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time

CONFIGS = {
    "tiny": {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "num_cab": 1},
    "placeholder": {"n_feat": 16, "scale_unetfeats": 8, "scale_orsnetfeats": 8, "num_cab": 2},
    "small": {"n_feat": 32, "scale_unetfeats": 16, "scale_orsnetfeats": 16, "num_cab": 4},
    "derain": {"n_feat": 40, "scale_unetfeats": 20, "scale_orsnetfeats": 16},
    "denoise": {"n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32},
}


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _measure(kind: str, config: str, size: int, device: str, precision: str | None,
             tile: str, overlap: int, queue: mp.Queue) -> None:
    import numpy as np
    import torch

    from napari_mprnet.engine.runner import TiledRunner
    from napari_mprnet.model import MPRNet, MPRNetConfig

    torch.manual_seed(0)
    model = MPRNet(MPRNetConfig(**CONFIGS[config])).eval().to(device)
    image = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
    cuda = device.startswith("cuda")
    with torch.no_grad():  # warm-up: first-call initialisation is not part of either pass
        model(torch.rand(1, 3, 64, 64, device=device))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    start = time.perf_counter()
    try:
        if kind == "naive":
            with torch.no_grad():
                x = torch.from_numpy(image).permute(0, 3, 1, 2).to(device)
                out = model(x)[0].cpu().numpy()
        else:
            tile_size = tile if tile == "auto" else int(tile)
            runner = TiledRunner(model, device, precision, tile_size, overlap)
            out = runner.run(image)[0]
        if cuda:
            torch.cuda.synchronize()
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as err:
        queue.put({"kind": kind, "size": size, "error": f"out of memory ({str(err)[:60]})"})
        return
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if cuda else _rss_bytes()) - base
    result = {"kind": kind, "size": size, "seconds": seconds,
              "mpix_s": size * size / 1e6 / seconds, "peak_gib": peak / 2**30,
              "finite": bool(np.isfinite(out).all())}
    if kind == "tiled":
        result["tile"], result["batch"] = runner.plan(size, size)
    queue.put(result)


def run_case(*args, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(*args, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        return {"kind": args[0], "size": args[2], "error": f"timed out after {timeout:.0f} s"}
    if proc.exitcode != 0 and queue.empty():
        return {"kind": args[0], "size": args[2],
                "error": f"killed (exit {proc.exitcode}; likely out of memory)"}
    return queue.get()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=CONFIGS, default="small")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--tile-size", default="auto")
    parser.add_argument("--tile-overlap", type=int, default=32)
    parser.add_argument("--naive-max", type=int, default=4096,
                        help="skip the naive pass above this size (reported as skipped)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    rows = []
    for size in args.sizes:
        common = (args.config, size, args.device, args.precision, args.tile_size,
                  args.tile_overlap)
        if size <= args.naive_max:
            naive = run_case("naive", *common, timeout=args.timeout)
        else:
            naive = {"kind": "naive", "size": size, "error": "skipped (--naive-max)"}
        tiled = run_case("tiled", *common, timeout=args.timeout)
        rows.append({"size": size, "naive": naive, "tiled": tiled})
        print(_row(size, naive, tiled), flush=True)
    report = {"config": args.config, "device": args.device, "precision": args.precision,
              "tile_size": args.tile_size, "tile_overlap": args.tile_overlap,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "rows": rows}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0


_HEADER_PRINTED = False


def _row(size: int, naive: dict, tiled: dict) -> str:
    global _HEADER_PRINTED
    lines = []
    if not _HEADER_PRINTED:
        lines.append(f"{'size':>6} | {'naive Mpix/s':>12} {'naive GiB':>9} | "
                     f"{'tiled Mpix/s':>12} {'tiled GiB':>9} {'tile':>5} | "
                     f"{'time ratio':>10} {'memory ratio':>12}")
        _HEADER_PRINTED = True

    def cells(r):
        if "error" in r:
            return f"{r['error'][:22]:>22}"
        return f"{r['mpix_s']:12.3f} {r['peak_gib']:9.2f}"

    ratio = mem = "n/a"
    if "error" not in naive and "error" not in tiled:
        ratio = f"{tiled['seconds'] / naive['seconds']:.2f}x"
        mem = f"{tiled['peak_gib'] / max(naive['peak_gib'], 1e-9):.2f}x"
    tile = tiled.get("tile", "-")
    lines.append(f"{size:>6} | {cells(naive)} | {cells(tiled)} {tile!s:>5} | "
                 f"{ratio:>10} {mem:>12}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

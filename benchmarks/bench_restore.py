"""restore() with its defaults against a plain fp32 forward of the same network, side by side.

Everything is measured in one run, each pass in a fresh process (so that its peak memory is
its own: peak resident memory above the process's baseline with the model and image loaded):

- ``restore``: ``napari_mprnet.restore(image, task)`` with every default (on a CPU: bf16
  autocast where the CPU has native bf16, channels-last, small tiles one at a time, every
  physical core);
- ``plain fp32``: the same network, fp32, NCHW, eager, ``torch.inference_mode``, over the
  same pixels cut into non-overlapping blocks of ``--block`` px (512: the network's best
  fp32 block on a CPU; no tile overlap, no blending, nothing but the forward passes);
- the hardware's limit: the bf16 (and fp32) matmul GFLOP/s of this machine, measured in the
  same run, and the fraction of it that ``restore`` reaches (network FLOPs per pixel from
  ``torch.utils.flop_counter``);
- classical baselines on the same (512 px) image: BM3D (``bm3d`` package, true sigma) and
  scikit-image NL-means (fast mode, sigma estimated);
- the peak memory of ``restore`` per image size (``--memory-sizes``).

Wall-clock Mpix/s and Mpix per CPU-second (process time, all threads) are both reported: on
a machine shared with other jobs the second is the steadier measure of the work done.

The image is the scikit-image camera photograph (mirror-tiled to the size) with Gaussian
noise of sigma 25/255, grey uint8 as a user would load it.

    python benchmarks/bench_restore.py                                  # bundled denoiser
    python benchmarks/bench_restore.py --sizes 512 1024 2048 --memory-sizes 1024 4096
    python benchmarks/bench_restore.py --json docs/benchmarks/restore_cpu_2core.json

Prints a table; ``--json PATH`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time

SIGMA = 25.0


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def noisy_camera(size: int):
    """The camera photograph mirror-tiled to ``size`` x ``size``, noise sigma 25, uint8."""
    import numpy as np
    from skimage import data

    clean = data.camera().astype(np.float32)
    reps = -(-size // clean.shape[0])
    row = np.concatenate([clean if i % 2 == 0 else clean[:, ::-1] for i in range(reps)], 1)
    tiled = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps)], 0)
    tiled = tiled[:size, :size]
    noisy = tiled + np.random.default_rng(0).normal(0.0, SIGMA, tiled.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), tiled / 255.0


def _worker(kind: str, task: str, size: int, options: dict, queue: mp.Queue) -> None:
    try:
        queue.put(_measure(kind, task, size, options))
    except Exception as error:  # noqa: BLE001 - report, don't hang the parent
        queue.put({"kind": kind, "size": size, "error": f"{type(error).__name__}: {error}"})


def _measure(kind: str, task: str, size: int, options: dict) -> dict:
    if options.get("threads"):
        os.environ["NAPARI_MPRNET_THREADS"] = str(options["threads"])  # restore()'s count
    import numpy as np
    import torch

    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))  # everything else's

    from napari_mprnet import restore
    from napari_mprnet.api import prepare_model

    image, _clean = noisy_camera(size)
    result: dict = {"kind": kind, "size": size}
    if kind in ("bm3d", "nl-means"):
        scaled = image.astype(np.float32) / 255.0
        start, cpu_start = time.perf_counter(), time.process_time()
        if kind == "bm3d":
            import bm3d

            bm3d.bm3d(scaled, sigma_psd=SIGMA / 255.0)
        else:
            from skimage.restoration import denoise_nl_means, estimate_sigma

            sigma = float(estimate_sigma(scaled))
            denoise_nl_means(scaled, h=0.8 * sigma, sigma=sigma, fast_mode=True,
                             patch_size=5, patch_distance=6)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        return {**result, "seconds": seconds, "cpu_seconds": cpu,
                "mpix_s": size * size / 1e6 / seconds, "mpix_per_cpu_s": size * size / 1e6 / cpu}
    model = prepare_model(task, task)
    base = _rss_bytes()
    if kind == "restore":
        from napari_mprnet.engine.devices import describe_device
        from napari_mprnet.engine.runner import TiledRunner

        runner = TiledRunner(model, "auto")  # what restore() builds from its defaults
        result.update(precision=runner.precision, channels_last=runner.channels_last,
                      device=describe_device(runner.device))
        result["tile"], result["batch"] = runner.plan(size, size)
        steps: list[float] = []
        start, cpu_start = time.perf_counter(), time.process_time()
        out = restore(image, task, progress=lambda done, total: steps.append(
            time.perf_counter() - start))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        result.update(progress_events=len(steps), first_event_s=steps[0] if steps else None)
    else:
        block = int(options["block"])
        x = torch.from_numpy(image.astype(np.float32) / 255.0)[None, None].expand(1, 3, -1, -1)
        start, cpu_start = time.perf_counter(), time.process_time()
        pieces = []
        with torch.inference_mode():
            for top in range(0, size, block):
                for left in range(0, size, block):
                    piece = x[..., top:top + block, left:left + block].contiguous()
                    pieces.append(model(piece)[0].mean(1))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        out = pieces[0].numpy()
    peak = _rss_bytes() - base
    return {**result, "seconds": seconds, "cpu_seconds": cpu,
            "mpix_s": size * size / 1e6 / seconds, "mpix_per_cpu_s": size * size / 1e6 / cpu,
            "peak_gib": peak / 2**30, "finite": bool(np.isfinite(out).all()),
            "threads": torch.get_num_threads()}


def run_case(kind: str, task: str, size: int, options: dict, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(kind, task, size, options, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        return {"kind": kind, "size": size, "error": f"timed out after {timeout:.0f} s"}
    if proc.exitcode != 0 and queue.empty():
        return {"kind": kind, "size": size,
                "error": f"killed (exit {proc.exitcode}; likely out of memory)"}
    return queue.get()


def matmul_gflops(dtype_name: str, n: int = 1024, repeats: int = 8) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n`` x ``n`` matmul in fp32 or bf16."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def network_flops_per_pixel(task: str) -> float:
    """Forward FLOPs per pixel of the bundled network (torch's FLOP counter, 128x128)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_mprnet.api import prepare_model

    model = prepare_model(task, task)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.rand(1, model.config.in_c, 128, 128))
    return counter.get_total_flops() / 128**2


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="denoise", help="bundled model (default: denoise)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[],
                        help="extra sizes at which only restore() runs (peak memory)")
    parser.add_argument("--block", type=int, default=512,
                        help="block edge of the plain fp32 forward (default 512)")
    parser.add_argument("--no-classical", action="store_true", help="skip BM3D and NL-means")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every pass (default: restore() picks every "
                             "physical core, the others torch's default)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {"task": args.task, "threads": args.threads, "torch": torch.__version__,
                    "machine": platform.processor() or platform.machine(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "load_before": _load(), "rows": []}
    report["gflops_per_pixel"] = network_flops_per_pixel(args.task) / 1e9
    report["matmul_gflops"] = {name: matmul_gflops(name) for name in ("fp32", "bf16")}
    print(f"network {report['gflops_per_pixel'] * 1e3:.2f} MFLOP/pixel; matmul peak "
          f"fp32 {report['matmul_gflops']['fp32']:.0f}, bf16 "
          f"{report['matmul_gflops']['bf16']:.0f} GFLOP/s; load {report['load_before']}",
          flush=True)
    options = {"block": args.block, "threads": args.threads}
    for size in args.sizes:
        plain = run_case("plain fp32", args.task, size, options, args.timeout)
        restored = run_case("restore", args.task, size, options, args.timeout)
        row = {"size": size, "plain": plain, "restore": restored}
        if "error" not in plain and "error" not in restored:
            row["speedup"] = restored["mpix_s"] / plain["mpix_s"]
            # CPU time is what a shared machine cannot blur: the ratio of work per pixel
            row["speedup_cpu_time"] = restored["mpix_per_cpu_s"] / plain["mpix_per_cpu_s"]
            gflops = restored["mpix_s"] * 1e6 * report["gflops_per_pixel"]
            row["restore_gflops"] = gflops
            row["fraction_of_bf16_peak"] = gflops / report["matmul_gflops"]["bf16"]
        report["rows"].append(row)
        print(_row(row), flush=True)
    report["memory"] = [run_case("restore", args.task, size, options, args.timeout)
                        for size in args.memory_sizes]
    for entry in report["memory"]:
        print(f"restore {entry['size']}²: " + (entry.get("error") or
              f"{entry['mpix_s']:.3f} Mpix/s, peak {entry['peak_gib']:.2f} GiB"), flush=True)
    if not args.no_classical:
        report["classical"] = [run_case(kind, args.task, 512, options, args.timeout)
                               for kind in ("bm3d", "nl-means")]
        for entry in report["classical"]:
            print(f"{entry['kind']} 512²: " + (entry.get("error") or
                  f"{entry['mpix_s']:.3f} Mpix/s"), flush=True)
    report["load_after"] = _load()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return report


def _row(row: dict) -> str:
    def cell(result: dict) -> str:
        if "error" in result:
            return result["error"][:40]
        return f"{result['mpix_s']:.3f} Mpix/s, {result['peak_gib']:.2f} GiB"

    text = f"{row['size']}²: plain fp32 {cell(row['plain'])} | restore {cell(row['restore'])}"
    if "speedup" in row:
        restored = row["restore"]
        text += (f" ({restored['precision']}, tile {restored['tile']}, "
                 f"{restored['progress_events']} events, first at "
                 f"{restored['first_event_s']:.1f} s) | {row['speedup']:.2f}x "
                 f"(CPU time {row['speedup_cpu_time']:.2f}x), "
                 f"{100 * row['fraction_of_bf16_peak']:.0f}% of the bf16 matmul peak")
    return text


if __name__ == "__main__":
    main()
    sys.exit(0)

"""restore() on a CPU, side by side in one run: its defaults, the eager path and plain fp32.

Passes, each in a fresh process (its first call and its peak memory are its own):

- ``defaults``: ``restore(image, task)`` with every default: on a CPU the OpenVINO backend
  where it is installed (bf16 where the CPU computes it natively and the model passes its bf16
  check, f32 elsewhere), balanced tiles of at most 544 px, every physical core;
- ``eager``: ``restore(image, task, backend="eager")``: the engine's path before OpenVINO
  (bf16 autocast and channels-last where the CPU has native bf16, tiles of at most 384 px);
- ``plain fp32``: the same network in fp32, NCHW, eager, ``torch.inference_mode``, over the
  same pixels in non-overlapping blocks of ``--block`` px (nothing but the forward passes).

For the two ``restore`` passes: the first call in a new process (``defaults`` twice: with an
empty OpenVINO cache, "cold", and with the cache written by the cold pass, "warm"; the first
call includes loading the model and its bf16 check), then the steady state (a second call in
the same process), and the peak resident memory above the process's baseline (image made,
nothing loaded). Mpix/s is wall-clock; Mpix per CPU-second (all threads) is reported too,
since other jobs on a shared machine blur the first far more than the second.

``--isa-cap AVX2`` repeats every pass with ``ONEDNN_MAX_CPU_ISA=AVX2`` (and without native
bf16): a stand-in for a CPU without AVX-512 and bf16. Each such pass records which kernels
torch's oneDNN and OpenVINO's CPU plugin actually used, to show that both honour the cap.

``--corpus DIR`` adds the quality check: PSNR against the clean image on the real held-out
set of ``bench_quality.py`` (photographs with Gaussian noise, microscopy fields with
Poisson-Gaussian noise), each case restored by the defaults, by the eager path and by eager
fp32; reported as PSNR(path) - PSNR(fp32), mean and worst.

    python benchmarks/bench_restore.py --sizes 512 1024 2048 --threads 2 --isa-cap AVX2 \\
        --corpus ~/.cache/napari-mprnet/corpus --json docs/benchmarks/restore_openvino.json

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
import tempfile
import time
from pathlib import Path

SIGMA = 25.0
#: What a pass runs: (name shown, restore() keyword arguments, OpenVINO cache state).
RESTORE_PASSES = {
    "defaults cold": ({}, "empty"),
    "defaults warm": ({}, "shared"),
    "eager": ({"backend": "eager"}, "shared"),
}


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


def _timed(function):
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - cpu_start


def _rates(size: int, seconds: float, cpu: float) -> dict:
    return {"seconds": seconds, "cpu_seconds": cpu, "mpix_s": size * size / 1e6 / seconds,
            "mpix_per_cpu_s": size * size / 1e6 / cpu}


def _measure(kind: str, size: int, options: dict) -> dict:
    image, _clean = noisy_camera(size)
    import numpy as np
    import torch

    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    from napari_mprnet import restore

    task = options["task"]
    result: dict = {"kind": kind, "size": size}
    base = _rss_bytes()
    if kind == "plain fp32":
        from napari_mprnet.api import prepare_model

        model = prepare_model(task, task)
        block = int(options["block"])
        x = torch.from_numpy(image.astype(np.float32) / 255.0)[None, None].expand(1, 3, -1, -1)

        def plain():
            with torch.inference_mode():
                return [model(x[..., t:t + block, s:s + block].contiguous())[0].mean(1)
                        for t in range(0, size, block) for s in range(0, size, block)]

        out, seconds, cpu = _timed(plain)
        result["steady"] = _rates(size, seconds, cpu)
        out = out[0].numpy()
    else:
        from napari_mprnet.engine.devices import describe_device
        from napari_mprnet.engine.pipeline import Restorer

        kwargs = RESTORE_PASSES[kind][0]
        steps: list[float] = []
        start = time.perf_counter()
        out, seconds, cpu = _timed(lambda: restore(image, task, progress=lambda d, t: steps.append(
            time.perf_counter() - start), **kwargs))
        result["first"] = {**_rates(size, seconds, cpu), "first_progress_s": steps[0]}
        out, seconds, cpu = _timed(lambda: restore(image, task, **kwargs))
        result["steady"] = _rates(size, seconds, cpu)
        runner = Restorer(None, task, **kwargs).runner  # what restore() built (cached parts)
        grid_tile, _ = runner.plan(size, size)
        result.update(backend=runner.backend.active, precision=runner.precision,
                      tile=grid_tile, progress_events=len(steps),
                      device=describe_device(runner.device))
        hint = getattr(runner.backend.current, "hint", None)
        if hint is not None:
            result["openvino_precision"] = hint
    result.update(peak_gib=(_rss_bytes() - base) / 2**30, finite=bool(np.isfinite(out).all()),
                  threads=torch.get_num_threads())
    if options.get("isa_report"):
        result["isa"] = isa_report()
    return result


def isa_report() -> dict:
    """The kernels torch's oneDNN and OpenVINO's CPU plugin use for a 3x3 convolution."""
    import torch

    report: dict = {"onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}
    x = torch.rand(1, 32, 64, 64).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).to(memory_format=torch.channels_last)
    with tempfile.TemporaryFile(mode="w+") as capture:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                conv(x)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    conv(x)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        lines = capture.read().splitlines()
    report["torch_isa"] = next((ln.split("isa:")[1] for ln in lines if "isa:" in ln), None)
    report["torch_conv"] = sorted({ln.split(",")[6] for ln in lines
                                   if ",exec," in ln and ",convolution," in ln})
    try:
        import openvino as ov

        converted = ov.convert_model(conv.eval(), example_input=torch.rand(1, 32, 64, 64))
        core = ov.Core()
        for hint in ("f32", "bf16"):
            compiled = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                             "PERF_COUNT": True})
            request = compiled.create_infer_request()
            request.infer({0: x.contiguous().numpy()})
            report[f"openvino_conv_{hint}"] = sorted({p.exec_type for p in request.profiling_info
                                                      if p.node_type == "Convolution"})
    except Exception as error:  # noqa: BLE001 - reported, not fatal
        report["openvino_error"] = f"{type(error).__name__}: {error}"
    return report


def quality(corpus: str, task: str, size: int = 256) -> dict:
    """PSNR(path) - PSNR(eager fp32) on the real held-out set (see the module docstring)."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_quality

    from napari_mprnet import restore
    from napari_mprnet.engine.pipeline import Restorer

    images = bench_quality.real_held_out_images(corpus, size, photos=8, fields=4)
    cases = argparse.Namespace(sigmas=bench_quality.REAL_SIGMAS,
                               photons=bench_quality.REAL_PHOTONS, corpus=corpus)
    paths = {"defaults": {}, "eager": {"backend": "eager"},
             "fp32": {"backend": "eager", "precision": "fp32"}}
    deltas: dict[str, list[float]] = {"defaults": [], "eager": []}
    for _group, _level, group_cases in bench_quality.CASES[task](images, cases):
        for _name, clean, degraded, _info in group_cases:
            psnr = {name: bench_quality._metrics(restore(
                degraded, task, normalize="none", rgb=degraded.ndim == 3, **kwargs), clean)[0]
                for name, kwargs in paths.items()}
            for name, values in deltas.items():
                values.append(psnr[name] - psnr["fp32"])
    runner = Restorer(None, task).runner
    return {"cases": len(deltas["defaults"]), "defaults_backend": runner.backend.active,
            "defaults_precision": runner.precision,
            **{f"{name}_mean_db": float(np.mean(v)) for name, v in deltas.items()},
            **{f"{name}_worst_db": float(np.min(v)) for name, v in deltas.items()}}


def _worker(call, args, queue) -> None:
    try:
        queue.put(call(*args))
    except Exception as error:  # noqa: BLE001 - report, don't hang the parent
        queue.put({"error": f"{type(error).__name__}: {error}"})


def in_process(call, args: tuple, env: dict, timeout: float) -> dict:
    """``call(*args)`` in a fresh (spawned) process with ``env`` added to its environment."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update({k: v for k, v in env.items() if v is not None})
    for name in [k for k, v in env.items() if v is None]:
        os.environ.pop(name, None)
    try:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(call, args, queue))
        proc.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        return {"error": f"timed out after {timeout:.0f} s"}
    if queue.empty():
        return {"error": f"killed (exit {proc.exitcode}; likely out of memory)"}
    return queue.get()


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _prime(task: str) -> dict:
    """Fill the OpenVINO cache: restore a small image with the defaults."""
    import numpy as np

    from napari_mprnet import restore

    _, seconds, cpu = _timed(lambda: restore(np.zeros((64, 64), np.uint8), task))
    return {"seconds": seconds, "cpu_seconds": cpu}


def run_setting(label: str, env: dict, args: argparse.Namespace, cache: str) -> dict:
    """Every pass at every size under one environment (native, or the ISA cap); ``cache``
    is the OpenVINO cache of the "warm" passes, filled first."""
    options = {"task": args.task, "block": args.block, "threads": args.threads,
               "isa_report": bool(env.get("ONEDNN_MAX_CPU_ISA"))}
    threads = {"NAPARI_MPRNET_THREADS": str(args.threads) if args.threads else None}
    primed = in_process(_prime, (args.task,), {**env, **threads, "NAPARI_MPRNET_CACHE": cache},
                        args.timeout)
    print(f"[{label}] cache filled in {primed.get('seconds', float('nan')):.1f} s", flush=True)
    rows = []
    capped = bool(env.get("ONEDNN_MAX_CPU_ISA"))
    for size in (args.isa_sizes or args.sizes) if capped else args.sizes:
        row: dict = {"size": size}
        with tempfile.TemporaryDirectory() as empty:
            for kind, (_kwargs, state) in RESTORE_PASSES.items():
                where = {"NAPARI_MPRNET_CACHE": empty if state == "empty" else cache}
                row[kind] = in_process(_measure, (kind, size, options),
                                       {**env, **threads, **where}, args.timeout)
        if size in args.plain_sizes:
            row["plain fp32"] = in_process(_measure, ("plain fp32", size, options),
                                           {**env, **threads}, args.timeout)
        print(_row(label, row), flush=True)
        rows.append(row)
    result = {"label": label, "env": env, "rows": rows, "prime": primed}
    if args.corpus and not env.get("ONEDNN_MAX_CPU_ISA"):
        result["quality"] = in_process(quality, (args.corpus, args.task),
                                       {**env, **threads, "NAPARI_MPRNET_CACHE": cache},
                                       args.timeout * 4)
        print(f"{label} quality: {result['quality']}", flush=True)
    return result


def _row(label: str, row: dict) -> str:
    def cell(name: str, part: str = "steady") -> str:
        result = row.get(name)
        if result is None:
            return "-"
        if "error" in result:
            return result["error"][:60]
        return f"{result[part]['mpix_s']:.3f}"

    text = (f"[{label}] {row['size']}²: steady Mpix/s defaults {cell('defaults warm')} "
            f"eager {cell('eager')} plain fp32 {cell('plain fp32')} | first call s: "
            + " ".join(f"{name} {row[name]['first']['seconds']:.1f}" for name in RESTORE_PASSES
                       if "first" in row.get(name, {})))
    warm, eager = row.get("defaults warm", {}), row.get("eager", {})
    if "steady" in warm and "steady" in eager:
        text += (f" | defaults/eager {warm['steady']['mpix_s'] / eager['steady']['mpix_s']:.2f}x"
                 f" ({warm.get('backend')} {warm.get('openvino_precision')}, tile "
                 f"{warm.get('tile')}; peak {warm['peak_gib']:.2f} vs {eager['peak_gib']:.2f}"
                 " GiB)")
    return text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="denoise", help="bundled model (default: denoise)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--plain-sizes", type=int, nargs="*", default=None,
                        help="sizes of the plain fp32 pass (default: every size)")
    parser.add_argument("--block", type=int, default=512,
                        help="block edge of the plain fp32 forward (default 512)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every pass (default: restore()'s own rule)")
    parser.add_argument("--isa-cap", default=None, metavar="ISA",
                        help="repeat every pass with ONEDNN_MAX_CPU_ISA=ISA (e.g. AVX2)")
    parser.add_argument("--isa-sizes", type=int, nargs="+", default=None,
                        help="sizes of the --isa-cap passes (default: --sizes)")
    parser.add_argument("--corpus", default=None, help="real-image corpus: the quality check")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None, metavar="JSON",
                        help="print the tables of an earlier --json report and stop")
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as handle:
            report = json.load(handle)
        from restore_tables import markdown

        print(markdown(report))
        return report
    if args.plain_sizes is None:
        args.plain_sizes = list(args.sizes)

    import torch

    report: dict = {"task": args.task, "threads": args.threads, "torch": torch.__version__,
                    "cpu": _cpu_name(), "cores": os.cpu_count(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "load_before": _load(), "settings": []}
    try:
        import openvino

        report["openvino"] = openvino.__version__
    except ImportError:
        report["openvino"] = None
    print(f"{report['cpu']}, {report['cores']} cores; torch {report['torch']}, openvino "
          f"{report['openvino']}; load {report['load_before']}", flush=True)
    settings = [("native", {"ONEDNN_MAX_CPU_ISA": None})]
    if args.isa_cap:
        settings.append((f"ONEDNN_MAX_CPU_ISA={args.isa_cap}",
                         {"ONEDNN_MAX_CPU_ISA": args.isa_cap}))
    for label, env in settings:
        with tempfile.TemporaryDirectory() as cache:  # each setting fills its own cache
            report["settings"].append(run_setting(label, env, args, cache))
    report["load_after"] = _load()
    print(f"load after {report['load_after']}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)

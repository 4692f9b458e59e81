"""Fine-tuning speed and memory: ``finetune()`` against a plain fp32 training loop.

For every network configuration two measurements run, each in its own subprocess (so that the
peak memory of one does not hide the other's):

- ``plain fp32``: the baseline, a bare loop (Adam + the paper's loss on pre-made random
  batches already on the device; no sampling, no autocast, no checks);
- ``finetune``: :func:`napari_mprnet.training.trainer.finetune` on synthetic noisy/clean
  images with the device defaults (bf16 autocast and channels-last on CUDA, fp32 on CPU),
  including patch sampling, the non-finite guard and gradient clipping; no validation.

Steps/s are measured after warm-up steps. Peak memory is ``torch.cuda.max_memory_allocated``
on CUDA and the worker process's peak resident set size (``getrusage``) on CPU.

Usage::

    python benchmarks/bench_finetune.py --quick          # tiny + small, few steps
    python benchmarks/bench_finetune.py                  # more steps, GPU-sized batches on CUDA
    python benchmarks/bench_finetune.py --full           # also the official denoise size
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CONFIGS = {
    "tiny": {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "num_cab": 1},
    "small": {"n_feat": 32, "scale_unetfeats": 16, "scale_orsnetfeats": 16, "num_cab": 4},
    "denoise": {"n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32, "num_cab": 8},
}


def _peak_bytes(device) -> int:
    import resource

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def _worker(spec: dict) -> dict:
    import numpy as np
    import torch

    from napari_mprnet.engine.devices import describe_device, resolve_device
    from napari_mprnet.model import MPRNet, MPRNetConfig
    from napari_mprnet.training.losses import mprnet_loss
    from napari_mprnet.training.trainer import finetune

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = resolve_device(spec["device"])
    torch.manual_seed(0)
    net = MPRNet(MPRNetConfig(**CONFIGS[spec["config"]]))
    patch, batch = spec["patch"], spec["batch"]
    warmup, steps = spec["warmup"], spec["steps"]
    total = warmup + steps
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    precision = "fp32"
    if spec["mode"] == "plain":
        net = net.to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, patch, patch, generator=gen).to(device)
        y = torch.rand(batch, 3, patch, patch, generator=gen).to(device)
        for _ in range(total):
            loss = mprnet_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # the same per-step host sync as the trainer
            times.append(time.perf_counter())
    else:
        rng = np.random.default_rng(0)
        size = max(2 * patch, 256)
        clean = rng.random((4, size, size), dtype=np.float32)
        noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)

        def tick(event: dict) -> None:
            times.append(time.perf_counter())

        result = finetune(list(noisy), list(clean), model=net, steps=total, patch_size=patch,
                          batch_size=batch, learning_rate=1e-4, device=spec["device"],
                          val_fraction=0, normalize="none", callback=tick,
                          compile=spec.get("compile", False))
        precision = result.precision + (" compiled" if spec.get("compile") else "")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    measured = times[warmup - 1:]
    rate = (len(measured) - 1) / (measured[-1] - measured[0])
    return {"steps_per_s": rate, "peak_bytes": _peak_bytes(device), "precision": precision,
            "device": describe_device(device), "threads": torch.get_num_threads()}


def _run_worker(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return {"error": tail[0] if tail else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, small batches")
    parser.add_argument("--full", action="store_true", help="also the official denoise size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per run")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="also time compile=True")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    import torch

    from napari_mprnet.engine.devices import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    names = ["tiny", "small"] + (["denoise"] if args.full else [])
    shapes = {  # (patch, batch) per configuration
        "tiny": (64, 4) if args.quick or not gpu else (128, 16),
        "small": (64, 2) if not gpu else ((64, 8) if args.quick else (128, 16)),
        "denoise": (64, 1) if not gpu else (128, 8 if args.quick else 16),
    }
    steps = args.steps or (5 if args.quick else (40 if gpu else 10))
    warmup = 2 if args.quick else 5
    rows = []
    for name in names:
        patch, batch = shapes[name]
        modes = [("plain", False), ("finetune", False)]
        if args.compile:
            modes.append(("finetune", True))
        base = None
        for mode, compiled in modes:
            spec = {"config": name, "mode": mode, "device": str(device), "patch": patch,
                    "batch": batch, "steps": steps, "warmup": warmup, "threads": args.threads,
                    "compile": compiled}
            res = _run_worker(spec)
            if mode == "plain":
                base = res
            rows.append((name, patch, batch, mode, res, base))
    first = next((r[4] for r in rows if "device" in r[4]), {})
    print(f"device: {first.get('device', device)}; torch {torch.__version__}; "
          f"{first.get('threads', '?')} CPU threads; {steps} measured steps after {warmup} "
          "warm-up steps")
    header = (f"{'config':8} {'patch':>5} {'batch':>5} {'mode':10} {'precision':14} "
              f"{'steps/s':>9} {'Mpix/s':>8} {'peak MiB':>9} {'vs plain':>9}")
    print(header)
    print("-" * len(header))
    for name, patch, batch, mode, res, base in rows:
        if "error" in res:
            print(f"{name:8} {patch:5d} {batch:5d} {mode:10} failed: {res['error']}")
            continue
        rate = res["steps_per_s"]
        ratio = (f"{rate / base['steps_per_s']:8.2f}x"
                 if base and "steps_per_s" in base and mode != "plain" else f"{'-':>9}")
        print(f"{name:8} {patch:5d} {batch:5d} {mode:10} {res['precision']:14} {rate:9.2f} "
              f"{rate * batch * patch * patch / 1e6:8.2f} {res['peak_bytes'] / 2**20:9.0f} "
              f"{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tuning speed and memory: ``finetune()`` against a plain fp32 training loop.

For every network configuration two measurements run, each in its own subprocess (so that the
peak memory of one does not hide the other's):

- ``plain fp32``: the baseline, a bare loop (Adam + the paper's loss on pre-made random
  batches already on the device; no sampling, no autocast, no checks);
- ``finetune fp32``: :func:`napari_mprnet.training.trainer.finetune` forced to fp32 and
  NCHW (the CPU loop before bf16 training), on synthetic noisy/clean images, including patch
  sampling, the non-finite guard and gradient clipping; no validation;
- ``finetune``: the same with the device defaults (``precision="auto"``: bf16 autocast and
  channels-last on CUDA and on CPUs with native bf16, fp32 elsewhere); batches are prepared
  in a worker thread ahead of the step.

``--quality N`` also trains the bundled configuration from the same initialisation for N
steps in fp32 and with the defaults on the same synthetic denoising pairs, and scores both
final models in fp32 on held-out pairs (validation PSNR after the same number of steps).

Steps/s are measured after warm-up steps; so is the process CPU time per step (all threads,
the worker thread included), whose ratio stays meaningful on a machine shared with other jobs. Peak memory is ``torch.cuda.max_memory_allocated``
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
    "bundled": {"n_feat": 32, "scale_unetfeats": 16, "scale_orsnetfeats": 16, "num_cab": 2},
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
    cpu: list[float] = []  # process CPU seconds (all threads): the work, whatever the load
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
            cpu.append(time.process_time())
    else:
        rng = np.random.default_rng(0)
        size = max(2 * patch, 256)
        clean = rng.random((4, size, size), dtype=np.float32)
        noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)

        def tick(event: dict) -> None:
            if "loss" in event:  # step events only (not the plan / rate reports)
                times.append(time.perf_counter())
                cpu.append(time.process_time())

        forced = {"precision": "fp32", "channels_last": False} if spec["mode"] == "fp32" else {}
        result = finetune(list(noisy), list(clean), model=net, steps=total, patch_size=patch,
                          batch_size=batch, learning_rate=1e-4, device=spec["device"],
                          val_fraction=0, normalize="none", callback=tick,
                          compile=spec.get("compile", False), **forced)
        precision = result.precision + (" compiled" if spec.get("compile") else "")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    measured = times[warmup - 1:]
    rate = (len(measured) - 1) / (measured[-1] - measured[0])
    cpu_measured = cpu[warmup - 1:]
    cpu_per_step = (cpu_measured[-1] - cpu_measured[0]) / (len(cpu_measured) - 1)
    return {"steps_per_s": rate, "cpu_s_per_step": cpu_per_step, "peak_bytes": _peak_bytes(device), "precision": precision,
            "device": describe_device(device), "threads": torch.get_num_threads()}


def _quality_worker(spec: dict) -> dict:
    """Train from one initialisation for ``steps``; held-out PSNR of the result in fp32."""
    import numpy as np
    import torch

    from napari_mprnet.model import MPRNet, MPRNetConfig
    from napari_mprnet.training.degradations import PairGenerator
    from napari_mprnet.training.metrics import psnr
    from napari_mprnet.training.trainer import finetune

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    train = PairGenerator("denoise", "train", 96, 0, pool_size=16,
                          pool_image_size=128).pairs(64)
    val = PairGenerator("denoise", "val", 128, 0, pool_size=8, pool_image_size=128).pairs(8)
    torch.manual_seed(0)
    net = MPRNet(MPRNetConfig(**CONFIGS["bundled"]))
    forced = {"precision": "fp32", "channels_last": False} if spec["mode"] == "fp32" else {}
    started = time.perf_counter()
    result = finetune(train[0], train[1], model=net, steps=spec["steps"],
                      patch_size=spec["patch"], batch_size=spec["batch"], learning_rate=1e-3,
                      device=spec["device"], val_fraction=0, normalize="none", seed=0,
                      **forced)
    elapsed = time.perf_counter() - started
    model = result.model.float().eval()
    scores = []
    with torch.inference_mode():
        for noisy, clean in zip(*val):
            grey = noisy.ndim == 2
            x = torch.from_numpy(noisy[None, None] if grey else noisy.transpose(2, 0, 1)[None])
            x = x.expand(-1, 3, -1, -1) if grey else x
            out = model(x.contiguous())[0][0].clamp(0, 1)
            out = out.mean(0) if grey else out.permute(1, 2, 0)
            scores.append(psnr(out.numpy(), clean))
    return {"val_psnr": float(np.mean(scores)), "precision": result.precision,
            "seconds": elapsed}


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
    parser.add_argument("--configs", default=None,
                        help="comma-separated configurations (default tiny,small[,denoise])")
    parser.add_argument("--patch", type=int, help="patch side for every configuration")
    parser.add_argument("--batch", type=int, help="batch size for every configuration")
    parser.add_argument("--quality", type=int, default=0, metavar="STEPS",
                        help="also compare held-out PSNR after STEPS steps, fp32 vs defaults "
                        "(patch/batch: --patch/--batch, default 64/8)")
    parser.add_argument("--quality-only", action="store_true", help="skip the speed rows")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        worker = _quality_worker if spec.get("quality") else _worker
        print(json.dumps(worker(spec)))
        return 0

    import torch

    from napari_mprnet.engine.devices import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    names = (args.configs.split(",") if args.configs
             else ["tiny", "small"] + (["denoise"] if args.full else []))
    shapes = {  # (patch, batch) per configuration
        "tiny": (64, 4) if args.quick or not gpu else (128, 16),
        "small": (64, 2) if not gpu else ((64, 8) if args.quick else (128, 16)),
        "bundled": (64, 8) if not gpu else (128, 16),
        "denoise": (64, 1) if not gpu else (128, 8 if args.quick else 16),
    }
    for name in names:
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
        patch, batch = shapes[name]
        shapes[name] = (args.patch or patch, args.batch or batch)
    steps = args.steps or (5 if args.quick else (40 if gpu else 10))
    warmup = 2 if args.quick else 5
    rows = []
    for name in ([] if args.quality_only else names):
        patch, batch = shapes[name]
        modes = [("plain", False), ("fp32", False), ("finetune", False)]
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
              f"{'steps/s':>9} {'Mpix/s':>8} {'peak MiB':>9} {'vs plain':>9} "
              f"{'cpu s/step':>10} {'cpu vs plain':>12}")
    print(header)
    print("-" * len(header))
    for name, patch, batch, mode, res, base in rows:
        mode = "finetune32" if mode == "fp32" else mode
        if "error" in res:
            print(f"{name:8} {patch:5d} {batch:5d} {mode:10} failed: {res['error']}")
            continue
        rate = res["steps_per_s"]
        ratio = (f"{rate / base['steps_per_s']:8.2f}x"
                 if base and "steps_per_s" in base and mode != "plain" else f"{'-':>9}")
        cpu_step = res["cpu_s_per_step"]
        cpu_ratio = (f"{base['cpu_s_per_step'] / cpu_step:11.2f}x"
                     if base and "cpu_s_per_step" in base and mode != "plain" else f"{'-':>12}")
        print(f"{name:8} {patch:5d} {batch:5d} {mode:10} {res['precision']:14} {rate:9.2f} "
              f"{rate * batch * patch * patch / 1e6:8.2f} {res['peak_bytes'] / 2**20:9.0f} "
              f"{ratio} {cpu_step:10.2f} {cpu_ratio}")
    if args.quality:
        patch, batch = args.patch or 64, args.batch or 8
        print(f"\nheld-out PSNR after {args.quality} steps from one initialisation (bundled "
              f"config, patch {patch}, batch {batch}, lr 1e-3, scored in fp32):")
        for mode in ("fp32", "finetune"):
            spec = {"quality": True, "mode": mode, "device": str(device), "threads": args.threads,
                    "steps": args.quality, "patch": patch, "batch": batch}
            res = _run_worker(spec)
            if "error" in res:
                print(f"  {mode:10} failed: {res['error']}")
                continue
            print(f"  {res['precision']:5} {res['val_psnr']:7.3f} dB  "
                  f"({res['seconds']:.0f} s, {args.quality / res['seconds']:.3f} steps/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU speed of the engine: backends x precisions against the naive whole-image forward.

One run on one device measures, for an MPRNet configuration (default: the official denoise
one, random weights; speed does not depend on the weights):

1. the naive whole-image fp32 forward, as the reference code runs it (out-of-memory is
   reported as such), for every ``--sizes`` image;
2. the tiled engine for each backend x precision (eager fp32/fp16/bf16, compile fp16/bf16,
   tensorrt fp16 where ``torch_tensorrt`` imports): Mpix/s and peak GPU memory, warm-up
   excluded, compilation time reported separately. Every backend runs the same fixed tile
   batch (``--tile-size`` x ``--batch-size``), so one compilation serves every size;
3. numerical cost of fp16/bf16: PSNR of their outputs against the fp32 output on a real
   image (``skimage.data.astronaut`` if importable, else a synthetic one), and, with a
   trained model (``--weights``, or the bundled denoise model once it is trained), PSNR
   against the clean image at sigma 25; and the
   largest difference between the pipelined GPU loops and the plain loop (should be ~1e-6);
4. fine-tuning steps/s (the paper's loss, Adam, random 128x128 batches of 8): a plain fp32
   loop against bf16 autocast + channels-last (+ torch.compile with ``--train-compile``).

``--quick`` off CUDA (the smoke test) shrinks the training batch to 2 x 64x64 and the PSNR
image to 64x64. Writes ``bench_gpu_<device>.json`` and ``bench_gpu_<device>.md`` to ``--out``
(default docs/benchmarks). Needs only torch and numpy (no napari/Qt)::

    PYTHONPATH=src python benchmarks/bench_gpu.py                     # H100/H200: ~4-6 min
    PYTHONPATH=src python benchmarks/bench_gpu.py --quick --sizes 2048
    PYTHONPATH=src python benchmarks/bench_gpu.py --device cpu --config tiny --sizes 128 --quick
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_mprnet.engine.backends import tensorrt_available
from napari_mprnet.engine.runner import TiledRunner, is_out_of_memory
from napari_mprnet.model import MPRNet, MPRNetConfig
from napari_mprnet.training.losses import mprnet_loss

CONFIGS = {
    "tiny": {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "num_cab": 1},
    "small": {"n_feat": 32, "scale_unetfeats": 16, "scale_orsnetfeats": 16, "num_cab": 4},
    "denoise": {"n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32, "num_cab": 8},
}
#: (backend, precision) pairs measured, in order.
MATRIX = [("eager", "fp32"), ("eager", "fp16"), ("eager", "bf16"),
          ("compile", "fp16"), ("compile", "bf16"), ("tensorrt", "fp16")]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Device:
    """Synchronisation and peak-memory bookkeeping (no-ops off CUDA)."""

    def __init__(self, name: str) -> None:
        self.torch = torch.device(name)
        self.cuda = self.torch.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.torch)

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.torch)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.torch) / 2**30 if self.cuda else None

    def label(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name(self.torch)
        return f"cpu ({platform.processor() or platform.machine()}, " \
               f"{torch.get_num_threads()} threads)"

    def slug(self) -> str:
        if not self.cuda:
            return "cpu"
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(self.torch).lower()).strip("-")


def _error(err: BaseException) -> str:
    if is_out_of_memory(err):
        return "out of memory"
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err) else ''}"


def make_model(config: str, device: Device, seed: int = 0) -> MPRNet:
    torch.manual_seed(seed)
    return MPRNet(MPRNetConfig(**CONFIGS[config])).eval().to(device.torch)


# ------------------------------------------------------------------ 1. naive


def bench_naive(model: MPRNet, device: Device, sizes: list[int], reps: int) -> list[dict]:
    rows = []
    for size in sizes:
        row: dict = {"size": size}
        try:
            seconds = _naive_once(model, device, size, reps)
            row.update(seconds=seconds, mpix_s=size * size / 1e6 / seconds,
                       peak_gib=device.peak_gib())
        except Exception as err:  # noqa: BLE001 - out of memory is a result here
            row["error"] = _error(err)
        device.reset_peak()
        rows.append(row)
        log(f"naive fp32 {size}: {_cell(row)}")
    return rows


def _naive_once(model: MPRNet, device: Device, size: int, reps: int) -> float:
    x = torch.rand(1, 3, size, size, device=device.torch)
    device.reset_peak()
    times = []
    with torch.no_grad():
        model(x)[0].cpu()  # warm-up (cuDNN algorithm choice), then timed
        for _ in range(reps):
            device.sync()
            start = time.perf_counter()
            model(x)[0].cpu()
            device.sync()
            times.append(time.perf_counter() - start)
    return float(np.median(times))


# ------------------------------------------------------------------ 2. engine


def bench_engine(model: MPRNet, device: Device, images: dict[int, np.ndarray], args,
                 backend: str, precision: str, reps: int) -> list[dict]:
    rows = []
    options = _backend_options(args, backend)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner = TiledRunner(model, device.torch, precision, args.tile_size,
                                 args.tile_overlap, args.batch_size, backend=backend,
                                 backend_options=options)
            warm_size = min(images)
            device.sync()
            start = time.perf_counter()
            runner.run(images[warm_size])  # warm-up: compilation and cuDNN autotuning
            device.sync()
            warm_s = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        return [{"backend": backend, "precision": precision, "size": s, "error": _error(err)}
                for s in images]
    stats = dict(runner.backend.current.stats)
    fallbacks = [str(w.message)[:200] for w in caught]
    for size, planes in images.items():
        row = {"backend": backend, "active": runner.backend.active, "precision": precision,
               "size": size, "tile": runner.plan(size, size)[0],
               "batch": runner.plan(size, size)[1], "warmup_s": warm_s,
               "compile_s": stats["compile_s"], "compiles": stats["compiles"],
               "fallback_warnings": fallbacks}
        try:
            device.reset_peak()
            times = []
            for _ in range(reps if size <= 4096 else 1):
                device.sync()
                start = time.perf_counter()
                out = runner.run(planes)[0]
                device.sync()
                times.append(time.perf_counter() - start)
            seconds = float(np.median(times))
            row.update(seconds=seconds, mpix_s=size * size / 1e6 / seconds,
                       peak_gib=device.peak_gib(), finite=bool(np.isfinite(out).all()))
            del out
        except Exception as err:  # noqa: BLE001
            row["error"] = _error(err)
        rows.append(row)
        log(f"{backend:>8} {precision} {size}: {_cell(row)} (warm-up {warm_s:.1f} s, "
            f"compile {stats['compile_s']:.1f} s, active {row['active']})")
    del runner
    device.reset_peak()
    return rows


def _backend_options(args, backend: str) -> dict | None:
    if backend == "eager" or not args.compile_backend:
        return None
    return {"compile_backend": args.compile_backend}


# ------------------------------------------------------------------ 3. precision cost


def sample_image(size: int) -> tuple[np.ndarray, str]:
    try:
        from skimage import data

        image = data.astronaut().astype(np.float32) / 255.0
        source = "skimage.data.astronaut"
    except Exception:  # noqa: BLE001 - any failure: a synthetic image
        yy, xx = np.mgrid[0:512, 0:512] / 512.0
        image = np.stack([0.5 + 0.4 * np.sin(8 * xx + 3 * yy), (xx * yy) ** 0.5,
                          ((xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.08).astype(float)], -1)
        image = image.astype(np.float32)
        source = "synthetic"
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(image[top:top + size, left:left + size]), source


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2, dtype=np.float64))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def bench_precision(model: MPRNet, device: Device, args, pairs: list[tuple[str, str]]) -> dict:
    clean, source = sample_image(args.psnr_size)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape), 0, 1)
    planes = noisy.astype(np.float32)[None]
    result: dict = {"image": source, "size": list(clean.shape), "sigma": 25, "rows": []}
    same_shape = args.psnr_size >= args.tile_size  # compiled backends reuse their compilation

    def run(net, backend, precision):
        runner = TiledRunner(net, device.torch, precision, args.tile_size, args.tile_overlap,
                             args.batch_size, backend=backend,
                             backend_options=_backend_options(args, backend))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return runner.run(planes)[0][0], runner.backend.active

    reference, _ = run(model, "eager", "fp32")
    # the pipelined loops (device-side / deferred host blending) against the plain loop
    checks = {}
    for label, kwargs in (("plain", {"pipeline": False}),
                          ("pipelined_host", {"pipeline": True, "accumulate": "host"}),
                          ("pipelined_device", {"pipeline": True, "accumulate": "device"})):
        runner = TiledRunner(model, device.torch, "fp32", args.tile_size // 2,
                             args.tile_overlap, args.batch_size, **kwargs)
        checks[label] = runner.run(planes)[0][0]
    result["pipeline_max_abs_diff"] = {
        label: float(np.abs(out - checks["plain"]).max()) for label, out in checks.items()
        if label != "plain"}
    del checks
    for backend, precision in pairs:
        if precision == "fp32" or (backend != "eager" and not same_shape):
            continue
        try:
            out, active = run(model, backend, precision)
            result["rows"].append({
                "model": "bench (random weights)", "backend": backend, "active": active,
                "precision": precision, "psnr_vs_fp32_db": psnr(out, reference),
                "max_abs_vs_fp32": float(np.abs(out - reference).max())})
        except Exception as err:  # noqa: BLE001
            result["rows"].append({"model": "bench (random weights)", "backend": backend,
                                   "precision": precision, "error": _error(err)})
    source = args.weights or _trained_bundled_denoise()
    if source is None:
        result["trained"] = {"error": "skipped: no --weights given and the bundled denoise "
                                      "weights are untrained"}
        log("precision: " + json.dumps(result)[:600])
        return result
    try:  # a trained model: what precision costs in restoration quality
        from napari_mprnet.weights import load_model

        trained = load_model(source).eval().to(device.torch)
        base, _ = run(trained, "eager", "fp32")
        result["trained"] = {"psnr_noisy_db": psnr(noisy, clean),
                             "fp32_psnr_db": psnr(base, clean)}
        for precision in ("fp16", "bf16"):
            out, _ = run(trained, "eager", precision)
            result["trained"][f"{precision}_psnr_db"] = psnr(out, clean)
            result["trained"][f"{precision}_minus_fp32_db"] = psnr(out, clean) - psnr(base, clean)
            result["trained"][f"{precision}_psnr_vs_fp32_db"] = psnr(out, base)
    except Exception as err:  # noqa: BLE001 - bundled weights are optional here
        result["trained"] = {"error": _error(err)}
    log(f"precision: {json.dumps(result)[:600]}")
    return result


def _trained_bundled_denoise() -> str | None:
    """"denoise" if the bundled denoise weights are marked trained, else None."""
    try:
        registry = Path(__file__).resolve().parents[1] / "src" / "napari_mprnet" / \
            "pretrained" / "registry.json"
        if not registry.exists():
            from importlib import resources

            registry = resources.files("napari_mprnet.pretrained") / "registry.json"
        entry = json.loads(registry.read_text()).get("denoise", {})
        return "denoise" if entry.get("trained") else None
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------ 4. fine-tuning


def bench_training(config: str, device: Device, args) -> list[dict]:
    variants = [("fp32", False, False), ("bf16+channels_last", True, False)]
    if args.train_compile:
        variants.append(("bf16+channels_last+compile", True, True))
    rows = []
    for name, amp, compiled in variants:
        row: dict = {"variant": name, "batch": args.train_batch, "crop": args.train_crop}
        try:
            model = make_model(config, device, seed=1).train()
            fmt = torch.channels_last if amp else torch.contiguous_format
            model = model.to(memory_format=fmt)
            optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
            shape = (args.train_batch, 3, args.train_crop, args.train_crop)
            generator = torch.Generator(device=device.torch).manual_seed(0)
            target = torch.rand(shape, device=device.torch, generator=generator)
            noisy = (target + 0.1 * torch.randn(shape, device=device.torch,
                                                generator=generator)).contiguous(
                memory_format=fmt)
            forward = torch.compile(model) if compiled else model
            step = (forward, optimizer, noisy, target, device.torch.type if amp else None)
            device.reset_peak()
            start = time.perf_counter()
            for _ in range(args.train_warmup):
                _train_step(*step)
            device.sync()
            warm_s = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.train_steps):
                loss = _train_step(*step)
            device.sync()
            seconds = time.perf_counter() - start
            row.update(steps_s=args.train_steps / seconds, warmup_s=warm_s,
                       peak_gib=device.peak_gib(), loss=float(loss.detach()))
            del model, optimizer, forward, noisy, target, step
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            row["error"] = _error(err)
        device.reset_peak()
        rows.append(row)
        log(f"train {name}: {row}")
    return rows


def _train_step(forward, optimizer, noisy, target, autocast_device: str | None):
    if autocast_device is not None:
        with torch.autocast(autocast_device, dtype=torch.bfloat16):
            outputs = forward(noisy)
        outputs = [o.float() for o in outputs]
    else:
        outputs = forward(noisy)
    loss = mprnet_loss(outputs, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


# ------------------------------------------------------------------ report


def _cell(row: dict) -> str:
    if "error" in row:
        return row["error"]
    peak = row.get("peak_gib")
    return f"{row['mpix_s']:.2f} Mpix/s" + (f", {peak:.1f} GiB" if peak is not None else "")


def markdown(report: dict) -> str:
    sizes = report["sizes"]
    gib = "" if report["device"]["cuda"] else " (GPU memory n/a on CPU)"
    lines = [f"# MPRNet engine speed on {report['device']['name']}", "",
             (f"config `{report['config']}`, torch {report['torch']}, torch_tensorrt "
              f"{report['torch_tensorrt']}, tile {report['tile_size']} / overlap "
              f"{report['tile_overlap']} / batch {report['batch_size']}; Mpix/s and peak "
              f"GiB{gib}; compile time excluded from Mpix/s."), "",
             "| run | " + " | ".join(f"{s}x{s}" for s in sizes) + " | compile s |",
             "|---|" + "---|" * (len(sizes) + 1)]
    naive = {r["size"]: r for r in report["naive"]}
    if naive:
        lines.append("| naive whole image fp32 | "
                     + " | ".join(_cell(naive[s]) if s in naive else "-" for s in sizes)
                     + " | - |")
    groups: dict = {}
    for row in report["engine"]:
        groups.setdefault((row["backend"], row["precision"]), {})[row["size"]] = row
    for (backend, precision), by_size in groups.items():
        any_row = next(iter(by_size.values()))
        active = any_row.get("active", backend)
        label = f"{backend} {precision}" + (f" (ran {active})" if active != backend else "")
        compile_s = any_row.get("compile_s")
        compile_cell = "-" if compile_s is None else f"{compile_s:.1f}"
        cells = " | ".join(_cell(by_size[s]) if s in by_size else "-" for s in sizes)
        lines.append(f"| {label} | {cells} | {compile_cell} |")
    prec = report.get("psnr", {})
    if prec.get("rows"):
        lines += ["", f"Precision cost on {prec['image']} {prec['size']} (sigma 25 noise):", "",
                  "| backend | precision | PSNR vs fp32 (dB) | max abs diff |", "|---|---|---|---|"]
        for r in prec["rows"]:
            if "error" in r:
                lines.append(f"| {r['backend']} | {r['precision']} | {r['error']} | |")
            else:
                lines.append(f"| {r['backend']} | {r['precision']} | "
                             f"{r['psnr_vs_fp32_db']:.1f} | {r['max_abs_vs_fp32']:.2e} |")
        diffs = prec.get("pipeline_max_abs_diff", {})
        if diffs:
            lines += ["", "Pipelined loops vs the plain loop (fp32, max abs diff): "
                      + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + "."]
        trained = prec.get("trained", {})
        if "fp32_psnr_db" in trained:
            lines += ["", ("Bundled trained denoise model, PSNR vs clean: noisy "
                           f"{trained['psnr_noisy_db']:.2f}, fp32 "
                           f"{trained['fp32_psnr_db']:.2f}, fp16 {trained['fp16_psnr_db']:.2f} "
                           f"({trained['fp16_minus_fp32_db']:+.3f}), bf16 "
                           f"{trained['bf16_psnr_db']:.2f} "
                           f"({trained['bf16_minus_fp32_db']:+.3f}) dB.")]
    if report.get("training"):
        lines += ["", "Fine-tuning (paper loss, Adam, random batches):", "",
                  "| variant | steps/s | peak GiB |", "|---|---|---|"]
        for r in report["training"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | {r['error']} | |")
            else:
                peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
                lines.append(f"| {r['variant']} (batch {r['batch']} x {r['crop']}^2) | "
                             f"{r['steps_s']:.2f} | {peak} |")
    lines += ["", f"Total wall time {report['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", choices=CONFIGS, default="denoise")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--quick", action="store_true",
                        help="one timed repetition, fewer training steps, smaller PSNR image "
                        "off CUDA")
    parser.add_argument("--backends", nargs="+", choices=("eager", "compile", "tensorrt"),
                        default=None, help="default: all on CUDA (tensorrt if importable), "
                        "eager only elsewhere (inductor compiles take minutes on a CPU)")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--tile-overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend for the compile rows (default inductor)")
    parser.add_argument("--psnr-size", type=int, default=None)
    parser.add_argument("--weights", default=None,
                        help="trained model file for the precision-vs-quality check "
                        "(default: the bundled denoise model if it is trained)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--train-compile", action="store_true",
                        help="also time a torch.compile'd training step (compiles ~1-2 min)")
    parser.add_argument("--out", default="docs/benchmarks")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    device = Device(args.device)
    if device.cuda and not torch.cuda.is_available():
        parser.error("CUDA is not available here; use --device cpu")
    if args.backends is None:
        args.backends = ["eager"] + (["compile", "tensorrt"] if device.cuda else [])
    if "tensorrt" in args.backends and not tensorrt_available():
        log("torch_tensorrt is not importable: the tensorrt row is skipped")
        args.backends = [b for b in args.backends if b != "tensorrt"]
    reps = 1 if args.quick else 2
    if args.psnr_size is None:
        args.psnr_size = 512 if device.cuda else (64 if args.quick else 256)
    args.train_warmup, args.train_steps = (1, 2) if args.quick else (3, 10)
    args.train_batch, args.train_crop = 8, 128
    if args.quick and not device.cuda:  # a smoke test on a CPU: the smallest meaningful run
        args.train_warmup, args.train_steps, args.train_batch, args.train_crop = 1, 1, 2, 64
    if device.cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as the reference timings: TF32 allowed
        torch.backends.cudnn.allow_tf32 = True
    log(f"{device.label()}, torch {torch.__version__}, config {args.config}, "
        f"sizes {args.sizes}, backends {args.backends}")

    model = make_model(args.config, device)
    report: dict = {
        "device": {"name": device.label(), "type": device.torch.type, "cuda": device.cuda},
        "torch": torch.__version__, "python": sys.version.split()[0],
        "torch_tensorrt": _trt_version(), "config": args.config,
        "params": sum(p.numel() for p in model.parameters()), "sizes": args.sizes,
        "tile_size": args.tile_size, "tile_overlap": args.tile_overlap,
        "batch_size": args.batch_size, "quick": args.quick,
    }
    report["naive"] = [] if args.skip_naive else bench_naive(model, device, args.sizes, reps)

    rng = np.random.default_rng(0)
    images = {s: rng.random((1, s, s, 3), dtype=np.float32) for s in sorted(set(args.sizes))}
    pairs = [(b, p) for b, p in MATRIX if b in args.backends]
    report["engine"] = []
    for backend, precision in pairs:
        report["engine"] += bench_engine(model, device, images, args, backend, precision, reps)
    del images
    report["psnr"] = bench_precision(model, device, args, pairs)
    del model
    device.reset_peak()
    report["training"] = [] if args.skip_train else bench_training(args.config, device, args)
    report["wall_s"] = time.perf_counter() - started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench_gpu_{device.slug()}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    log(f"wrote {stem}.json and {stem}.md")
    return 0


def _trt_version() -> str:
    if not tensorrt_available():
        return "absent"
    try:
        import torch_tensorrt

        return str(torch_tensorrt.__version__)
    except Exception as err:  # noqa: BLE001
        return f"broken ({_error(err)})"


if __name__ == "__main__":
    sys.exit(main())

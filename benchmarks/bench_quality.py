"""Restoration quality: PSNR/SSIM of classical baselines and a model on held-out images.

Held-out data only (the validation split of ``napari_mprnet.training.synthetic``): the
scikit-image photographs camera, astronaut and coffee (as grey), dead-leaves and synthetic
fluorescence images drawn from the validation seeds. Fixed seeds throughout.

- denoise: Gaussian noise at sigma 15, 25, 50 (/255) on natural grey images and dead leaves;
  Poisson-Gaussian noise on fluorescence at 10, 30, 100, 300 photons (read noise 2 photons).
  Baselines: NL-means (``skimage.restoration.denoise_nl_means``, sigma from
  ``estimate_sigma``) and BM3D (``bm3d.bm3d``; the true sigma for Gaussian noise, the
  estimated one for Poisson-Gaussian) when installed.
- deblur: Gaussian (sigma 2), defocus (radius 3) and motion (11 px at 30 degrees) kernels
  plus noise of sigma 1/255, on natural grey and fluorescence images. Baselines:
  Richardson-Lucy (30 iterations) and Wiener (balance 0.01), both given the true kernel.
- derain: light and heavy synthetic rain on the held-out photographs (colour and grey).

Metrics are computed on results clipped to [0, 1] (data range 1); noisy inputs are fed to
every method unclipped. The model runs as one whole-image tile ("model") and with
``--tile``-px tiles (overlap 32, or a quarter of smaller tiles); the "tiled - whole" column is the PSNR difference in dB.

    python benchmarks/bench_quality.py --quick                    # bundled denoise model
    python benchmarks/bench_quality.py --task all --markdown docs/quality.md
    python benchmarks/bench_quality.py --task deblur --weights my_deblur.safetensors
    python benchmarks/bench_quality.py --quick --json results.json   # or --json - (stdout)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SEED = 2024
TASKS = ("denoise", "deblur", "derain")
DENOISE_SIGMAS = (15, 25, 50)
PHOTON_LEVELS = (10, 30, 100, 300)
READ_NOISE = 2.0
DEBLUR_KERNELS = {
    "gaussian s=2": {"kind": "gaussian", "sigma": 2.0},
    "defocus r=3": {"kind": "defocus", "radius": 3.0},
    "motion 11px": {"kind": "motion", "length": 11.0, "angle": 30.0},
}
DEBLUR_NOISE = 1.0 / 255.0
RAIN_LEVELS = {
    "light": [{"density": 0.0015, "angle": 10.0, "length": 20.0, "width": 0.8,
               "brightness": 0.6}],
    "heavy": [{"density": 0.004, "angle": -20.0, "length": 30.0, "width": 1.0,
               "brightness": 0.8},
              {"density": 0.002, "angle": -15.0, "length": 16.0, "width": 0.6,
               "brightness": 0.6}],
}
METHODS = {
    "denoise": ("input", "NL-means", "BM3D", "model"),
    "deblur": ("input", "Richardson-Lucy", "Wiener", "model"),
    "derain": ("input", "model"),
}


# --------------------------------------------------------------------------- data


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    top = max((img.shape[0] - size) // 2, 0)
    left = max((img.shape[1] - size) // 2, 0)
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def _grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else (img @ np.array([0.2125, 0.7154, 0.0721], np.float32))


def held_out_images(size: int, quick: bool) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Held-out clean images by group: natural grey/colour, dead leaves, fluorescence."""
    from napari_mprnet.training import synthetic

    natural = synthetic.natural_images("val")
    names = ["camera"] if quick else list(synthetic.NATURAL_VAL)
    count = 1 if quick else 3
    return {
        "natural grey": [(n, _centre_crop(_grey(natural[n]), size).astype(np.float32))
                         for n in names],
        "natural colour": [(n, _centre_crop(natural[n], size)) for n in
                           (["astronaut"] if quick else ["astronaut", "coffee"])],
        "dead leaves": [
            (f"dead_leaves#{i}", synthetic.dead_leaves(size, synthetic.image_rng("val", SEED, i)))
            for i in range(count)
        ],
        "fluorescence": [
            (f"fluorescence#{i}",
             synthetic.fluorescence(size, synthetic.image_rng("val", SEED, 100 + i), "mixed"))
            for i in range(count)
        ],
    }


# --------------------------------------------------------------------------- metrics


def _metrics(out: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    from napari_mprnet.training.metrics import psnr, ssim

    out = np.clip(out, 0.0, 1.0)
    if clean.ndim == 3:
        out, clean = np.moveaxis(out, -1, 0), np.moveaxis(clean, -1, 0)
    return float(psnr(out, clean)), float(ssim(out, clean))


# --------------------------------------------------------------------------- baselines


def nl_means(noisy: np.ndarray, _clean: np.ndarray, _info: dict) -> np.ndarray:
    from skimage.restoration import denoise_nl_means, estimate_sigma

    axis = -1 if noisy.ndim == 3 else None
    sigma = float(np.mean(estimate_sigma(noisy, channel_axis=axis)))
    return denoise_nl_means(noisy, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5,
                            patch_distance=6, channel_axis=axis)


def bm3d_denoise(noisy: np.ndarray, _clean: np.ndarray, info: dict) -> np.ndarray:
    import bm3d

    sigma = info.get("sigma")
    if sigma is None:
        from skimage.restoration import estimate_sigma

        sigma = float(np.mean(estimate_sigma(noisy, channel_axis=-1 if noisy.ndim == 3
                                             else None)))
    return np.asarray(bm3d.bm3d(noisy, sigma_psd=sigma), dtype=np.float32)


def _padded(fn: Callable, img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Run a periodic-boundary deconvolution on a symmetrically padded copy, then crop."""
    pad = kernel.shape[0]
    padded = np.pad(img, ((pad, pad), (pad, pad)) + ((0, 0),) * (img.ndim - 2), "symmetric")
    out = fn(padded)
    return out[pad:-pad, pad:-pad]


def richardson_lucy(blurred: np.ndarray, _clean: np.ndarray, info: dict) -> np.ndarray:
    from skimage.restoration import richardson_lucy as rl

    kernel = info["kernel"]
    return _padded(lambda x: rl(np.clip(x, 0, 1), kernel, num_iter=30, clip=True), blurred,
                   kernel)


def wiener(blurred: np.ndarray, _clean: np.ndarray, info: dict) -> np.ndarray:
    from skimage.restoration import wiener as wiener_filter

    kernel = info["kernel"]
    return _padded(lambda x: wiener_filter(x, kernel, balance=0.01), blurred, kernel)


# --------------------------------------------------------------------------- the model


def _shown_path(source: object) -> str:
    """A model's source as written in reports: relative to the working folder when inside it."""
    if not source:
        return "model"
    path = Path(str(source))
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


class ModelRunner:
    """Run a model whole-image and tiled; remembers the tiled - whole PSNR differences."""

    def __init__(self, task: str, weights: str | None, device: str, tile: int) -> None:
        from napari_mprnet.api import prepare_model

        self.task = task
        self.model = prepare_model(weights or task, task)
        self.device = device
        self.tile = tile
        self.deltas: list[float] = []

    def describe(self) -> str:
        meta = getattr(self.model, "metadata", None) or {}
        cfg = self.model.config
        params = sum(p.numel() for p in self.model.parameters())
        trained = meta.get("trained")
        state = "trained" if trained else "UNTRAINED placeholder" if trained is False else "?"
        return (f"{_shown_path(getattr(self.model, 'source', None))} ({state}; n_feat {cfg.n_feat}, "
                f"{params / 1e6:.2f} M params)")

    def _run(self, img: np.ndarray, tile: int) -> np.ndarray:
        from napari_mprnet import restore

        return restore(img, self.task, model=self.model, tile_size=tile,
                       tile_overlap=min(32, tile // 4),
                       device=self.device, normalize="none", rgb=img.ndim == 3)

    def __call__(self, degraded: np.ndarray, clean: np.ndarray, _info: dict) -> np.ndarray:
        whole_tile = -(-max(degraded.shape[:2]) // 8) * 8
        whole = self._run(degraded, whole_tile)
        tiled = self._run(degraded, self.tile)
        self.deltas.append(_metrics(tiled, clean)[0] - _metrics(whole, clean)[0])
        return whole


# --------------------------------------------------------------------------- cases


def denoise_cases(images: dict, args: argparse.Namespace):
    from napari_mprnet.training import degradations as deg

    rng = np.random.default_rng(SEED)
    for sigma in args.sigmas:
        for group in ("natural grey", "dead leaves"):
            cases = []
            for name, clean in images[group]:
                noisy = deg.gaussian_noise(clean, sigma / 255.0, rng)
                cases.append((name, clean, noisy, {"sigma": sigma / 255.0}))
            yield group, f"sigma {sigma:g}", cases
    for photons in args.photons:
        cases = []
        for name, clean in images["fluorescence"]:
            noisy = deg.poisson_gaussian(clean, photons, READ_NOISE, rng)
            cases.append((name, clean, noisy, {}))
        yield "fluorescence", f"{photons:g} photons", cases


def deblur_cases(images: dict, args: argparse.Namespace):
    from napari_mprnet.training import degradations as deg

    rng = np.random.default_rng(SEED + 1)
    for label, spec in DEBLUR_KERNELS.items():
        spec = dict(spec)
        kernel = deg.blur_kernel(spec.pop("kind"), **spec)
        for group in ("natural grey", "fluorescence"):
            cases = []
            for name, clean in images[group]:
                blurred = deg.gaussian_noise(deg.blur(clean, kernel), DEBLUR_NOISE, rng)
                cases.append((name, clean, blurred, {"kernel": kernel}))
            yield group, label, cases


def derain_cases(images: dict, args: argparse.Namespace):
    from napari_mprnet.training import degradations as deg

    rng = np.random.default_rng(SEED + 2)
    for label, layers in RAIN_LEVELS.items():
        for group in ("natural colour", "natural grey"):
            cases = []
            for name, clean in images[group]:
                rained = clean
                for layer in layers:
                    rained = deg.rain_streaks(rained, rng, **layer)
                cases.append((name, clean, rained, {}))
            yield group, label, cases


CASES = {"denoise": denoise_cases, "deblur": deblur_cases, "derain": derain_cases}


def _method_table(task: str, runner: ModelRunner | None, use_bm3d: bool) -> dict:
    methods: dict[str, Callable | str | None] = {"input": None}
    if task == "denoise":
        methods["NL-means"] = nl_means
        if not use_bm3d:
            methods["BM3D"] = "skipped"
        else:
            try:
                import bm3d  # noqa: F401

                methods["BM3D"] = bm3d_denoise
            except ImportError:
                methods["BM3D"] = "not installed"
    elif task == "deblur":
        methods["Richardson-Lucy"] = richardson_lucy
        methods["Wiener"] = wiener
    methods["model"] = runner if runner is not None else "skipped"
    return methods


def run_task(task: str, args: argparse.Namespace, images: dict) -> list[dict]:
    runner = None if args.no_model else ModelRunner(task, args.weights, args.device, args.tile)
    methods = _method_table(task, runner, not args.no_bm3d)
    rows = []
    for group, level, cases in CASES[task](images, args):
        row = {"task": task, "data": group, "level": level, "n": len(cases), "results": {}}
        if runner is not None:
            runner.deltas.clear()
        for method, fn in methods.items():
            if isinstance(fn, str):
                row["results"][method] = {"status": fn}
                continue
            scores, started = [], time.perf_counter()
            for _name, clean, degraded, info in cases:
                out = degraded if fn is None else fn(degraded, clean, info)
                scores.append(_metrics(np.asarray(out, np.float32), clean))
            row["results"][method] = {
                "psnr": float(np.mean([s[0] for s in scores])),
                "ssim": float(np.mean([s[1] for s in scores])),
                "seconds": time.perf_counter() - started,
            }
        if runner is not None and runner.deltas:
            row["tiled_minus_whole_db"] = float(np.mean(runner.deltas))
            row["tiled_minus_whole_max_abs_db"] = float(np.max(np.abs(runner.deltas)))
        rows.append(row)
        if not args.json_stdout:
            print(f"  {task:8s} {group:15s} {level:12s} done", file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------- output


def _cell(result: dict) -> str:
    if "status" in result:
        return result["status"]
    return f"{result['psnr']:.2f} / {result['ssim']:.3f}"


def markdown(report: dict) -> str:
    lines = [
        (f"Quality benchmark ({report['date']}, {report['mode']}, {report['size']} px images, "
         f"seed {SEED}); cells are PSNR (dB) / SSIM against the clean image."),
        "",
    ]
    for task in report["tasks"]:
        rows = [r for r in report["rows"] if r["task"] == task]
        if not rows:
            continue
        methods = list(rows[0]["results"])
        lines.append(f"**{task}** - model: {report['models'].get(task, 'skipped')}")
        lines.append("")
        header = ["data", "degradation", "n", *methods, f"tiled {report['tile']} - whole (dB)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in rows:
            delta = r.get("tiled_minus_whole_db")
            cells = [r["data"], r["level"], str(r["n"])] + [_cell(r["results"][m])
                                                            for m in methods]
            cells.append("-" if delta is None else f"{delta:+.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Total runtime {report['runtime_s']:.1f} s on {report['machine']}.")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=(*TASKS, "all"), default="denoise")
    parser.add_argument("--weights", help="model file (default: the bundled model of the task)")
    parser.add_argument("--quick", action="store_true",
                        help="one image per group, 96 px (unless --size)")
    parser.add_argument("--size", type=int, help="image side (default 256, quick 96)")
    parser.add_argument("--tile", type=int, default=128, help="tile size of the tiled run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(DENOISE_SIGMAS),
                        help="Gaussian noise levels (/255) for denoise")
    parser.add_argument("--photons", type=float, nargs="+", default=list(PHOTON_LEVELS),
                        help="photon levels of the fluorescence rows for denoise")
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D (slow on a CPU)")
    parser.add_argument("--no-model", action="store_true", help="baselines only")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write the results as JSON to PATH ('-' or no value: stdout)")
    parser.add_argument("--markdown", metavar="PATH", help="write the table to PATH")
    args = parser.parse_args(argv)
    args.size = args.size or (96 if args.quick else 256)
    if args.size < 32:
        parser.error("--size must be >= 32")
    if args.tile >= args.size:  # keep the tiled run tiled
        args.tile = max(16, args.size // 2 // 8 * 8)
    args.json_stdout = args.json == "-"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    tasks = list(TASKS) if args.task == "all" else [args.task]
    images = held_out_images(args.size, args.quick)
    rows, models = [], {}
    for task in tasks:
        if not args.no_model:
            models[task] = ModelRunner(task, args.weights, args.device, args.tile).describe()
        rows.extend(run_task(task, args, images))
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "size": args.size,
        "tile": args.tile,
        "seed": SEED,
        "tasks": tasks,
        "models": models,
        "machine": f"{platform.machine()} {platform.system()}, device {args.device}",
        "rows": rows,
        "runtime_s": time.perf_counter() - started,
    }
    table = markdown(report)
    if args.json:
        text = json.dumps(report, indent=1)
        if args.json_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if not args.json_stdout:
        print(table)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    return report


if __name__ == "__main__":
    main()

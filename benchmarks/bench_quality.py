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

With ``--corpus DIR`` (a real-image corpus built by ``tools/build_corpus.py``) the held-out
images are real instead: one 256-px crop per scene of the corpus's *benchmark* split (never
trained on, never used for validation): photographs (grey for the noise rows, colour and grey
for rain) and grey microscopy fields (8-bit widefield DNA fields with large dark backgrounds,
a 9-bit FISH field, a quantitative phase image). Rows then also carry per-image results and the
model's mean and worst difference to BM3D (dB). Poisson-Gaussian rows give BM3D the data after
a generalised Anscombe transform (unit variance, sigma 1) and invert it with the closed-form
unbiased inverse. The model is blind (it estimates the noise) unless ``--given-noise`` gives it
the true level through ``restore(noise=...)``, as BM3D is given it.

Metrics are computed on results clipped to [0, 1] (data range 1); noisy inputs are fed to
every method unclipped. The model runs as one whole-image tile ("model") and with
``--tile``-px tiles (overlap 32, or a quarter of smaller tiles); the "tiled - whole" column is the PSNR difference in dB.

    python benchmarks/bench_quality.py --quick                    # bundled denoise model
    python benchmarks/bench_quality.py --task all --markdown docs/quality.md
    python benchmarks/bench_quality.py --task deblur --weights my_deblur.safetensors
    python benchmarks/bench_quality.py --quick --json results.json   # or --json - (stdout)
    python benchmarks/bench_quality.py --corpus ~/.cache/napari-mprnet/corpus \
        --markdown docs/quality_denoise.md --pictures docs/images    # real held-out images
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import (  # the benchmarks' shared helpers
    anscombe,
    bm3d_gaussian,
    describe_model,
    inverse_anscombe,
    load_bench_model,
    vst_denoise,
)

__all__ = ["anscombe", "inverse_anscombe", "main"]  # the transform, re-exported for tests
SEED = 2024
TASKS = ("denoise", "deblur", "derain")
DENOISE_SIGMAS = (15, 25, 50)
PHOTON_LEVELS = (10, 30, 100, 300)
REAL_SIGMAS = (5, 15, 25, 50)
REAL_PHOTONS = (10, 30, 300, 1000)
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


def real_held_out_images(corpus: str, size: int, photos: int, fields: int
                         ) -> dict[str, list[tuple[str, np.ndarray]]]:
    """One crop per scene of the corpus's benchmark split: the richest crop (gradient energy)
    of the first ``photos`` photo scenes and ``fields`` grey microscopy fields (sorted ids)."""
    from napari_mprnet.training.corpus import corpus_images

    def per_scene(kind: str, count: int, grey_only: bool) -> list[tuple[str, np.ndarray]]:
        best: dict[str, tuple[float, np.ndarray]] = {}
        for arr, entry in corpus_images(corpus, "benchmark", kind, min_side=size):
            if grey_only and arr.ndim == 3:
                continue
            energy = float(entry.get("gradient_energy", 0.0))
            if entry["scene"] not in best or energy > best[entry["scene"]][0]:
                best[entry["scene"]] = (energy, arr)
        return [(scene, _centre_crop(best[scene][1], size).astype(np.float32))
                for scene in sorted(best)[:count]]

    colour = [(n, img) for n, img in per_scene("photo", photos * 2, False) if img.ndim == 3]
    photo_list = per_scene("photo", photos, False)
    return {
        "photo grey": [(n, _grey(img).astype(np.float32)) for n, img in photo_list],
        "photo colour": colour[: max(2, photos // 2)],
        "microscopy": per_scene("microscopy", fields, True),
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
    if "photons" in info:  # Poisson-Gaussian: BM3D on the variance-stabilised data
        photons, read = info["photons"], info["read_noise"]
        return vst_denoise(noisy, 1.0 / photons, 0.0, read / photons).astype(np.float32)
    sigma = info.get("sigma")
    if sigma is None:
        from skimage.restoration import estimate_sigma

        sigma = float(np.mean(estimate_sigma(noisy, channel_axis=-1 if noisy.ndim == 3
                                             else None)))
    return bm3d_gaussian(noisy, sigma).astype(np.float32)


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


def true_noise(info: dict) -> float | tuple[float, float]:
    """The ``restore(noise=...)`` of a case with known noise (images in [0, 1]): the Gaussian
    sd, or ``(gain, offset variance)`` of Poisson-Gaussian noise (variance ``c / P + r^2 /
    P^2`` for ``P`` photons at intensity 1 and read noise ``r`` photons)."""
    if "photons" in info:
        photons, read = info["photons"], info["read_noise"]
        return 1.0 / photons, read**2 / photons**2
    if "sigma" in info:
        return info["sigma"]
    raise SystemExit("--given-noise: this row's noise is not known (real-image rows only)")


class ModelRunner:
    """Run a model whole-image and tiled; remembers the tiled - whole PSNR differences."""

    def __init__(self, task: str, weights: str | None, device: str, tile: int,
                 strength: float | str = "auto", given_noise: bool = False) -> None:
        self.task = task
        self.strength = strength
        self.given_noise = given_noise
        self.model = load_bench_model(weights, task)
        self.device = device
        self.tile = tile
        self.deltas: list[float] = []

    def describe(self) -> str:
        return describe_model(self.model)

    def _run(self, img: np.ndarray, tile: int, noise: Any = None) -> np.ndarray:
        from napari_mprnet import restore

        options = {} if noise is None else {"noise": noise}
        return restore(img, self.task, model=self.model, tile_size=tile,
                       tile_overlap=min(32, tile // 4),
                       device=self.device, normalize="none", rgb=img.ndim == 3,
                       strength=self.strength, **options)

    def __call__(self, degraded: np.ndarray, clean: np.ndarray, info: dict) -> np.ndarray:
        noise = true_noise(info) if self.given_noise else None
        whole_tile = -(-max(degraded.shape[:2]) // 8) * 8
        whole = self._run(degraded, whole_tile, noise)
        if self.tile:
            tiled = self._run(degraded, self.tile, noise)
            self.deltas.append(_metrics(tiled, clean)[0] - _metrics(whole, clean)[0])
        return whole


# --------------------------------------------------------------------------- cases


def denoise_cases(images: dict, args: argparse.Namespace):
    from napari_mprnet.training import degradations as deg

    rng = np.random.default_rng(SEED)
    if args.corpus:
        for sigma in args.sigmas:
            cases = [(name, clean, deg.gaussian_noise(clean, sigma / 255.0, rng),
                      {"sigma": sigma / 255.0}) for name, clean in images["photo grey"]]
            yield "photo grey", f"sigma {sigma:g}", cases
        for photons in args.photons:
            cases = [(name, clean, deg.poisson_gaussian(clean, photons, READ_NOISE, rng),
                      {"photons": photons, "read_noise": READ_NOISE})
                     for name, clean in images["microscopy"]]
            yield "microscopy", f"{photons:g} photons", cases
        return
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
        for group in (("photo grey", "microscopy") if args.corpus
                      else ("natural grey", "fluorescence")):
            cases = []
            for name, clean in images[group]:
                blurred = deg.gaussian_noise(deg.blur(clean, kernel), DEBLUR_NOISE, rng)
                cases.append((name, clean, blurred, {"kernel": kernel}))
            yield group, label, cases


def derain_cases(images: dict, args: argparse.Namespace):
    from napari_mprnet.training import degradations as deg

    rng = np.random.default_rng(SEED + 2)
    for label, layers in RAIN_LEVELS.items():
        for group in (("photo colour", "photo grey") if args.corpus
                      else ("natural colour", "natural grey")):
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
    runner = None if args.no_model else ModelRunner(task, args.weights, args.device, args.tile,
                                                args.strength, args.given_noise)
    methods = _method_table(task, runner, not args.no_bm3d)
    previous = _previous_rows(args.baselines_from, args)
    rows = []
    kept: dict[tuple, dict] = {}
    for group, level, cases in CASES[task](images, args):
        row = {"task": task, "data": group, "level": level, "n": len(cases), "results": {}}
        if runner is not None:
            runner.deltas.clear()
        names = [c[0] for c in cases]
        for method, fn in methods.items():
            if isinstance(fn, str):
                row["results"][method] = {"status": fn}
                continue
            reused = previous.get((task, group, level, tuple(names)), {}).get(method)
            pictured = f"{group} {level}" in args.picture_rows  # needs every output
            if method != "model" and reused is not None and "per_image" in reused and (
                    not pictured):
                row["results"][method] = {**reused, "reused": True}
                continue
            scores, started = [], time.perf_counter()
            for name, clean, degraded, info in cases:
                out = degraded if fn is None else fn(degraded, clean, info)
                out = np.asarray(out, np.float32)
                scores.append(_metrics(out, clean))
                if f"{group} {level}" in args.picture_rows:
                    kept.setdefault((group, level, name), {"clean": clean})[method] = out
            row["results"][method] = {
                "psnr": float(np.mean([s[0] for s in scores])),
                "ssim": float(np.mean([s[1] for s in scores])),
                "seconds": time.perf_counter() - started,
            }
            if args.corpus:
                row["results"][method]["per_image"] = {
                    name: round(sc[0], 3) for (name, *_), sc in zip(cases, scores)}
        _versus_reference(row, "BM3D" if task == "denoise" else "Richardson-Lucy"
                          if task == "deblur" else "input")
        if runner is not None and runner.deltas:
            row["tiled_minus_whole_db"] = float(np.mean(runner.deltas))
            row["tiled_minus_whole_max_abs_db"] = float(np.max(np.abs(runner.deltas)))
        rows.append(row)
        if not args.json_stdout:
            print(f"  {task:8s} {group:15s} {level:12s} done", file=sys.stderr, flush=True)
    if args.pictures and kept:
        _save_pictures(task, kept, rows, Path(args.pictures))
    return rows


def images_digest(images: dict) -> str:
    """SHA-256 of the held-out images (names and pixels): a rebuilt corpus gives another."""
    digest = hashlib.sha256()
    for group in sorted(images):
        for name, img in images[group]:
            digest.update(f"{group}/{name}{img.shape}".encode())
            digest.update(np.ascontiguousarray(img, np.float32).tobytes())
    return digest.hexdigest()[:16]


def _cases_key(args: argparse.Namespace) -> dict:
    """What fixes the degraded inputs (noise is drawn in sequence over all rows)."""
    return {"corpus": str(args.corpus), "size": args.size, "photos": args.photos,
            "fields": args.fields, "sigmas": list(args.sigmas), "photons": list(args.photons),
            "images": getattr(args, "images_digest", None)}


def _previous_rows(path: str | None, args: argparse.Namespace) -> dict:
    """Rows of an earlier real-image report made with the same inputs, by (task, data,
    level, image names)."""
    if not path:
        return {}
    report = json.loads(Path(path).read_text())
    if report.get("cases") != _cases_key(args):
        raise SystemExit(f"--baselines-from {path}: made with other inputs "
                         f"({report.get('cases')}); rerun with the same options")
    found = {}
    for row in report["rows"]:
        per = next((r["per_image"] for r in row["results"].values() if "per_image" in r), None)
        if per is not None:
            found[(row["task"], row["data"], row["level"], tuple(per))] = row["results"]
    return found


def _versus_reference(row: dict, reference: str) -> None:
    """Mean and worst per-image PSNR difference model - reference (real-image mode)."""
    model, ref = row["results"].get("model", {}), row["results"].get(reference, {})
    if "per_image" not in model or "per_image" not in ref:
        return
    diffs = {n: model["per_image"][n] - ref["per_image"][n] for n in model["per_image"]}
    worst = min(diffs, key=diffs.get)
    row["versus"] = {"reference": reference, "mean_db": float(np.mean(list(diffs.values()))),
                     "worst_db": float(diffs[worst]), "worst_image": worst}


def _save_pictures(task: str, kept: dict, rows: list[dict], folder: Path) -> None:
    """For each picture row: its worst image (model vs the reference) as a PNG strip
    degraded | model | reference | clean, grey images shown with the same display range."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        worst = row.get("versus", {}).get("worst_image")
        outs = kept.get((row["data"], row["level"], worst))
        if outs is None:
            continue
        ref = row["versus"]["reference"]
        panels = [outs["input"], outs["model"], outs.get(ref, outs["input"]), outs["clean"]]
        high = max(float(np.percentile(outs["clean"], 99.8)), 1e-3)
        strip = np.concatenate([np.clip(p / high, 0, 1) for p in panels], axis=1)
        name = f"real_{task}_{row['data']}_{row['level']}".replace(" ", "_")
        Image.fromarray((strip * 255).round().astype(np.uint8)).save(folder / f"{name}.png")


# --------------------------------------------------------------------------- output


def _cell(result: dict) -> str:
    if "status" in result:
        return result["status"]
    return f"{result['psnr']:.2f} / {result['ssim']:.3f}"


def markdown(report: dict) -> str:
    lines = [
        (f"Quality benchmark ({report['date']}, {report['mode']}, {report['size']} px images, "
         f"seed {SEED}, model strength {report.get('strength', 1.0)}, noise "
         f"{report.get('noise', 'estimated')}); cells are PSNR (dB) / "
         "SSIM against the clean image."),
        "",
    ]
    for task in report["tasks"]:
        rows = [r for r in report["rows"] if r["task"] == task]
        if not rows:
            continue
        methods = list(rows[0]["results"])
        versus = rows[0].get("versus", {}).get("reference")
        lines.append(f"**{task}** - model: {report['models'].get(task, 'skipped')}")
        lines.append("")
        header = ["data", "degradation", "n", *methods]
        if versus:
            header.append(f"model - {versus}: mean / worst (dB)")
        if report["tile"]:
            header.append(f"tiled {report['tile']} - whole (dB)")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in rows:
            delta = r.get("tiled_minus_whole_db")
            cells = [r["data"], r["level"], str(r["n"])] + [_cell(r["results"][m])
                                                            for m in methods]
            if versus:
                v = r.get("versus")
                cells.append(f"{v['mean_db']:+.2f} / {v['worst_db']:+.2f} ({v['worst_image']})"
                             if v else "-")
            if report["tile"]:
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
    parser.add_argument("--tile", type=int, default=128,
                        help="tile size of the tiled run (0: whole-image runs only)")
    parser.add_argument("--baselines-from", metavar="JSON",
                        help="reuse the baselines' results (not the model's) of the same rows "
                        "and images from an earlier --corpus report written with --json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strength", default="auto",
                        help="restore(strength=...) of the model rows: auto (default) or a "
                             "number (1.0: the plain network output)")
    parser.add_argument("--given-noise", action="store_true",
                        help="give the model rows the true noise level (restore(noise=...)), "
                             "as BM3D is given it (default: the model estimates it)")
    parser.add_argument("--sigmas", type=float, nargs="+",
                        help=f"Gaussian noise levels (/255) for denoise (default "
                        f"{DENOISE_SIGMAS}; with --corpus {REAL_SIGMAS})")
    parser.add_argument("--photons", type=float, nargs="+",
                        help=f"photon levels of the fluorescence rows for denoise (default "
                        f"{PHOTON_LEVELS}; with --corpus {REAL_PHOTONS})")
    parser.add_argument("--corpus", metavar="DIR",
                        help="real held-out images: the benchmark split of this corpus")
    parser.add_argument("--photos", type=int, default=8, help="photographs per row (--corpus)")
    parser.add_argument("--fields", type=int, default=4,
                        help="microscopy fields per row (--corpus)")
    parser.add_argument("--pictures", metavar="DIR",
                        help="with --corpus: PNG strips (degraded | model | reference | clean) "
                        "of the worst image of a few rows")
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D (slow on a CPU)")
    parser.add_argument("--no-model", action="store_true", help="baselines only")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write the results as JSON to PATH ('-' or no value: stdout)")
    parser.add_argument("--markdown", metavar="PATH", help="write the table to PATH")
    args = parser.parse_args(argv)
    args.size = args.size or (96 if args.quick else 256)
    if args.size < 32:
        parser.error("--size must be >= 32")
    if args.tile and args.tile >= args.size:  # keep the tiled run tiled
        args.tile = max(16, args.size // 2 // 8 * 8)
    if args.strength != "auto":
        try:
            args.strength = float(args.strength)
        except ValueError:
            parser.error(f"--strength must be auto or a number, got {args.strength!r}")
    args.json_stdout = args.json == "-"
    real = args.corpus is not None
    args.sigmas = args.sigmas or list(REAL_SIGMAS if real else DENOISE_SIGMAS)
    args.photons = args.photons or list(REAL_PHOTONS if real else PHOTON_LEVELS)
    args.picture_rows = (("photo grey sigma 25", "microscopy 300 photons",
                          "microscopy defocus r=3", "photo colour heavy")
                         if real and args.pictures else ())
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    tasks = list(TASKS) if args.task == "all" else [args.task]
    images = (real_held_out_images(args.corpus, args.size, args.photos, args.fields)
              if args.corpus else held_out_images(args.size, args.quick))
    args.images_digest = images_digest(images)
    rows, models = [], {}
    for task in tasks:
        if not args.no_model:
            models[task] = ModelRunner(task, args.weights, args.device, args.tile,
                                       args.strength).describe()
        rows.extend(run_task(task, args, images))
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": ("real held-out images" if args.corpus else "quick" if args.quick
                 else "full"),
        "size": args.size,
        "tile": args.tile,
        "strength": args.strength,
        "noise": "given (true)" if args.given_noise else "estimated",
        "seed": SEED,
        "tasks": tasks,
        "cases": _cases_key(args),
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

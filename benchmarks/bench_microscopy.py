"""Microscopy bench: generated fluorescence with exact references, plus real binned fields.

Cases (nothing stored; every case is generated from fixed seeds):

- generated (``napari_mprnet.training.microscopy.bench_cases``): 7 families (puncta,
  filaments, nuclei with chromatin, dense cytoplasm, dark sparse, bright saturating spots,
  shading) x 7 photon levels (3-3000 photo-electrons at the peak), twice, with the camera
  (photon counting, read noise 1-6 e-, EMCCD, sCMOS with pixel maps and hot pixels) and the
  bit depth (8, 12, 16) rotating so that every pair of these axes occurs: a covering design
  of 98 cases, not the full product (588 cases, over 3 h on this busy machine);
- real: the grey microscopy fields of the corpus's benchmark split (binned when the corpus
  was built until their own noise is small; the two crops of most gradient energy per scene,
  centre-cropped, peak scaled to 1), imaged with read noise at 30 photons (16 bit) and 1000
  photons (8 bit), EMCCD at 12 photons (16 bit) and sCMOS at 300 photons (12 bit).

Methods, all in the same run, all given the stored image (uint8/uint16) as a user has it:
``input`` (the noisy image itself), ``NL-means VST`` and ``BM3D VST`` (scikit-image NL-means
and BM3D after a generalised Anscombe transform given the true gain, offset and read noise,
per pixel for sCMOS, the EMCCD excess factor included, inverted with the closed-form unbiased
inverse), ``ours`` (``restore(noisy)``: defaults, strength "auto"), ``ours s=1``
(``strength=1.0``) and ``ours true noise`` (``noise=`` the true Poisson-Gaussian law).

PSNR convention: in the stored image's units over all pixels, against the exact expected
signal (``Acquisition.clean``), with the clean image's range (max - min) as the data range;
estimates are not clipped.

Cost (2026-12-06, 2 CPU cores shared with about ten other processes, load 13): 41.5 min for
the 126 cases; per case BM3D 8.1 s, ``ours`` 5.4 s, ``ours true noise`` 4.5 s, ``ours s=1``
1.6 s, NL-means 0.15 s. ``--no-bm3d --no-given-noise`` leaves about a third; ``--cases N``
spreads N generated cases over all families; ``--quick`` runs 8 cases of 96 px in about a
minute.

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_microscopy.py \
        --json docs/benchmarks/microscopy_bench.json --markdown docs/microscopy_bench.md
    python benchmarks/bench_microscopy.py --quick                 # 8 small cases, about a minute
    python benchmarks/bench_microscopy.py --model candidate.safetensors \
        --baselines-from docs/benchmarks/microscopy_bench.json   # BM3D reused: ~1/3 of the time
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import (  # the benchmarks' shared helpers
    bm3d_gaussian,
    describe_model,
    load_bench_model,
    nl_means_gaussian,
    vst_denoise,
)

from napari_mprnet.training import microscopy

REAL_CONDITIONS = (("read_noise", 30.0, 16), ("read_noise", 1000.0, 8), ("emccd", 12.0, 16),
                   ("scmos", 300.0, 12))
REAL_CROPS_PER_SCENE = 2
REAL_SEED = 3030
#: s=1 must beat the input by this much (dB) for "auto within 0.2 dB of s=1" to apply.
BEATS_INPUT_DB = 0.0
AUTO_TOLERANCE_DB = 0.2
FAMILY_ORDER = {name: i for i, name in enumerate(microscopy.FAMILIES)}


@dataclass(frozen=True)
class RealCase:
    """A real field (clean reference) imaged by a generated camera."""

    scene: str
    field: np.ndarray
    camera: str
    photons: float
    bits: int
    index: int
    family: str = "real"

    @property
    def name(self) -> str:
        return f"real:{self.scene}/{self.camera}/{self.photons:g}ph/{self.bits}bit"

    def generate(self) -> microscopy.Acquisition:
        rng = np.random.default_rng(np.random.SeedSequence([REAL_SEED, self.index]))
        return microscopy.acquire(self.field, self.camera, self.photons, self.bits, rng)


def real_cases(corpus: str, size: int) -> list[RealCase]:
    """The corpus's grey benchmark fields under :data:`REAL_CONDITIONS`."""
    from napari_mprnet.training.corpus import corpus_images

    by_scene: dict[str, list] = {}
    for arr, entry in corpus_images(corpus, "benchmark", "microscopy", min_side=size):
        if arr.ndim == 2:
            by_scene.setdefault(entry["scene"], []).append((entry["gradient_energy"],
                                                            entry["crop_id"], arr))
    cases = []
    for scene in sorted(by_scene):
        crops = sorted(by_scene[scene], key=lambda t: (-t[0], t[1]))[:REAL_CROPS_PER_SCENE]
        for _energy, crop_id, arr in crops:
            top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
            field = np.asarray(arr[top:top + size, left:left + size], np.float64)
            field = field / max(float(field.max()), 1e-12)
            for camera, photons, bits in REAL_CONDITIONS:
                cases.append(RealCase(crop_id, field, camera, photons, bits, len(cases)))
    return cases


# --------------------------------------------------------------------------- methods


def _vst(acq: microscopy.Acquisition, denoiser) -> np.ndarray:
    read = np.sqrt(acq.read_sd_map**2 + 1.0 / 12.0)
    return vst_denoise(acq.noisy, acq.excess * acq.gain_map, acq.offset_map, read, denoiser)


def method_table(args: argparse.Namespace) -> dict:
    """Method name -> function of an acquisition returning an estimate of ``clean``."""
    from napari_mprnet import restore

    model = load_bench_model(args.model, "denoise")

    def ours(**options):
        return lambda acq: restore(acq.noisy, "denoise", model=model, device=args.device,
                                   **options)

    methods = {"input": lambda acq: acq.noisy,
               "NL-means VST": lambda acq: _vst(acq, nl_means_gaussian)}
    if not args.no_bm3d:
        methods["BM3D VST"] = lambda acq: _vst(acq, bm3d_gaussian)
    methods["ours"] = ours()
    methods["ours s=1"] = ours(strength=1.0)
    if not args.no_given_noise:
        methods["ours true noise"] = lambda acq: restore(
            acq.noisy, "denoise", model=model, device=args.device, noise=acq.noise_law())
    return {"methods": methods, "model": describe_model(model)}


#: Methods whose results do not depend on the model (``--baselines-from`` reuses them).
BASELINES = ("NL-means VST", "BM3D VST")


def earlier_baselines(path: str | None) -> dict:
    """Case name -> that case's result in an earlier ``--json`` report."""
    if not path:
        return {}
    if not Path(path).is_file():
        raise SystemExit(f"--baselines-from: no report at {path}")
    return {r["name"]: r for r in json.loads(Path(path).read_text())["cases"]}


def run_case(case, methods: dict, earlier: dict | None = None) -> dict:
    """PSNR of every method on one case; the baselines of ``earlier`` (the same case in an
    earlier report) are reused when its input PSNR is the same, i.e. the same images."""
    acq = case.generate()
    result = {"name": case.name, "family": case.family, "camera": case.camera,
              "photons": case.photons, "bits": case.bits, "psnr": {}, "seconds": {}}
    same = earlier is not None and earlier["psnr"].get("input") == round(
        acq.psnr(acq.noisy), 3)
    for name, fn in methods.items():
        if same and name in BASELINES and name in earlier["psnr"]:
            result["psnr"][name] = earlier["psnr"][name]
            result["seconds"][name] = earlier["seconds"][name]
            result.setdefault("reused", []).append(name)
            continue
        started = time.perf_counter()
        estimate = np.asarray(fn(acq), np.float64)
        result["seconds"][name] = round(time.perf_counter() - started, 3)
        result["psnr"][name] = round(acq.psnr(estimate), 3)
    return result


# --------------------------------------------------------------------------- summary


def _row(label: str, results: list[dict], methods: list[str]) -> dict:
    row = {"label": label, "n": len(results),
           "psnr": {m: float(np.mean([r["psnr"][m] for r in results])) for m in methods}}
    for ref in ("input", "BM3D VST", "ours s=1"):
        if ref in methods:
            diff = [r["psnr"]["ours"] - r["psnr"][ref] for r in results]
            worst = int(np.argmin(diff))
            row[f"ours - {ref}"] = {"mean": float(np.mean(diff)), "min": float(diff[worst]),
                                    "worst_case": results[worst]["name"]}
    return row


def summarise(results: list[dict], methods: list[str]) -> dict:
    """Rows per family x photon level, per camera, per photon level; the gate's counts."""
    def grouped(label, order, subset=None) -> list[dict]:
        groups: dict = {}
        for r in sorted(results if subset is None else subset, key=order):
            groups.setdefault(label(r), []).append(r)
        return [_row(name, members, methods) for name, members in groups.items()]

    def family_order(r):
        return (FAMILY_ORDER.get(r["family"], len(FAMILY_ORDER)), r["photons"])

    generated = [r for r in results if r["family"] != "real"]
    results = generated + [r for r in results if r["family"] == "real"]
    real = [r for r in results if r["family"] == "real"]
    below = [r for r in results if r["psnr"]["ours"] < r["psnr"]["input"]]
    auto_far = [r for r in results if r["psnr"]["ours s=1"] > r["psnr"]["input"] + BEATS_INPUT_DB
                and r["psnr"]["ours"] < r["psnr"]["ours s=1"] - AUTO_TOLERANCE_DB]
    s1_below = [r for r in results if r["psnr"]["ours s=1"] < r["psnr"]["input"]]
    diffs = [r["psnr"]["ours"] - r["psnr"]["input"] for r in results]
    worst = int(np.argmin(diffs))
    return {
        "family_photons": grouped(lambda r: f"{r['family']} {r['photons']:g} ph",
                                  family_order, generated),
        "real": [_row(f"real {c} {p:g} ph {b} bit",
                      [r for r in real if (r["camera"], r["photons"], r["bits"]) == (c, p, b)],
                      methods) for c, p, b in REAL_CONDITIONS
                 if any((r["camera"], r["photons"], r["bits"]) == (c, p, b) for r in real)],
        "camera": grouped(lambda r: r["camera"], lambda r: microscopy.CAMERAS.index(r["camera"])),
        "photons": grouped(lambda r: f"{r['photons']:g} ph", lambda r: r["photons"]),
        "all": [_row("all cases", results, methods)],
        "gate": {
            "cases": len(results),
            "ours_below_input": len(below),
            "ours_below_input_cases": [r["name"] for r in below],
            "ours_more_than_0.2_below_s1_where_s1_beats_input": len(auto_far),
            "auto_far_cases": [r["name"] for r in auto_far],
            "s1_below_input": len(s1_below),
            "worst_ours_minus_input_db": float(diffs[worst]),
            "worst_case": results[worst]["name"],
        },
    }


def markdown(report: dict) -> str:
    methods = report["methods"]
    refs = [k for k in ("input", "BM3D VST", "ours s=1") if k in methods]
    header = ["case", "n", *methods] + [f"ours - {k}: mean / min" for k in refs]
    gate = report["summary"]["gate"]
    lines = [
        "# Microscopy bench",
        "",
        ("Generated fluorescence with exact clean references (7 families x 4 cameras x 7 "
        "photon levels x 3 bit depths as a covering design; nothing stored, fixed seeds) and "
        "the corpus's real benchmark fields imaged by generated cameras. Made by "
        "`benchmarks/bench_microscopy.py` (see its docstring; do not edit this page by hand: "
        "rerun it). Cells are mean PSNR (dB) in the stored image's units against the exact "
        "expected signal, with the clean image's max - min as the data range. `ours` is "
        "`restore(noisy)` with its defaults (bundled denoiser, strength \"auto\"), `ours "
        "s=1` the network output (`strength=1.0`), `ours true noise` the defaults given the "
        "true noise law (`noise=`); `NL-means VST` and `BM3D VST` run after a generalised "
        "Anscombe transform given the true camera parameters."),
        "",
        (f"Run {report['date']}, {report['size']} px, {gate['cases']} cases, model "
        f"{report['model']}."),
        "",
        (f"- cases where `ours` < input: **{gate['ours_below_input']}** of {gate['cases']}; "
         f"worst `ours` - input {gate['worst_ours_minus_input_db']:+.2f} dB "
         f"({gate['worst_case']})"),
        (f"- cases where s=1 beats the input and `ours` is more than {AUTO_TOLERANCE_DB} dB "
         f"below s=1: **{gate['ours_more_than_0.2_below_s1_where_s1_beats_input']}**"),
        f"- cases where s=1 < input: {gate['s1_below_input']}",
        "",
    ]
    titles = {"family_photons": "Generated: family x photon level", "real": "Real fields",
              "camera": "Per camera", "photons": "Per photon level", "all": "All cases"}
    for key, title in titles.items():
        rows = report["summary"][key]
        if not rows:
            continue
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for row in rows:
            cells = [row["label"], str(row["n"])] + [f"{row['psnr'][m]:.2f}" for m in methods]
            cells += [f"{row[f'ours - {k}']['mean']:+.2f} / {row[f'ours - {k}']['min']:+.2f}"
                      for k in refs]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    seconds = {m: np.mean([r["seconds"][m] for r in report["cases"]]) for m in methods}
    lines.append("Mean seconds per case: " + ", ".join(f"{m} {s:.2f}" for m, s in
                                                       seconds.items())
                 + f". Total {report['runtime_s'] / 60:.1f} min on {report['machine']}.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def select(cases: list, count: int | None) -> list:
    """``count`` cases spread evenly over the list (all families), or all."""
    if not count or count >= len(cases):
        return cases
    picks = np.linspace(0, len(cases) - 1, count).round().astype(int)
    return [cases[i] for i in sorted(set(picks))]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the quick subset (8 cases, 96 px), no real fields")
    parser.add_argument("--size", type=int, help="side of the cases (default 128, quick 96)")
    parser.add_argument("--cases", type=int, help="run only N generated cases, spread evenly")
    parser.add_argument("--model", help="model file or finetune checkpoint (.pt) to evaluate "
                        "(default: the bundled denoiser)")
    parser.add_argument("--corpus", help="corpus folder for the real fields (default: the "
                        "standard one; 'none' leaves them out)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D (the slow baseline)")
    parser.add_argument("--no-given-noise", action="store_true",
                        help="skip the run given the true noise")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the tables as markdown")
    parser.add_argument("--baselines-from", metavar="JSON",
                        help="reuse NL-means and BM3D results of the same cases (same images: "
                        "checked by the input's PSNR) from an earlier --json report, e.g. "
                        "docs/benchmarks/microscopy_bench.json, to evaluate a --model quickly")
    parser.add_argument("--render", metavar="JSON", help="only write the markdown of an "
                        "earlier --json report (no cases run)")
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 32:
        parser.error("--size must be >= 32")
    if args.cases is not None and args.cases < 1:
        parser.error("--cases must be >= 1")
    return args


def _write(text: str, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.render:
        if not Path(args.render).is_file():
            raise SystemExit(f"--render: no report at {args.render}")
        report = json.loads(Path(args.render).read_text())
        _write(markdown(report), args.markdown)
        return report
    from napari_mprnet.training.corpus import default_corpus_dir

    started = time.perf_counter()
    size = args.size or (microscopy.QUICK_SIZE if args.quick else microscopy.BENCH_SIZE)
    cases = select(microscopy.bench_cases(quick=args.quick, size=size), args.cases)
    corpus = None if args.quick or args.corpus == "none" else (args.corpus
                                                               or default_corpus_dir())
    if corpus is not None:
        try:
            cases += real_cases(str(corpus), size)
        except ValueError as exc:
            print(f"real fields left out: {exc}", file=sys.stderr)
    table = method_table(args)
    methods = table["methods"]
    earlier = earlier_baselines(args.baselines_from)
    results = []
    for i, case in enumerate(cases):
        results.append(run_case(case, methods, earlier.get(case.name)))
        psnr = results[-1]["psnr"]
        print(f"[{i + 1}/{len(cases)}] {case.name}: input {psnr['input']:.2f}, ours "
              f"{psnr['ours']:.2f}, s=1 {psnr['ours s=1']:.2f}"
              + (f", BM3D {psnr['BM3D VST']:.2f}" if "BM3D VST" in psnr else ""),
              file=sys.stderr, flush=True)
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "size": size, "quick": args.quick, "model": table["model"],
        "methods": list(methods), "machine": f"{platform.machine()} {platform.system()}, "
        f"{platform.processor() or 'cpu'}, device {args.device}",
        "cases": results, "summary": summarise(results, list(methods)),
        "runtime_s": time.perf_counter() - started,
    }
    text = markdown(report)
    print(text)
    _write(json.dumps(report, indent=1) + "\n" if args.json else "", args.json)
    _write(text, args.markdown)
    return report


if __name__ == "__main__":
    main()

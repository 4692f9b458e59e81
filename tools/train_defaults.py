"""Train the default (bundled) denoise / deblur / derain models, reproducibly.

For each task: clean images from ``napari_mprnet.training.synthetic`` (scikit-image photographs
of the training split, dead leaves, synthetic fluorescence), degraded on the fly by the task's
random model (``napari_mprnet.training.degradations``), fed to
``napari_mprnet.training.trainer.finetune`` starting from a freshly initialised small MPRNet.
Validation uses held-out images only (the "val" split). The result is written as fp16
safetensors with full provenance, and ``registry.json`` in the output folder is updated
(file, SHA-256, trained, summary).

    python tools/train_defaults.py --task denoise --device cuda --minutes 10
    python tools/train_defaults.py --task all --device cuda --minutes 10 --refresh 4
    python tools/train_defaults.py --task derain --dry-run          # build the data, print the plan
    python tools/train_defaults.py --tiny --steps 3 --out-dir /tmp/models   # smoke run
    python tools/train_defaults.py --task denoise --corpus ~/.cache/napari-mprnet/corpus \
        --init-from src/napari_mprnet/pretrained/denoise.safetensors --steps 8000 \
        --checkpoint /work/train/denoise/checkpoint.pt --out-dir /work/train/denoise

With ``--corpus`` (a folder built by ``tools/build_corpus.py``) the clean pool comes from real
photographs and microscopy fields of the corpus's train split (plus a little procedural data,
see ``CORPUS_FAMILIES``) and validation from its val split; its benchmark split is never read
here. ``--checkpoint FILE`` writes a resumable checkpoint every ``--checkpoint-every`` steps
and, when FILE exists at start, continues from it (same arguments: a killed run is restarted
with the very same command). ``--stop-file FILE`` ends the run cleanly (model written) as soon
as FILE exists. ``--generated F`` replaces a share F of the training (and validation) pairs by
generated microscopy acquisitions (``napari_mprnet.training.acquisitions``: the bench's
clean-field families stored by a simulated photon-counting / read-noise camera, mapped to the
network's range exactly as ``restore()`` maps an image, streams seeded apart from the bench).

With ``--minutes`` and no ``--steps`` the number of steps is calibrated by a short timing probe
so that the cosine schedule ends within the budget; the budget is also enforced (a clean stop
through the trainer's callback). ``--refresh K`` regenerates the training pairs K times over
the run (the learning-rate schedule continues across refreshes through the trainer's
checkpoint/resume).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SCRIPT_NAME = "tools/train_defaults.py"
SCRIPT_VERSION = "1.0"
TASKS = ("denoise", "deblur", "derain")
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "napari_mprnet" / "pretrained"
DEFAULT_CONFIG = {"n_feat": 32, "scale_unetfeats": 16, "scale_orsnetfeats": 16, "num_cab": 4}
TINY_CONFIG = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "num_cab": 1}
DEFAULT_STEPS = 20000
PROBE_STEPS = 12
#: Training mix with --corpus: mostly real images, some procedural variety.
CORPUS_FAMILIES = {"photo": 0.5, "microscopy": 0.35, "fluorescence": 0.1, "dead_leaves": 0.05}
#: Validation mix with --corpus (real images of the corpus's val split only).
CORPUS_VAL_FAMILIES = {"photo": 0.6, "microscopy": 0.4}


def _family_weights(text: str) -> dict[str, float]:
    """Parse ``natural=0.6,dead_leaves=0.2`` into a family -> weight dict."""
    from napari_mprnet.training.corpus import REAL_FAMILIES
    from napari_mprnet.training.synthetic import FAMILIES

    known = (*FAMILIES, *REAL_FAMILIES)
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in known:
            raise argparse.ArgumentTypeError(
                f"unknown family {name!r}; choose from {', '.join(known)} (the last two "
                "need --corpus)")
        try:
            weights[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected NAME=WEIGHT with a number") from None
        if weights[name] < 0:
            raise argparse.ArgumentTypeError(f"{item!r}: weights must be >= 0")
    if sum(weights.values()) <= 0:
        raise argparse.ArgumentTypeError("at least one family needs a positive weight")
    return weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=(*TASKS, "all"), default="all")
    p.add_argument("--steps", type=int, help=f"optimisation steps per task (default "
                   f"{DEFAULT_STEPS}, or calibrated to --minutes)")
    p.add_argument("--minutes", type=float, help="wall-clock budget per task")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--pairs", type=int, default=2000, help="training pairs per data refresh")
    p.add_argument("--val-pairs", type=int, default=24, help="held-out validation pairs")
    p.add_argument("--crop", type=int, help="side of the stored training crops (default "
                   "patch + 32; the trainer cuts --patch-size patches from them)")
    p.add_argument("--val-size", type=int, default=192, help="side of the validation images")
    p.add_argument("--pool-size", type=int, default=192, help="clean images in the train pool")
    p.add_argument("--pool-image-size", type=int, default=256)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-4, help="peak learning rate (Adam)")
    p.add_argument("--min-lr", type=float, default=1e-6, help="end of the cosine schedule")
    p.add_argument("--warmup-steps", type=int, help="default: min(100, steps // 20)")
    p.add_argument("--refresh", type=int, default=1,
                   help="regenerate the training pairs this many times over the run")
    p.add_argument("--n-feat", type=int)
    p.add_argument("--scale-unetfeats", type=int)
    p.add_argument("--scale-orsnetfeats", type=int)
    p.add_argument("--num-cab", type=int)
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test preset: tiny network, few small pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--families", type=_family_weights, metavar="NAME=W,...",
                   help="mix of clean-image families in the training pool, e.g. "
                   "natural=0.6,dead_leaves=0.2,fluorescence=0.2 (default: the standard mix; "
                   "validation always uses the standard mix)")
    p.add_argument("--init-from", type=Path, metavar="MODEL",
                   help="continue training from this model file (same configuration, one "
                   "task) instead of a fresh network; its provenance is kept in the new file")
    p.add_argument("--corpus", type=Path, metavar="DIR",
                   help="real-image corpus built by tools/build_corpus.py: train on its train "
                   "split, validate on its val split")
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="resumable checkpoint, written every --checkpoint-every steps; "
                   "continued from when it exists (rerun the same command after a kill)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--val-every", type=int,
                   help="validate every this many steps (default: about 20 times per run)")
    p.add_argument("--stop-file", type=Path, metavar="FILE",
                   help="stop cleanly (model and checkpoint written) once this file exists")
    p.add_argument("--generated", type=float, default=0.0, metavar="F",
                   help="share of training and validation pairs drawn from generated "
                   "microscopy acquisitions (0-1; default 0)")
    p.add_argument("--generated-field", type=int, default=256, metavar="PX",
                   help="side of each generated field (normalised whole, then cropped)")
    p.add_argument("--out-dir", type=Path, default=PACKAGE_DIR,
                   help="where {task}.safetensors and registry.json go (default: the package)")
    p.add_argument("--dry-run", action="store_true",
                   help="build the data and print the plan; train and write nothing")
    args = p.parse_args(argv)
    config = dict(TINY_CONFIG if args.tiny else DEFAULT_CONFIG)
    for key in config:
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    args.config = config
    if args.tiny:
        # small everything, unless given explicitly
        defaults = {"pairs": 2000, "val_pairs": 24, "patch_size": 128, "batch_size": 16,
                    "pool_size": 192, "val_size": 192, "pool_image_size": 256}
        tiny = {"pairs": 16, "val_pairs": 2, "patch_size": 32, "batch_size": 2, "pool_size": 4,
                "val_size": 32, "pool_image_size": 64}
        for key, value in tiny.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    args.crop = args.crop or args.patch_size + (8 if args.tiny else 32)
    if args.crop > args.pool_image_size:
        p.error(f"--crop ({args.crop}) must not exceed --pool-image-size ({args.pool_image_size})")
    if args.refresh < 1:
        p.error("--refresh must be >= 1")
    if not 0.0 <= args.generated <= 1.0:
        p.error(f"--generated must be a share in [0, 1], got {args.generated}")
    if args.generated > 0 and args.task != "denoise":
        p.error("--generated adds noisy microscopy acquisitions: only for --task denoise")
    if args.generated > 0 and args.generated_field < max(args.crop, args.val_size):
        p.error(f"--generated-field ({args.generated_field}) must be at least --crop "
                f"({args.crop}) and --val-size ({args.val_size})")
    args.tasks = list(TASKS) if args.task == "all" else [args.task]
    if args.corpus is not None:
        from napari_mprnet.training.corpus import read_manifest

        args.corpus = args.corpus.expanduser()
        try:
            read_manifest(args.corpus)
        except ValueError as err:
            p.error(str(err))
        args.families = args.families or dict(CORPUS_FAMILIES)
    elif args.families and set(args.families) - {"natural", "dead_leaves", "fluorescence"}:
        p.error("the families photo and microscopy need --corpus")
    if args.checkpoint is not None and len(args.tasks) != 1:
        p.error("--checkpoint belongs to one run: give a single --task")
    if args.checkpoint is not None and not args.steps:
        p.error("--checkpoint needs --steps (a resumed run must plan the same schedule)")
    if args.init_from is not None and len(args.tasks) != 1:
        p.error("--init-from continues one model: give a single --task")
    return args


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({device.type})"


def _psnr_ssim(inputs: list[np.ndarray], targets: list[np.ndarray]) -> tuple[float, float]:
    from napari_mprnet.training.metrics import psnr, ssim

    def chw(a: np.ndarray) -> np.ndarray:
        return a if a.ndim == 2 else np.moveaxis(a, -1, 0)

    scores = [(psnr(chw(np.clip(x, 0, 1)), chw(y)), ssim(chw(np.clip(x, 0, 1)), chw(y)))
              for x, y in zip(inputs, targets)]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def _describe_pairs(pairs: list[np.ndarray]) -> dict:
    grey = sum(p.ndim == 2 for p in pairs)
    return {"count": len(pairs), "grey": grey, "colour": len(pairs) - grey,
            "shape": list(pairs[0].shape[:2]) if pairs else None}


class Budget:
    """Wall-clock budget shared by the probe and all training chunks of one task."""

    def __init__(self, minutes: float | None) -> None:
        self.start = time.perf_counter()
        self.seconds = None if minutes is None else minutes * 60.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()


class MixedPairs:
    """Pairs from a clean-pool generator and, for a share of each draw, from generated
    microscopy acquisitions (``napari_mprnet.training.acquisitions``)."""

    def __init__(self, base, generated=None, share: float = 0.0) -> None:
        self.base, self.generated, self.share = base, generated, float(share)

    def pairs(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        n_generated = round(n * self.share) if self.generated is not None else 0
        inputs, targets = self.base.pairs(n - n_generated) if n > n_generated else ([], [])
        if n_generated:
            more = self.generated.pairs(n_generated)
            inputs, targets = list(inputs) + more[0], list(targets) + more[1]
        return inputs, targets


def _new_model(config: dict, task: str, seed: int):
    from napari_mprnet.model import MPRNet, MPRNetConfig

    torch.manual_seed(seed)
    model = MPRNet(MPRNetConfig(**config))
    model.metadata = {"task": task}
    return model


def _continued_model(path: Path, config: dict, task: str):
    """The model in ``path`` as a float32 starting point, and what to record about it."""
    from napari_mprnet.weights import load_model

    model = load_model(path).float()
    found = {key: getattr(model.config, key) for key in config}
    if found != config:
        raise ValueError(f"--init-from {path}: its configuration {found} differs from the "
                         f"one requested {config}; pass the same --n-feat/--num-cab etc.")
    metadata = dict(getattr(model, "metadata", None) or {})
    if metadata.get("task", task) != task:
        raise ValueError(f"--init-from {path} is a {metadata['task']!r} model, not {task!r}")
    previous = metadata.get("provenance") or {}
    origin = {"file": Path(path).name,
              "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
              "provenance": previous}
    model.metadata = {"task": task}
    return model, origin


def _checkpoint_step(path: Path) -> int | None:
    """The step of the checkpoint at ``path``, None when there is none yet."""
    if not path.exists():
        return None
    from napari_mprnet.training.trainer import load_checkpoint

    return int(load_checkpoint(path)["step"])


def _corpus_summary(folder: Path) -> dict:
    """What the provenance records about the corpus: sources, licences, counts per split."""
    from napari_mprnet.training.corpus import read_manifest

    manifest = read_manifest(folder)
    sources: dict[str, dict] = {}
    for entry in manifest["entries"]:
        if entry["split"] == "benchmark":
            continue
        package = (f"{entry['registry']}:{entry['package']}=={entry['version']}"
                   if {"registry", "package", "version"} <= set(entry) else None)
        src = sources.setdefault(entry.get("source", "?"), {
            "package": package, "licence": entry.get("licence"), "kind": entry["kind"],
            "crops": 0})
        src["crops"] += 1
    return {"builder": "tools/build_corpus.py", "counts": manifest["counts"],
            "sources": sources}


def _generated_summary(args: argparse.Namespace, gen) -> dict | None:
    """The generated share of the pairs and how they are drawn (None: not used)."""
    if args.generated <= 0:
        return None
    return {"share": args.generated, **gen.generated.describe()}


def _finetune_kwargs(args: argparse.Namespace, steps: int, seed: int) -> dict:
    return {
        "steps": steps, "patch_size": args.patch_size, "batch_size": args.batch_size,
        "learning_rate": args.lr, "min_learning_rate": args.min_lr,
        "warmup_steps": args.warmup_steps, "device": args.device, "precision": args.precision,
        "normalize": "none", "seed": seed, "compile": args.compile,
        # about 20 validations per run; short (smoke) runs validate only at the end
        "val_every": args.val_every or (max(1, steps // 20) if steps >= 40 else steps),
    }


def calibrate_steps(args: argparse.Namespace, task: str, seed: int, train: tuple,
                    budget: Budget) -> tuple[int, float]:
    """Seconds per step from a short probe run; steps that fit the remaining budget."""
    from napari_mprnet.training.trainer import finetune

    stamps: list[float] = []
    finetune(train[0], train[1], model=_new_model(args.config, task, seed),
             **{**_finetune_kwargs(args, PROBE_STEPS, seed), "val_every": PROBE_STEPS * 10,
                "warmup_steps": 0},
             val_fraction=0.0,
             callback=lambda event: "loss" in event and stamps.append(time.perf_counter()))
    per_step = float(np.median(np.diff(stamps[2:]))) if len(stamps) > 3 else 1.0
    # leave room for validation (~5%), data refreshes and saving
    usable = max(budget.left() * 0.88, per_step)
    return max(1, int(usable / per_step)), per_step


def train_task(args: argparse.Namespace, task: str, task_index: int) -> dict:
    from napari_mprnet.training.degradations import DEGRADATION_MODEL, PairGenerator
    from napari_mprnet.training.synthetic import FAMILIES, NATURAL_TRAIN, NATURAL_VAL

    budget = Budget(args.minutes)
    seed = args.seed * 100 + task_index
    started = time.perf_counter()
    gen = PairGenerator(task, "train", args.crop, seed, pool_size=args.pool_size,
                        pool_image_size=args.pool_image_size, families=args.families,
                        corpus=args.corpus)
    val_kwargs = ({"families": dict(CORPUS_VAL_FAMILIES), "corpus": args.corpus}
                  if args.corpus is not None else {})
    val_gen = PairGenerator(task, "val", args.val_size, seed, pool_size=max(args.val_pairs, 1),
                            pool_image_size=max(args.val_size, args.pool_image_size // 2),
                            **val_kwargs)
    if args.generated > 0:
        from napari_mprnet.training.acquisitions import AcquisitionPairs

        gen = MixedPairs(gen, AcquisitionPairs("train", args.crop, seed,
                                               field_size=args.generated_field),
                         args.generated)
        val_gen = MixedPairs(val_gen, AcquisitionPairs("val", args.val_size, seed,
                                                       field_size=args.generated_field),
                             args.generated)
    val = val_gen.pairs(args.val_pairs)
    train = gen.pairs(args.pairs)
    data_seconds = time.perf_counter() - started
    val_input_psnr, val_input_ssim = _psnr_ssim(*val)
    origin = None
    if args.init_from is not None:
        model, origin = _continued_model(args.init_from, args.config, task)
    else:
        model = _new_model(args.config, task, seed)
    n_params = sum(p.numel() for p in model.parameters())
    plan = {
        "task": task, "seed": seed, "config": args.config, "params": n_params,
        "fp16_megabytes": round(n_params * 2 / 1e6, 2),
        "train_pairs": _describe_pairs(train[1]), "val_pairs": _describe_pairs(val[1]),
        "refresh": args.refresh, "data_seconds": round(data_seconds, 2),
        "val_input_psnr": round(val_input_psnr, 3), "val_input_ssim": round(val_input_ssim, 4),
        "patch_size": args.patch_size, "batch_size": args.batch_size,
        "lr": args.lr, "min_lr": args.min_lr, "device": args.device,
        "steps": args.steps if args.steps else (
            "calibrated to the budget" if args.minutes else DEFAULT_STEPS),
        "minutes": args.minutes, "out": str(args.out_dir / f"{task}.safetensors"),
        "init_from": str(args.init_from) if args.init_from else None,
        "families": args.families or FAMILIES,
        "corpus": str(args.corpus) if args.corpus else None,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "generated": _generated_summary(args, gen),
    }
    try:
        import napari_mprnet.training.trainer as trainer_module

        plan["finetune_available"] = hasattr(trainer_module, "finetune")
    except ImportError:
        plan["finetune_available"] = False
    if args.dry_run:
        return plan

    from napari_mprnet.training.trainer import StopTraining, finetune

    steps, per_step = args.steps, None
    if not steps:
        if args.minutes:
            steps, per_step = calibrate_steps(args, task, seed, train, budget)
        else:
            steps = DEFAULT_STEPS
    print(f"[{task}] {steps} steps" + (f" (~{per_step:.3f} s/step measured)" if per_step
                                        else ""), file=sys.stderr, flush=True)
    bounds = np.linspace(0, steps, args.refresh + 1).round().astype(int)[1:]
    bounds = sorted({int(b) for b in bounds if b > 0})
    result = None
    out_of_time = False
    with tempfile.TemporaryDirectory(prefix=f"train_{task}_") as tmp:
        ckpt = args.checkpoint or Path(tmp) / "checkpoint.pt"
        persistent = args.checkpoint is not None
        resumed_at = _checkpoint_step(ckpt) if persistent else None
        first_chunk = 0
        if resumed_at is not None:  # continue a killed run: replay its data refreshes
            first_chunk = next((i for i, b in enumerate(bounds) if b > resumed_at),
                               len(bounds) - 1)
            for _ in range(first_chunk):
                train = gen.pairs(args.pairs)
            print(f"[{task}] resuming from {ckpt} at step {resumed_at}", file=sys.stderr,
                  flush=True)
        for chunk, end in enumerate(bounds):
            if chunk < first_chunk:
                continue
            if chunk > first_chunk:
                train = gen.pairs(args.pairs)

            def callback(event: dict, end: int = end) -> bool:
                nonlocal out_of_time
                if "loss" not in event:  # the trainer's plan and step rate
                    print(f"[{task}] {event['message']}", file=sys.stderr, flush=True)
                    return True
                if event["step"] % 200 == 0 or "val_psnr" in event:
                    extra = (f" val {event['val_psnr']:.2f} dB" if "val_psnr" in event else "")
                    print(f"[{task}] step {event['step']}/{steps} loss {event['loss']:.4f} "
                          f"lr {event['lr']:.2e}{extra}", file=sys.stderr, flush=True)
                if budget.left() <= 0 or (args.stop_file and args.stop_file.exists()):
                    out_of_time = True
                    raise StopTraining
                return not (event["step"] >= end and end < steps)

            result = finetune(
                train[0], train[1], model=model, val_inputs=val[0], val_targets=val[1],
                **_finetune_kwargs(args, steps, seed), callback=callback,
                checkpoint_path=ckpt if len(bounds) > 1 or persistent else None,
                checkpoint_every=(args.checkpoint_every if persistent
                                  else steps if len(bounds) > 1 else None),
                resume_from=ckpt if chunk > 0 or resumed_at is not None else None,
                resume_other_data=chunk > first_chunk,  # pairs regenerated for this chunk
            )
            if out_of_time:
                break
    assert result is not None
    wall = budget.elapsed()
    dev = torch.device(result.device)
    provenance = {
        "script": SCRIPT_NAME, "script_version": SCRIPT_VERSION, "seed": seed,
        "data": {
            "families": args.families or FAMILIES,
            "corpus": _corpus_summary(args.corpus) if args.corpus else None,
            "natural_train": list(NATURAL_TRAIN),
            "natural_val": list(NATURAL_VAL), "train_pairs_per_refresh": args.pairs,
            "refreshes": args.refresh, "crop": args.crop, "pool_size": args.pool_size,
            "pool_image_size": args.pool_image_size, "val_pairs": args.val_pairs,
            "val_size": args.val_size, "generated": _generated_summary(args, gen),
        },
        "degradation": {"task": task, **DEGRADATION_MODEL[task]},
        "config": args.config,
        "steps": result.steps_done, "steps_planned": steps,
        "stopped_by_budget": out_of_time,
        "patch_size": args.patch_size, "batch_size": args.batch_size,
        "lr_schedule": {"optimizer": "Adam", "peak": args.lr, "min": args.min_lr,
                        "warmup_steps": (result.metadata.get("provenance") or {}).get(
                            "warmup_steps"), "shape": "linear warm-up, cosine"},
        "loss": "Charbonnier + 0.05 edge, summed over the 3 stages",
        "device": str(dev), "device_name": device_name(dev), "precision": result.precision,
        "wall_clock_s": round(wall, 1), "torch_version": torch.__version__,
        "val_input_psnr": val_input_psnr, "val_input_ssim": val_input_ssim,
        "val_psnr": result.best_val_psnr, "val_ssim": result.best_val_ssim,
        "best_step": result.best_step,
    }
    total_steps, total_wall = result.steps_done, wall
    if origin is not None:
        before = origin["provenance"]
        total_steps += int(before.get("total_steps", before.get("steps", 0)))
        total_wall += float(before.get("total_wall_clock_s", before.get("wall_clock_s", 0.0)))
        provenance["init_from"] = origin
    provenance["total_steps"], provenance["total_wall_clock_s"] = total_steps, round(total_wall, 1)
    cfg = args.config
    summary = (
        f"default {task} model (MPRNet n_feat {cfg['n_feat']}, {n_params / 1e6:.1f} M params), "
        f"trained {total_steps} steps on "
        f"{'real and synthetic' if args.corpus else 'synthetic'} data"
        f"{' and generated microscopy acquisitions' if args.generated > 0 else ''}; " + (
            f"held-out validation PSNR {result.best_val_psnr:.2f} dB (degraded input "
            f"{val_input_psnr:.2f} dB)" if result.best_val_psnr is not None
            else "not validated (stopped before the first validation)")
    )
    metadata = {"task": task, "trained": True, "summary": summary,
                "normalization": result.metadata.get("normalization"),
                "provenance": provenance}
    from napari_mprnet.weights import save_model

    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = save_model(result.model, args.out_dir / f"{task}.safetensors", metadata,
                      dtype=torch.float16)
    registry_file = args.out_dir / "registry.json"
    registry = json.loads(registry_file.read_text()) if registry_file.exists() else {}
    registry[task] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "trained": True, "summary": summary}
    registry_file.write_text(json.dumps(registry, indent=1, sort_keys=True) + "\n")
    plan.update({"steps": result.steps_done, "val_psnr": result.best_val_psnr,
                 "val_ssim": result.best_val_ssim, "wall_clock_s": round(wall, 1),
                 "written": str(path)})
    return plan


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    reports = []
    for task in args.tasks:
        report = train_task(args, task, TASKS.index(task))
        print(json.dumps(report, indent=1, default=str), flush=True)
        reports.append(report)
    return reports


if __name__ == "__main__":
    main()

"""``napari-mprnet finetune``: fine-tune a model on folders of paired TIFF images, or on
noisy images alone (``--method noise2void``, or ``noise2noise`` with ``--pairs-from-series``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from .common import fail

__all__ = ["BLIND_SPOT_MASKS", "add_parser", "run"]

#: ``training.blindspot.MASKS``, spelled out so that building the parser does not import
#: torch (tests/test_cli_startup.py checks that the two agree).
BLIND_SPOT_MASKS = ("pixel", "horizontal", "vertical", "square")

_MODEL_SUFFIXES = (".safetensors", ".pth", ".pt")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``finetune`` sub-command."""
    parser = subparsers.add_parser(
        "finetune", help="fine-tune a model on paired degraded/clean TIFF folders",
        description="Fine-tune MPRNet on pairs of degraded (--inputs) and clean (--targets) "
        "TIFF images matched by file name, validate on held-out planes, and save the best "
        "model with its normalisation and provenance (use it with 'restore --weights'). "
        "Without --targets it trains on the noisy inputs alone (self-supervised, "
        "--method).",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--inputs", type=Path, required=True,
                      help="folder of degraded TIFF images")
    data.add_argument("--targets", type=Path, default=None,
                      help="folder of clean TIFF images with the same file names (none: "
                      "self-supervised; with --method noise2noise: independent noisy "
                      "acquisitions)")
    data.add_argument("--method", choices=("supervised", "noise2noise", "noise2void"),
                      default=None, help="training objective (default: supervised with "
                      "--targets, noise2void without, noise2noise with --pairs-from-series); "
                      "noise2void needs noise independent from pixel to pixel: for correlated "
                      "camera noise use --pairs-from-series on repeated frames, or "
                      "--blind-spot-mask")
    data.add_argument("--pairs-from-series", action="store_true",
                      help="noise2noise pairs from neighbouring frames of each input stack "
                      "(t, t+1); validation on held-out blocks of frames")
    data.add_argument("--blind-spot-mask", choices=BLIND_SPOT_MASKS, default="pixel",
                      help="noise2void: hide the masked pixel alone (default; needs noise "
                      "independent from pixel to pixel), or with its neighbours along x, "
                      "along y or in a square, for camera noise correlated in that direction "
                      "(for noise correlated every way, prefer --pairs-from-series on "
                      "repeated frames)")
    data.add_argument("--blind-spot-span", type=int, default=2,
                      help="half-length of a structured --blind-spot-mask (default: 2)")
    data.add_argument("--blind-spot-loss", choices=("mse", "charbonnier"), default="mse",
                      help="noise2void distance: mse (default; unbiased for any zero-mean "
                      "noise, photon counts included) or charbonnier (robust to outliers, "
                      "for symmetric heavy-tailed noise only)")
    data.add_argument("--val-inputs", type=Path, default=None,
                      help="folder of degraded validation images (default: hold out planes)")
    data.add_argument("--val-targets", type=Path, default=None,
                      help="folder of clean validation images")
    data.add_argument("--val-fraction", type=float, default=0.1,
                      help="fraction of planes held out for validation (default: 0.1)")
    data.add_argument("--normalize", choices=("auto", "percentile", "range", "none"),
                      default="auto", help="intensity normalisation (default: auto)")
    train = parser.add_argument_group("training")
    train.add_argument("--base", default="denoise",
                       help="starting model: denoise, deblur, derain or a model file "
                       "(default: denoise)")
    train.add_argument("--steps", type=int, default=1000, help="optimisation steps")
    train.add_argument("--patch-size", type=int, default=128,
                       help="training crop side, a multiple of 8 (default: 128)")
    train.add_argument("--batch-size", type=int, default=8, help="crops per step (default: 8)")
    train.add_argument("--lr", type=float, default=None,
                       help="peak learning rate, annealed by a cosine (default: 2e-4; 5e-5 "
                       "for the self-supervised methods)")
    train.add_argument("--min-lr", type=float, default=1e-6,
                       help="final learning rate (default: 1e-6)")
    train.add_argument("--warmup", type=int, default=None,
                       help="warm-up steps (default: min(100, steps/20))")
    train.add_argument("--val-every", type=int, default=None,
                       help="validate every N steps (default: steps/10)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--device", default="auto",
                       help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps")
    train.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default=None,
                       help="autocast precision (default auto: bf16 on CUDA and on CPUs with "
                       "native bf16, fp32 elsewhere; weights stay fp32)")
    train.add_argument("--compile", action="store_true", help="use torch.compile")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training on several GPUs (or CPU processes); start "
                       "with 'torchrun --nproc_per_node=N -m napari_mprnet finetune "
                       "--distributed ...' (--batch-size is per process)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, required=True,
                        help="where to save the model (.safetensors)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    output.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint file (.pt) written during training")
    output.add_argument("--checkpoint-every", type=int, default=None,
                        help="checkpoint every N steps (default: steps/10 with --checkpoint)")
    output.add_argument("--resume", type=Path, default=None,
                        help="continue from a checkpoint (same data and settings)")
    output.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> None:
    """Fail fast (before loading anything) on unusable paths."""
    out: Path = args.out
    if out.suffix.lower() not in _MODEL_SUFFIXES:
        raise ValueError(f"--out must end in .safetensors (or .pth), got '{out}'")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"'{out}' exists; pass --overwrite to replace it")
    if out.is_dir():
        raise ValueError(f"--out is a folder: {out}")
    for flag, folder in (("--inputs", args.inputs), ("--targets", args.targets),
                         ("--val-inputs", args.val_inputs), ("--val-targets", args.val_targets)):
        if folder is None:
            continue
        if not folder.exists():
            raise FileNotFoundError(f"{flag} folder not found: {folder}")
        if not folder.is_dir():
            raise ValueError(f"{flag} must be a folder of TIFF files, got a file: {folder}")
    if (args.val_inputs is None) != (args.val_targets is None):
        raise ValueError("give both --val-inputs and --val-targets, or neither")
    if args.resume is not None and not args.resume.exists():
        raise FileNotFoundError(f"--resume checkpoint not found: {args.resume}")
    from ..model.presets import TASKS

    base = args.base
    if base not in TASKS and not Path(base).exists():
        raise FileNotFoundError(f"--base must be denoise, deblur, derain or a model file; "
                                f"'{base}' not found")


class _Progress:
    """A tqdm bar fed by the trainer's callback (created at the first step, so that errors
    before training print nothing but the error); the trainer's info events (what it will
    do, the step rate) are printed as lines."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.val_psnr: float | None = None
        self.val_loss: float | None = None

    def __call__(self, event: dict) -> None:
        if "loss" not in event:  # an info event: the plan before training, the step rate
            if not self.quiet and event.get("message"):
                self._line(str(event["message"]))
            return
        self.val_psnr = event.get("val_psnr", self.val_psnr)
        self.val_loss = event.get("val_loss", self.val_loss)
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            # a resumed run starts where the interrupted one stopped
            self.bar = tqdm(total=event["steps"], initial=event["step"] - 1,
                            desc="fine-tuning", unit="step", file=sys.stderr,
                            dynamic_ncols=True)
        postfix = {"loss": f"{event['loss']:.4f}", "lr": f"{event['lr']:.1e}"}
        if self.val_psnr is not None:
            postfix["val_psnr"] = f"{self.val_psnr:.2f}"
        if self.val_loss is not None:
            postfix["val_loss"] = f"{self.val_loss:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def _line(self, text: str) -> None:
        if self.bar is None:
            print(text, file=sys.stderr, flush=True)
        else:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    from ..training.distributed import LAUNCH_HINT, is_distributed, torchrun_env
    from ..training.trainer import TrainingDiverged, finetune

    try:
        env = torchrun_env()
        if args.distributed and env is None and not is_distributed():
            raise ValueError(f"--distributed needs the torchrun launcher; {LAUNCH_HINT}")
        _check(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        return fail(str(err))
    # under torchrun only rank 0 reports (errors every rank may hit differently excepted)
    rank = env.rank if env is not None else 0
    prefix = f"[rank {rank}] " if rank else ""
    progress = _Progress(args.quiet or rank != 0)
    start = time.perf_counter()
    try:
        result = finetune(
            str(args.inputs), None if args.targets is None else str(args.targets),
            method=args.method, pairs_from_series=args.pairs_from_series,
            blind_spot_mask=args.blind_spot_mask, blind_spot_span=args.blind_spot_span,
            blind_spot_distance=args.blind_spot_loss,
            val_inputs=None if args.val_inputs is None else str(args.val_inputs),
            val_targets=None if args.val_targets is None else str(args.val_targets),
            model=args.base, steps=args.steps, patch_size=args.patch_size,
            batch_size=args.batch_size, learning_rate=args.lr, min_learning_rate=args.min_lr,
            warmup_steps=args.warmup, val_fraction=args.val_fraction, val_every=args.val_every,
            checkpoint_every=args.checkpoint_every, checkpoint_path=args.checkpoint,
            device=args.device, precision=args.precision, normalize=args.normalize,
            seed=args.seed, save_to=args.out, resume_from=args.resume, callback=progress,
            compile=args.compile, distributed=True if args.distributed else None,
        )
    except TrainingDiverged as err:
        progress.close()
        return fail(str(err), status=1) if rank == 0 else 1  # the same on every rank
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        progress.close()
        return fail(prefix + str(err))
    progress.close()
    if result.rank != 0:
        return 0
    seconds = time.perf_counter() - start
    lines = [
        (f"fine-tuned {result.steps_done} steps in {seconds:.1f} s on {result.device} "
         f"({result.precision})"
         + (f" x {result.world_size} processes" if result.world_size > 1 else "")
         + f"; {result.n_train} training / {result.n_val} validation planes"),
        f"final loss: {_fmt(result.final_loss, digits=4)}",
    ]
    if result.base_val_loss is not None:
        lines.append(f"validation loss (self-supervised, lower is better): base "
                     f"{_fmt(result.base_val_loss, digits=5)} -> best "
                     f"{_fmt(result.best_val_loss, digits=5)} (step {result.best_step})")
        if result.best_step == 0:
            lines.append("note: no step improved on the starting model clearly (by 2 "
                         "standard errors), which is saved unchanged")
    if result.n_val and result.base_val_psnr is not None:
        gain = (
            result.best_val_psnr - result.base_val_psnr
            if result.best_val_psnr is not None and result.base_val_psnr is not None else None
        )
        lines.append(
            f"validation PSNR: base {_fmt(result.base_val_psnr, ' dB')} -> best "
            f"{_fmt(result.best_val_psnr, ' dB')} (step {result.best_step}, "
            f"{'+' if gain is not None and gain >= 0 else ''}{_fmt(gain, ' dB')}); SSIM: base "
            f"{_fmt(result.base_val_ssim, digits=4)} -> best "
            f"{_fmt(result.best_val_ssim, digits=4)}"
        )
        if gain is not None and gain < 0:
            lines.append("warning: the fine-tuned model is worse than the base model on the "
                         "validation planes; try a lower --lr or more data")
    elif not result.n_val:
        lines.append("no validation planes (use --val-fraction or --val-inputs/--val-targets)")
    if result.stopped:
        lines.append(f"stopped early at step {result.steps_done}")
    lines.append(f"saved model: {result.saved_to}")
    if result.checkpoint_path:
        lines.append(f"checkpoint: {result.checkpoint_path}")
    print("\n".join(lines))
    return 0

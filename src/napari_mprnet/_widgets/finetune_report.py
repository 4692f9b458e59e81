"""What the Fine-tune widget says: its self-supervised method choices and the status lines
during and after a run (validation PSNR with a clean target, the self-supervised score
without one, against the starting model's)."""

from __future__ import annotations

from typing import Any

__all__ = ["SELF_SUPERVISED_METHODS", "VALIDATION_TIP", "result_text", "step_text",
           "validation_of"]

#: Method choices without a target: label -> (method, pairs_from_series, blind-spot mask,
#: blind-spot distance).
SELF_SUPERVISED_METHODS = {
    "Noise2Void (noisy images)": ("noise2void", False, "pixel", "mse"),
    "Noise2Noise (neighbouring frames of a stack)": ("noise2noise", True, "pixel", "mse"),
    "Noise2Void, blind line along x (noise correlated along rows)":
        ("noise2void", False, "horizontal", "mse"),
    "Noise2Void, blind line along y (noise correlated along columns)":
        ("noise2void", False, "vertical", "mse"),
    "Noise2Void, blind 5 x 5 block (noise correlated in blotches)":
        ("noise2void", False, "square", "mse"),
    "Noise2Void, outlier-robust loss (symmetric heavy-tailed noise)":
        ("noise2void", False, "pixel", "charbonnier"),
}

VALIDATION_TIP = (
    "Fraction held out for validation, never trained on: whole planes (at least one) when "
    "the data has several, a band of the image (its bottom rows, or right-hand columns) "
    "when it has one. Validation reports PSNR against the target, or without a target the "
    "self-supervised loss (lower is better); the best step is kept. 0 = no validation"
)


def validation_of(event: dict) -> tuple[str, float] | None:
    """``("psnr", dB)`` or ``("loss", value)`` of a trainer event, or None without one."""
    if event.get("val_psnr") is not None:
        return "psnr", float(event["val_psnr"])
    if event.get("val_loss") is not None:
        return "loss", float(event["val_loss"])
    return None


def _score(kind: str, value: float) -> str:
    return f"val PSNR {value:.2f} dB" if kind == "psnr" else f"val loss {value:.4f}"


def step_text(step: int, steps: int, loss: float, last_val: tuple[str, float] | None,
              start: tuple[str, float] | None) -> str:
    """E.g. "Step 40/200: loss 0.0123, val PSNR 33.10 dB (start 31.20)"."""
    text = f"Step {step}/{steps}: loss {loss:.4f}"
    if last_val is not None:
        text += f", {_score(*last_val)}"
        if start is not None and start[0] == last_val[0]:
            text += f" (start {start[1]:.4g})"
    return text


def result_text(result: Any, seconds: float) -> str:
    """The end of a run: steps, time and the kept model's validation score against the
    starting model's (what tells the user whether fine-tuning helped)."""
    how = "Stopped" if result.stopped else "Done"
    text = f"{how} after {result.steps_done} steps in {seconds:.1f} s"
    if result.best_val_psnr is not None:
        text += f"; validation PSNR {result.best_val_psnr:.2f} dB"
        if result.base_val_psnr is not None:
            gain = result.best_val_psnr - result.base_val_psnr
            text += f" (starting model {result.base_val_psnr:.2f} dB, {gain:+.2f} dB)"
    elif result.best_val_loss is not None:
        text += f"; self-supervised validation loss {result.best_val_loss:.4f}"
        if result.base_val_loss is not None:
            text += f" (starting model {result.base_val_loss:.4f}; lower is better)"
        if result.best_step == 0:
            text += ("; no step beat the starting model clearly (by 2 standard errors), "
                     "which is kept")
    else:
        text += "; no validation (validation fraction 0, or an image too small to hold out)"
    return text

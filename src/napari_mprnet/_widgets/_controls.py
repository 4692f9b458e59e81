"""Controls shared by the restore and fine-tune widgets (weights choice, device label)."""

from __future__ import annotations

from qtpy.QtWidgets import QAbstractSpinBox, QComboBox, QDoubleSpinBox, QLabel, QLineEdit, QWidget

from ..engine.devices import describe_device
from ..engine.strength import fixed_weight
from .settings import WeightsChoice
from .weights_registry import registered_weights

__all__ = ["ERROR_STYLE", "NoiseSpin", "alive", "fill_weights_combo", "noise_applies",
           "set_strength", "show_device", "strength_spin", "strength_value", "weights_choice"]

ERROR_STYLE = "color: #e05050;"
#: Value of the strength spin box that stands for "auto".
_AUTO_STRENGTH = -0.05
_STRENGTH_TIP = (
    "How far the result moves from the input towards the network output, per 2-D plane: "
    "1 = the network output, 0 = the input. 'auto' (denoising) measures the image's noise "
    "and picks the blend with the lowest expected error (Stein's unbiased risk estimate; "
    "fine detail and smooth intensity weighed apart), so that nearly clean images keep "
    "their detail; other tasks: auto = 1"
)


def strength_spin() -> QDoubleSpinBox:
    """The strength control: "auto" (its minimum), or 0 to 1.5 in steps of 0.05."""
    spin = QDoubleSpinBox()
    spin.setRange(_AUTO_STRENGTH, 1.5)
    spin.setSingleStep(0.05)
    spin.setDecimals(2)
    spin.setSpecialValueText("auto")
    spin.setToolTip(_STRENGTH_TIP)
    return spin


def strength_value(spin: QDoubleSpinBox) -> float | str:
    """The ``restore(strength=...)`` value shown by ``spin``."""
    value = round(spin.value(), 2)
    return "auto" if value <= _AUTO_STRENGTH else value


def set_strength(spin: QDoubleSpinBox, strength: float | str) -> None:
    spin.setValue(_AUTO_STRENGTH if strength == "auto" else float(strength))


_NOISE_TIP = (
    "The noise level 'auto' strength assumes when denoising: the standard deviation of "
    "Gaussian noise in the layer's own intensity units (the values of its pixels: 0-255 for "
    "8-bit images, ADU for a camera's 16-bit images). 'auto' estimates it from the image; "
    "give it where you know it (camera read noise, a simulated sigma): it helps on finely "
    "textured images with little noise. Used with Strength 'auto' and the denoise task only; "
    "Poisson-Gaussian (gain, offset variance): restore(noise=...) or --noise GAIN,OFFSET"
)


class NoiseSpin(QDoubleSpinBox):
    """The noise control: "auto" (its minimum, 0), or a Gaussian standard deviation in the
    layer's intensity units; enabled only while ``task_combo`` says denoise and ``strength``
    "auto" (:func:`noise_applies`), the only runs that use it."""

    def __init__(self, task_combo: QComboBox, strength: QDoubleSpinBox) -> None:
        super().__init__()
        self.setRange(0.0, 1e9)
        self.setDecimals(4)
        self.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
        self.setSpecialValueText("auto")
        self.setToolTip(_NOISE_TIP)
        self._task, self._strength = task_combo, strength
        task_combo.currentTextChanged.connect(self._follow)
        strength.valueChanged.connect(self._follow)
        self._follow()

    def noise(self) -> float | str:
        """The ``restore(noise=...)`` value shown: "auto" or a standard deviation."""
        value = float(self.value())
        return "auto" if value <= 0 else value

    def set_noise(self, noise: float | str) -> None:
        self.setValue(0.0 if noise == "auto" else float(noise))

    def _follow(self, *_: object) -> None:
        self.setEnabled(noise_applies(self._task.currentText(), strength_value(self._strength)))


def noise_applies(task: str, strength: float | str) -> bool:
    """Whether a given noise level is used: denoising with strength "auto" (where the
    strength is measured)."""
    return fixed_weight(strength, task) is None


def alive(widget: QWidget) -> bool:
    """Whether the Qt side of ``widget`` still exists (it may be closed during a run)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def weights_choice(combo: QComboBox, file_edit: QLineEdit) -> WeightsChoice:
    """The weights selected in ``combo`` ("bundled", "file" or "registered:NAME")."""
    source, _, name = (combo.currentData() or "bundled").partition(":")
    return WeightsChoice(source=source, file=file_edit.text().strip(), name=name)


def fill_weights_combo(combo: QComboBox, choice: WeightsChoice) -> None:
    """Offer the bundled model, a model file and every registered fine-tuned model; select
    ``choice`` (the bundled model if it is gone). Emits no change signal."""
    combo.blockSignals(True)
    combo.clear()
    combo.addItem("Bundled default", "bundled")
    combo.addItem("Model file…", "file")
    for name in registered_weights():
        combo.addItem(f"Fine-tuned: {name}", f"registered:{name}")
    wanted = f"registered:{choice.name}" if choice.source == "registered" else choice.source
    combo.setCurrentIndex(max(combo.findData(wanted), 0))
    combo.blockSignals(False)


def show_device(label: QLabel, device: str, verb: str) -> None:
    """Write e.g. "runs on cpu (2 threads)" into ``label``, or the error in red."""
    try:
        text, style = f"{verb} on {describe_device(device)}", ""
    except (ValueError, RuntimeError) as err:
        text, style = str(err), ERROR_STYLE
    label.setText(text)
    label.setStyleSheet(style)

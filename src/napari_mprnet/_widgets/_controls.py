"""Controls shared by the restore and fine-tune widgets (weights choice, device label)."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QLabel, QLineEdit, QWidget

from ..engine.devices import describe_device
from .settings import WeightsChoice
from .weights_registry import registered_weights

__all__ = ["ERROR_STYLE", "alive", "fill_weights_combo", "show_device", "weights_choice"]

ERROR_STYLE = "color: #e05050;"


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

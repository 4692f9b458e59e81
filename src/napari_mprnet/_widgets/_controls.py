"""Controls shared by the restore and fine-tune widgets (weights choice, device label)."""

from __future__ import annotations

import math

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .engine_loader import LOADING_TEXT, engine_loaded
from .settings import WeightsChoice
from .weights_registry import registered_weights

__all__ = ["ERROR_STYLE", "NoiseSpin", "TileSpin", "alive", "fill_weights_combo",
           "nice_step", "noise_applies", "scrolling", "set_strength", "share_dock_height",
           "show_device", "strength_spin", "strength_value", "weights_choice"]

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


def nice_step(span: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) near a hundredth of ``span``."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    target = span / 100.0
    power = 10.0 ** math.floor(math.log10(target))
    return min((m * power for m in (1, 2, 5, 10)), key=lambda s: abs(math.log(s / target)))


class NoiseSpin(QDoubleSpinBox):
    """The noise control: "auto" (its minimum, 0), or a Gaussian standard deviation in the
    layer's intensity units; enabled only while ``task_combo`` says denoise and ``strength``
    "auto" (:func:`noise_applies`), the only runs that use it."""

    def __init__(self, task_combo: QComboBox, strength: QDoubleSpinBox) -> None:
        super().__init__()
        self.setRange(0.0, 1e9)
        self.setDecimals(4)
        self.follow_range(0.0, 255.0)
        self.setSpecialValueText("auto")
        self.setToolTip(_NOISE_TIP)
        self._task, self._strength = task_combo, strength
        task_combo.currentTextChanged.connect(self._follow)
        strength.valueChanged.connect(self._follow)
        self._follow()

    def follow_range(self, low: float, high: float) -> None:
        """Step by about a hundredth of the layer's intensity range ``low``-``high`` (e.g.
        2 for 8-bit images, 50 for a camera's 0-5000 counts)."""
        step = nice_step(float(high) - float(low))
        self.setSingleStep(step)
        self.setDecimals(max(0, min(4, -math.floor(math.log10(step)) + 1)))

    def noise(self) -> float | str:
        """The ``restore(noise=...)`` value shown: "auto" or a standard deviation."""
        value = float(self.value())
        return "auto" if value <= 0 else value

    def set_noise(self, noise: float | str) -> None:
        self.setValue(0.0 if noise == "auto" else float(noise))

    def _follow(self, *_: object) -> None:
        self.setEnabled(noise_applies(self._task.currentText(), strength_value(self._strength)))


def noise_applies(task: str, strength: float | str) -> bool:
    """Whether a given noise level is used: denoising with strength "auto", where the
    strength is measured (what :func:`~napari_mprnet.engine.strength.fixed_weight` says,
    without importing the engine on the GUI thread)."""
    return task == "denoise" and strength == "auto"


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
    """Write e.g. "runs on cpu (2 threads)" into ``label``, or the error in red (or
    "loading PyTorch…" until the engine is loaded off the GUI thread)."""
    if not engine_loaded():
        label.setText(LOADING_TEXT)
        label.setStyleSheet("")
        return
    from ..engine.devices import describe_device

    try:
        text, style = f"{verb} on {describe_device(device)}", ""
    except (ValueError, RuntimeError) as err:
        text, style = str(err), ERROR_STYLE
    label.setText(text)
    label.setStyleSheet(style)


#: Tile sizes the tile spin box steps through: multiples of this, from :data:`FIRST_TILE`.
TILE_STEP = 64
FIRST_TILE = 256


class TileSpin(QSpinBox):
    """The tile size: "auto" (0), or an edge in pixels (>= 16, any value can be typed);
    the arrows step in multiples of 64 and go from "auto" to 256 px, a tile that fits any
    device, and below 64 px back to "auto"."""

    def __init__(self) -> None:
        super().__init__()
        self.setRange(0, 8192)
        self.setSingleStep(TILE_STEP)
        self.setSpecialValueText("auto")
        self.setSuffix(" px")

    def stepBy(self, steps: int) -> None:
        value = self.value()
        for _ in range(abs(steps)):
            if steps > 0:
                value = FIRST_TILE if value == 0 else (value // TILE_STEP + 1) * TILE_STEP
            else:
                value = (math.ceil(value / TILE_STEP) - 1) * TILE_STEP
                value = value if value >= TILE_STEP else 0
        self.setValue(min(value, self.maximum()))

    def tile_size(self) -> int | str:
        """The ``restore(tile_size=...)`` value shown: "auto" or pixels."""
        return "auto" if self.value() == 0 else int(self.value())

    def set_tile_size(self, tile: int | str) -> None:
        self.setValue(0 if tile == "auto" else int(tile))


class _ContentScrollArea(QScrollArea):
    """A scroll area that asks for its content's size (so docks share the height in
    proportion to what they hold) but can shrink to a few rows and scroll."""

    def sizeHint(self) -> QSize:
        content = self.widget()
        if content is None:
            return super().sizeHint()
        hint = content.sizeHint()
        return QSize(hint.width() + self.verticalScrollBar().sizeHint().width(), hint.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(super().minimumSizeHint().width(), 120)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """On the owner's first show, share the dock column's height (next event loop turn,
        once the dock is laid out)."""
        if (event.type() == QEvent.Type.Show and watched is self.parentWidget()
                and not getattr(self, "_shared", False)):
            self._shared = True
            QTimer.singleShot(0, lambda: alive(watched) and share_dock_height(watched))
        return False


def share_dock_height(widget: QWidget) -> None:
    """Let the docks stacked in ``widget``'s dock area share their height in proportion to
    what they hold (Qt gives a dock added second only its minimum height): called when a
    dock is first shown. Does nothing outside a main window or for a tabbed or floating
    dock."""
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = widget.parent()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parent()
    window = None if dock is None else dock.parent()
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return
    area = window.dockWidgetArea(dock)
    column = [d for d in window.findChildren(QDockWidget)
              if d.isVisible() and not d.isFloating() and window.dockWidgetArea(d) == area
              and not window.tabifiedDockWidgets(d)]
    if len(column) < 2 or area not in (Qt.DockWidgetArea.LeftDockWidgetArea,
                                       Qt.DockWidgetArea.RightDockWidgetArea):
        return
    wanted = [max(d.widget().sizeHint().height(), 1) if d.widget() else 1 for d in column]
    total = sum(d.height() for d in column)
    window.resizeDocks(column, [round(total * w / sum(wanted)) for w in wanted],
                       Qt.Orientation.Vertical)


def scrolling(content: QWidget, owner: QWidget) -> QScrollArea:
    """Put ``content`` in a frameless vertical scroll area filling ``owner``, so that a dock
    can be shorter than its controls (a 1000 px screen with both docks open)."""
    area = _ContentScrollArea(owner)
    owner.installEventFilter(area)
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setWidget(content)
    layout = QVBoxLayout(owner)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(area)
    return area

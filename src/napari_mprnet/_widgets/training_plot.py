"""A small live plot of training loss and validation score, drawn with QPainter.

No plotting library is needed (napari does not ship matplotlib): the loss is a line on the
left axis, the validation score (PSNR with a clean target, else the self-supervised loss) a
line with dots on the right axis, both against the step; the starting model's score (step 0)
is a dashed level across the plot, so that a glance tells whether fine-tuning helps.
"""

from __future__ import annotations

import itertools
import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFontMetrics, QPainter, QPalette, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["LOSS_COLOR", "PSNR_COLOR", "TrainingPlot", "data_range", "format_tick"]

LOSS_COLOR = QColor(255, 150, 40)
PSNR_COLOR = QColor(70, 190, 255)


def data_range(values: list[float]) -> tuple[float, float]:
    """A (low, high) span covering ``values`` with a little margin (never empty)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high - low < 1e-12:
        pad = abs(high) * 0.05 or 0.5
        return low - pad, high + pad
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def format_tick(value: float) -> str:
    """Short axis label: 3 significant digits."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    return f"{value:.1e}"


#: Legend of the validation line by kind.
VAL_LEGENDS = {"psnr": "val PSNR (dB)", "loss": "val loss (self-supervised)"}


class TrainingPlot(QWidget):
    """Live plot: ``add_loss(step, loss)``, ``add_val(step, value, kind)`` ("psnr" or
    "loss"; step 0 is the starting model), ``clear()``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss_points: list[tuple[int, float]] = []
        #: validation scores after step 0, and the starting model's (step 0) if known
        self.psnr_points: list[tuple[int, float]] = []
        self.start_value: float | None = None
        self.val_kind = "psnr"
        self.total_steps = 0
        self.setMinimumHeight(130)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Training loss (orange, left axis) and the validation score (blue, "
                        "right axis: PSNR in dB with a clean target, else the self-supervised "
                        "loss, lower is better) against the step; dashed: the starting model")

    def sizeHint(self) -> QSize:
        return QSize(320, 170)

    # ------------------------------------------------------------------ data

    def clear(self, total_steps: int = 0) -> None:
        self.loss_points.clear()
        self.psnr_points.clear()
        self.start_value = None
        self.val_kind = "psnr"
        self.total_steps = int(total_steps)
        self.update()

    def add_loss(self, step: int, loss: float) -> None:
        self.loss_points.append((int(step), float(loss)))
        self.update()

    def add_val(self, step: int, value: float, kind: str = "psnr") -> None:
        """A validation score: PSNR in dB ("psnr") or a self-supervised loss ("loss")."""
        self.val_kind = kind
        if int(step) == 0:
            self.start_value = float(value)
        else:
            self.psnr_points.append((int(step), float(value)))
        self.update()

    def add_val_psnr(self, step: int, value: float) -> None:
        self.add_val(step, value, "psnr")

    # ------------------------------------------------------------------ drawing

    def _plot_rect(self, metrics: QFontMetrics) -> QRectF:
        left = metrics.horizontalAdvance("0.000e-0") + 8
        right = metrics.horizontalAdvance("00.0") + 10
        top = metrics.height() + 8
        bottom = metrics.height() + 8
        return QRectF(left, top, max(1, self.width() - left - right),
                      max(1, self.height() - top - bottom))

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.WindowText)
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
        metrics = painter.fontMetrics()
        rect = self._plot_rect(metrics)
        grid = QColor(text)
        grid.setAlpha(60)
        painter.setPen(QPen(grid, 1))
        painter.drawRect(rect)

        steps = [s for s, _ in self.loss_points] + [s for s, _ in self.psnr_points]
        x_max = max([self.total_steps, *steps, 1])

        def x_of(step: float) -> float:
            return rect.left() + rect.width() * step / x_max

        # legend and x-axis labels
        painter.setPen(LOSS_COLOR)
        painter.drawText(QPointF(rect.left(), metrics.ascent() + 2), "loss")
        painter.setPen(PSNR_COLOR)
        painter.drawText(
            QPointF(rect.left() + metrics.horizontalAdvance("loss") + 12, metrics.ascent() + 2),
            VAL_LEGENDS[self.val_kind] + ("" if self.start_value is None else ", -- start"),
        )
        painter.setPen(text)
        baseline = rect.bottom() + metrics.ascent() + 4
        painter.drawText(QPointF(rect.left(), baseline), "0")
        label = f"step {x_max}"
        painter.drawText(QPointF(rect.right() - metrics.horizontalAdvance(label), baseline),
                         label)
        if not self.loss_points and not self.psnr_points:
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "no training yet")
            return

        start = [] if self.start_value is None else [self.start_value]
        for points, color, left_axis in ((self.loss_points, LOSS_COLOR, True),
                                         (self.psnr_points, PSNR_COLOR, False)):
            if not points:
                continue
            low, high = data_range([v for _, v in points] + ([] if left_axis else start))

            def y_of(value: float, low: float = low, high: float = high) -> float:
                if not math.isfinite(value):
                    value = high
                return rect.bottom() - rect.height() * (value - low) / (high - low)

            painter.setPen(color)
            for value, y in ((high, rect.top() + metrics.ascent()), (low, rect.bottom())):
                tick = format_tick(value)
                x = (rect.left() - metrics.horizontalAdvance(tick) - 4 if left_axis
                     else rect.right() + 4)
                painter.drawText(QPointF(x, y), tick)
            if start and not left_axis:  # the starting model's level, dashed
                painter.setPen(QPen(color, 1.0, Qt.PenStyle.DashLine))
                level = y_of(start[0])
                painter.drawLine(QPointF(rect.left(), level), QPointF(rect.right(), level))
                points = [(0, start[0]), *points]
            mapped = [QPointF(x_of(s), y_of(v)) for s, v in points]
            painter.setPen(QPen(color, 1.6))
            for a, b in itertools.pairwise(mapped):
                painter.drawLine(a, b)
            if not left_axis or len(mapped) == 1:
                painter.setBrush(color)
                for point in mapped:
                    painter.drawEllipse(point, 3.0, 3.0)
                painter.setBrush(Qt.BrushStyle.NoBrush)

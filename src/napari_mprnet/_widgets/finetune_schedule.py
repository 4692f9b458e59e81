"""The schedule part of the Fine-tune widget: steps, patch and batch size, learning rate,
self-supervised method and validation fraction."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QLabel, QSpinBox

from .finetune_report import SELF_SUPERVISED_METHODS, VALIDATION_TIP

__all__ = ["SCHEDULE_WIDGETS", "ScheduleControls"]

#: The controls' widgets (the Fine-tune widget exposes them as its own attributes).
SCHEDULE_WIDGETS = ("steps_spin", "patch_spin", "batch_spin", "lr_spin", "method_combo",
                    "method_label", "val_spin")


class ScheduleControls:
    """The schedule's widgets, with their ranges, defaults and tooltips."""

    def __init__(self) -> None:
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setValue(200)
        self.steps_spin.setToolTip("Optimisation steps (batches)")
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(16, 1024)
        self.patch_spin.setSingleStep(8)
        self.patch_spin.setValue(64)
        self.patch_spin.setSuffix(" px")
        self.patch_spin.setToolTip("Side of the random training crops (a multiple of 8)")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(4)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 0.1)
        self.lr_spin.setSingleStep(1e-5)
        self.lr_spin.setValue(2e-4)
        self.lr_spin.setToolTip("Peak learning rate (Adam), annealed by a cosine; 2e-4 with "
                                "a clean target, 5e-5 self-supervised")
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(SELF_SUPERVISED_METHODS))
        # long labels: the combo stays narrow, its list shows them whole
        self.method_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method_combo.setMinimumContentsLength(24)
        self.method_combo.setToolTip(
            "Without clean targets: Noise2Void learns from single noisy images (noise "
            "independent between pixels; the blind line / block variants hide the neighbours "
            "of camera noise correlated along rows, columns or in blotches); Noise2Noise "
            "pairs each frame of a stack of a static sample with the next (noise independent "
            "between frames, any correlation between pixels: the method for correlated noise)"
        )
        self.method_label = QLabel("Method")
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setDecimals(2)
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(0.1)
        self.val_spin.setToolTip(VALIDATION_TIP)

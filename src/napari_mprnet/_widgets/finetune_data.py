"""The *Data* part of the Fine-tune widget: a pair of Image layers or two TIFF folders.

Layers are proposed by meaning (:func:`~napari_mprnet._widgets.layer_roles.propose_pair`):
the clean-looking (or hidden) layer is the Target, a degraded one the Input, never one layer
for both; a choice the user made is kept while its layer exists. The Target can be
"none (self-supervised)" (the first entry; proposed when no other layer fits): training then
uses the noisy input alone, and an empty target folder means the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.layers import Image
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._layers import snapshot
from ._controls import alive
from .layer_roles import propose_pair

__all__ = ["FOLDERS", "LAYERS", "NO_TARGET", "TrainingDataForm", "row"]

LAYERS, FOLDERS = "Image layers", "TIFF folders"
#: The Target entry for training on the noisy input alone.
NO_TARGET = "none (self-supervised)"


def row(*widgets: QWidget) -> QWidget:
    """``widgets`` side by side in one borderless box."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return box


class TrainingDataForm(QWidget):
    """Source choice (layers or folders) with the matching input/target fields."""

    def __init__(self, viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self._image_layers: list[Image] = []
        self.source_combo = QComboBox()
        self.source_combo.addItems([LAYERS, FOLDERS])
        self.input_combo = QComboBox()
        self.input_combo.setToolTip("Degraded images (stacks contribute every plane)")
        self.target_combo = QComboBox()
        self.target_combo.setToolTip(
            "Clean images, the same shape as the input layer (a hidden layer or one named "
            "clean / target / GT / ground truth is proposed), or none: self-supervised "
            "training on the noisy input alone"
        )
        self._no_target_chosen = False
        self.input_dir_edit = QLineEdit()
        self.input_dir_edit.setPlaceholderText("folder of degraded TIFF images")
        self.target_dir_edit = QLineEdit()
        self.target_dir_edit.setPlaceholderText(
            "folder of clean TIFFs with the same names (empty: self-supervised)")
        self.input_dir_button = QPushButton("Browse…")
        self.target_dir_button = QPushButton("Browse…")
        self.layers_box = QWidget()
        layers_form = QFormLayout(self.layers_box)
        layers_form.setContentsMargins(0, 0, 0, 0)
        layers_form.addRow("Input", self.input_combo)
        layers_form.addRow("Target", self.target_combo)
        self.folders_box = QWidget()
        folders_form = QFormLayout(self.folders_box)
        folders_form.setContentsMargins(0, 0, 0, 0)
        folders_form.addRow("Inputs", row(self.input_dir_edit, self.input_dir_button))
        folders_form.addRow("Targets", row(self.target_dir_edit, self.target_dir_button))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.layers_box)
        layout.addWidget(self.folders_box)

        self.refresh()
        self._on_source_changed()
        layers = self.viewer.layers
        for emitter in (layers.events.inserted, layers.events.removed, layers.events.moved):
            emitter.connect(self.refresh)
        self.source_combo.currentTextChanged.connect(self._on_source_changed)
        self.input_combo.currentIndexChanged.connect(lambda: self._keep_apart(self.target_combo))
        self.target_combo.currentIndexChanged.connect(self._on_target_changed)
        self.input_dir_button.clicked.connect(lambda: self._browse_folder(self.input_dir_edit))
        self.target_dir_button.clicked.connect(lambda: self._browse_folder(self.target_dir_edit))

    # ------------------------------------------------------------------ layers

    def selected_layer(self, combo: QComboBox) -> Image | None:
        index = combo.currentIndex() - (combo is self.target_combo)  # after NO_TARGET
        return self._image_layers[index] if 0 <= index < len(self._image_layers) else None

    @property
    def self_supervised(self) -> bool:
        """Whether there is no target (Target "none", or an empty target folder)."""
        if self.source_combo.currentText() == FOLDERS:
            return not self.target_dir_edit.text().strip()
        return self.selected_layer(self.target_combo) is None

    def refresh(self, *_: Any) -> None:
        """Re-list the Image layers, keeping the user's choices; propose the rest."""
        if not alive(self):
            return
        layers = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        for layer in layers:
            layer.events.name.disconnect(self.refresh)
            layer.events.name.connect(self.refresh)
        chosen = [self.selected_layer(combo) for combo in (self.input_combo, self.target_combo)]
        pair = list(propose_pair(layers, *chosen))
        if self._no_target_chosen:
            pair[1] = None
        self._image_layers = layers
        for combo, layer in zip((self.input_combo, self.target_combo), pair):
            first = [NO_TARGET] if combo is self.target_combo else []
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(first + [layer.name for layer in layers])
            combo.setCurrentIndex(len(first) + layers.index(layer) if layer is not None
                                  else len(first) - 1)
            combo.blockSignals(False)

    def _on_target_changed(self, *_: Any) -> None:
        self._no_target_chosen = self.target_combo.currentIndex() == 0
        self._keep_apart(self.input_combo)

    def _keep_apart(self, other: QComboBox) -> None:
        """After the user picked a layer that ``other`` shows too, propose another there."""
        inp, tgt = (self.selected_layer(c) for c in (self.input_combo, self.target_combo))
        if inp is None or inp is not tgt:
            return
        keep = (inp, None) if other is self.target_combo else (None, tgt)
        layer = propose_pair(self._image_layers, *keep)[1 if other is self.target_combo else 0]
        other.blockSignals(True)
        offset = int(other is self.target_combo)
        other.setCurrentIndex(offset + self._image_layers.index(layer) if layer is not None
                              else offset - 1)
        other.blockSignals(False)

    # ------------------------------------------------------------------ folders

    def _on_source_changed(self, *_: Any) -> None:
        folders = self.source_combo.currentText() == FOLDERS
        self.layers_box.setVisible(not folders)
        self.folders_box.setVisible(folders)

    def _browse_folder(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of TIFF images", edit.text())
        if folder:
            edit.setText(folder)

    # ------------------------------------------------------------------ result

    def data(self) -> tuple[Any, Any, str, str]:
        """(inputs, targets, label, name) for the trainer; raises ValueError for the user."""
        if self.source_combo.currentText() == FOLDERS:
            folders: list[str | None] = []
            for what, edit in (("input", self.input_dir_edit), ("target", self.target_dir_edit)):
                text = edit.text().strip()
                if not text and what == "target":  # no targets: self-supervised
                    folders.append(None)
                    continue
                if not text:
                    raise ValueError(f"choose the {what} folder")
                folder = Path(text).expanduser()
                if not folder.is_dir():
                    raise ValueError(f"the {what} folder '{folder}' does not exist")
                folders.append(str(folder))
            name = Path(folders[0]).name
            return folders[0], folders[1], f"folder '{name}'", name
        inp, tgt = self.selected_layer(self.input_combo), self.selected_layer(self.target_combo)
        if inp is None:
            raise ValueError("add an input Image layer first")
        if tgt is None:  # Target "none": self-supervised
            return snapshot(inp), None, f"layer '{inp.name}'", inp.name
        if inp is tgt:
            raise ValueError("choose different layers for the input and the target")
        inp_snap, tgt_snap = snapshot(inp), snapshot(tgt)
        in_shape, tgt_shape = tuple(inp_snap.data.shape), tuple(tgt_snap.data.shape)
        if in_shape != tgt_shape:
            raise ValueError(
                f"the input layer '{inp.name}' has shape {in_shape} but the target layer "
                f"'{tgt.name}' has shape {tgt_shape}; they must match pixel for pixel"
            )
        return inp_snap, tgt_snap, f"layer '{inp.name}'", inp.name

"""The npe2 manifest: valid, and Layers > Filter > Restore holds Denoise / Deblur / Derain."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from npe2 import PluginManifest

import napari_mprnet

MANIFEST = Path(napari_mprnet.__file__).parent / "napari.yaml"
SUBMENU = "napari-mprnet.restore"


@pytest.fixture(scope="module")
def manifest() -> PluginManifest:
    return PluginManifest.from_file(MANIFEST)


def test_manifest_identity(manifest):
    assert manifest.name == "napari-mprnet"
    assert manifest.display_name == "MPRNet restoration"


def test_entry_point_finds_manifest(manifest):
    found = PluginManifest.from_distribution("napari-mprnet")
    assert found.name == manifest.name


def test_every_command_imports(manifest):
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.id


def test_filter_menu_holds_restore_submenu(manifest):
    contributions = manifest.contributions
    labels = {sub.id: sub.label for sub in contributions.submenus}
    assert labels[SUBMENU] == "Restore"
    filter_items = contributions.menus["napari/layers/filter"]
    assert [getattr(item, "submenu", None) for item in filter_items] == [SUBMENU]


def test_restore_submenu_commands(manifest):
    titles = {cmd.id: cmd.title for cmd in manifest.contributions.commands}
    items = manifest.contributions.menus[SUBMENU]
    assert [titles[item.command] for item in items] == ["Denoise", "Deblur", "Derain"]


def test_widget_and_samples(manifest):
    widgets = manifest.contributions.widgets
    assert [w.display_name for w in widgets] == ["Restore", "Fine-tune"]
    keys = {sample.key for sample in manifest.contributions.sample_data}
    assert keys == {"cells", "cells_stack", "natural", "blurred_cells", "blurred_natural",
                    "rainy"}


def test_napari_registers_the_submenu(make_napari_viewer):
    """napari's app-model knows the submenu and its three commands (what the Qt menu shows)."""
    from app_model.types import SubmenuItem
    from napari._app_model import get_app_model

    make_napari_viewer()
    app = get_app_model()
    filter_menu = list(app.menus.get_menu("napari/layers/filter"))
    submenus = [i for i in filter_menu if isinstance(i, SubmenuItem)]
    assert SUBMENU in [i.submenu for i in submenus]
    assert [i.title for i in submenus if i.submenu == SUBMENU] == ["Restore"]
    # napari appends the plugin's display name to command titles in its menus
    restore_items = [item.command.title for item in app.menus.get_menu(SUBMENU)]
    assert restore_items == [
        f"{task} (MPRNet restoration)" for task in ("Denoise", "Deblur", "Derain")
    ]

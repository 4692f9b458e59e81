"""The wheel must ship the manifest and the bundled weights (editable installs hide this)."""

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the CI machine runs 3.11


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_mprnet"


def test_package_data_covers_manifest_and_bundled_weights():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["napari_mprnet"]
    needed = ["napari.yaml", "pretrained/registry.json"]
    needed += [f"pretrained/{p.name}" for p in (PACKAGE / "pretrained").glob("*.safetensors")]
    assert len(needed) >= 5
    for name in needed:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_napari_entry_point_and_script():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = config["project"]
    assert project["entry-points"]["napari.manifest"] == {
        "napari-mprnet": "napari_mprnet:napari.yaml"}
    assert project["scripts"]["napari-mprnet"] == "napari_mprnet.cli:main"
    core = " ".join(project["dependencies"]).lower()
    assert "pyqt" not in core and "pyside" not in core  # core importable without a Qt binding

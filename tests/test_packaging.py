"""The wheel must ship the manifest, the bundled weights and the LICENSE (editable installs hide
this); the project URLs and the napari hub metadata agree with each other."""

import email
import fnmatch
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

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


# ------------------------------------------------------------ license, URLs, napari hub

REPO_URL = "https://github.com/napari-mprnet/napari-mprnet"
SITE_URL = "https://napari-mprnet.github.io/napari-mprnet/"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_file_is_bsd3_and_declared():
    project = _project()
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "napari-mprnet developers" in text
    assert "Neither the name of the copyright holder" in text  # the third clause


def test_project_urls_are_the_canonical_home():
    urls = _project()["urls"]
    assert urls["Homepage"] == urls["Source Code"] == REPO_URL
    assert urls["Bug Tracker"] == REPO_URL + "/issues"
    assert urls["Documentation"] == SITE_URL


def test_napari_extra_brings_napari_with_a_qt_binding():
    extra = " ".join(_project()["optional-dependencies"]["napari"])
    assert re.search(r"napari\[(pyqt5|pyqt6|pyside2|pyside6|all)\]", extra), extra


def test_napari_hub_config_matches_the_package_metadata():
    hub = yaml.safe_load((ROOT / ".napari-hub" / "config.yml").read_text())
    project = _project()
    assert hub["visibility"] == "public"
    assert hub["summary"] == project["description"]
    assert [author["name"] for author in hub["authors"]] == [
        author["name"] for author in project["authors"]]
    urls = project["urls"]
    assert hub["project_urls"] == {"Project Site": urls["Homepage"],
                                   "Documentation": urls["Documentation"],
                                   "Report Issues": urls["Bug Tracker"]}
    assert hub["labels"]["ontology"].startswith("EDAM-BIOIMAGING")
    assert "Image denoising" in hub["labels"]["terms"]
    description = (ROOT / ".napari-hub" / "DESCRIPTION.md").read_text()
    assert 'pip install "napari-mprnet[napari]"' in description


def test_sdist_and_wheel_ship_the_license_and_the_urls(tmp_path):
    """Built as a release would be (python -m build: the sdist, then the wheel from it)."""
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
                            check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = tmp_path.glob("napari_mprnet-*.tar.gz")
    (wheel,) = tmp_path.glob("napari_mprnet-*.whl")
    license_text = (ROOT / "LICENSE").read_text()
    with tarfile.open(sdist) as archive:
        (member,) = [m for m in archive.getmembers() if m.name.endswith("/LICENSE")]
        assert archive.extractfile(member).read().decode() == license_text
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(licence).decode() == license_text
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = email.message_from_bytes(archive.read(metadata))
        assert "napari_mprnet/napari.yaml" in names
    assert headers["License-Expression"] == "BSD-3-Clause"
    assert headers.get_all("License-File") == ["LICENSE"]
    assert sorted(headers.get_all("Project-URL")) == sorted(
        f"{name}, {url}" for name, url in _project()["urls"].items())
    assert "Framework :: napari" in headers.get_all("Classifier")

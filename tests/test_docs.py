"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing page
or a page left out of the nav fails), and the README keeps to what a newcomer needs: the
same canonical project URL everywhere, absolute image links, links to pages that exist, the
two set-up commands that CI runs, and menu names that the plugin manifest really has."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HUB_DESCRIPTION = ROOT / ".napari-hub" / "DESCRIPTION.md"

#: The project's intended public home, and its documentation site.
REPO_URL = "https://github.com/napari-mprnet/napari-mprnet"
RAW_URL = "https://raw.githubusercontent.com/napari-mprnet/napari-mprnet/main/"
SITE_URL = "https://napari-mprnet.github.io/napari-mprnet/"

MAIN_JOB = 'pip install torch==2.13.0 -e . && napari-mprnet demo'
TEST_JOB = 'pip install torch==2.13.0 -e ".[testing]" && pytest'


def _mkdocs_build(config: Path, site_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site_dir)],
        check=False, cwd=config.parent, env=env, capture_output=True, text=True, timeout=300,
    )


def _text(html: Path) -> str:
    """The visible text of a built page, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.read_text()))


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _mkdocs_config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_docs_site_builds_strict_with_the_api_reference(tmp_path):
    result = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    for page in _nav_pages(_mkdocs_config()["nav"]):
        stem = page[:-len(".md")]
        folder = stem[:-len("index")] if stem.endswith("index") else stem + "/"
        assert (site / folder / "index.html").is_file(), page
    api = _text(site / "api" / "index.html")
    # generated from the docstrings: the summary lines and a parameter of each public function
    for phrase in ["Restore an image with MPRNet", "Restore an array step by step",
                   "Fine-tune an MPRNet", "split_patches", "charbonnier_loss"]:
        assert phrase in api, phrase
    # documented defaults are the signature's (restore(task=None) runs the model's own task)
    assert re.search(r"\btask \(.{0,80}default: None \)", api)
    assert ":func:" not in api and ":mod:" not in api
    assert (site / "images" / "demo_cells.png").is_file()


def test_strict_build_fails_on_a_broken_link_and_on_a_page_outside_the_nav(tmp_path):
    """The guard itself: the same configuration refuses both mistakes."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    config = _mkdocs_config()
    # the API page needs the sources; everything else is text
    os.symlink(ROOT / "src", copy / "src")
    (copy / "docs" / "orphan.md").write_text("# Not in the nav\n")
    result = _mkdocs_build(copy / "mkdocs.yml", tmp_path / "site1")
    assert result.returncode != 0 and "orphan.md" in result.stdout + result.stderr

    (copy / "docs" / "orphan.md").unlink()
    first = copy / "docs" / _nav_pages(config["nav"])[0]
    first.write_text(first.read_text() + "\nSee [a page](no_such_page.md).\n")
    result = _mkdocs_build(copy / "mkdocs.yml", tmp_path / "site2")
    assert result.returncode != 0 and "no_such_page.md" in result.stdout + result.stderr


def test_mkdocs_points_at_the_canonical_repository():
    config = _mkdocs_config()
    assert config["site_url"] == SITE_URL
    assert config["repo_url"] == REPO_URL


def test_the_pages_workflow_installs_the_docs_extra():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; CI runs 3.11
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["docs"]
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "docs.yml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    (install,) = [step["run"] for step in steps if step.get("run", "").startswith("pip install")]
    assert sorted(re.findall(r'"([^"]+)"', install)) == sorted(extra)
    assert any("mkdocs build --strict" in step.get("run", "") for step in steps)


# ----------------------------------------------------------------------------------- README


def _links(markdown: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", markdown) + re.findall(r"<(https?://[^>]+)>", markdown)


@pytest.mark.parametrize("path", [README, HUB_DESCRIPTION], ids=["README", "hub"])
def test_images_are_absolute_links_to_files_in_the_repository(path):
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text())
    assert images, "a picture says what the plugin does"
    for link in images:
        assert link.startswith(RAW_URL), f"{link}: PyPI and the napari hub need absolute links"
        assert (ROOT / link[len(RAW_URL):]).is_file(), link


@pytest.mark.parametrize("path", [README, HUB_DESCRIPTION], ids=["README", "hub"])
def test_links_use_the_canonical_urls_and_reach_existing_pages(path):
    for link in _links(path.read_text()):
        assert link.startswith("https://"), f"{link}: relative links break on PyPI"
        if link.startswith(SITE_URL):
            page = link[len(SITE_URL):].split("#")[0].strip("/") or "index"
            sources = [ROOT / "docs" / f"{page}.md", ROOT / "docs" / page / "index.md"]
            assert any(source.is_file() for source in sources), f"{link}: no page docs/{page}"
        elif "github" in link and "napari-mprnet" in link:
            assert link.startswith((REPO_URL, RAW_URL)), link
            rest = link[len(REPO_URL):].lstrip("/")
            if rest.startswith("blob/main/"):
                assert (ROOT / rest[len("blob/main/"):]).exists(), link


def test_readme_is_short_and_keeps_the_two_setup_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 130, "the README is read in two minutes: move detail to docs/"
    commands = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    setup = [line for block in commands for line in block.splitlines() if " -e " in line]
    assert setup == [MAIN_JOB, TEST_JOB]
    # not on PyPI yet: the napari install is from the clone
    assert 'pip install ".[napari]"' in text and "napari-mprnet[napari]" not in text
    # CI runs exactly the README's test command
    assert TEST_JOB.replace("pip install", "pip install -q") in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", [README, HUB_DESCRIPTION, ROOT / "docs" / "napari.md"],
                         ids=["README", "hub", "docs"])
def test_menu_paths_quoted_exist_in_the_plugin_manifest(path):
    manifest = yaml.safe_load((ROOT / "src" / "napari_mprnet" / "napari.yaml").read_text())
    contributions = manifest["contributions"]
    text = path.read_text()
    plugin = manifest["display_name"]
    assert f"Plugins → {plugin} → Restore" in text
    samples = {sample["display_name"] for sample in contributions["sample_data"]}
    quoted = re.findall(rf"Open Sample → {re.escape(plugin)} → ([^*\n]+)\*", text)
    assert quoted and set(quoted) <= samples, (quoted, samples)
    submenu = contributions["submenus"][0]["label"]
    titles = {command["title"] for command in contributions["commands"]}
    for task in re.findall(rf"Layers → Filter → {re.escape(submenu)} → (\w+)", text):
        assert task in titles, task
    widgets = {widget["display_name"] for widget in contributions["widgets"]}
    assert {"Restore", "Fine-tune"} <= widgets

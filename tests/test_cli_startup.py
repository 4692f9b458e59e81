"""``napari-mprnet --help`` must not import torch (it takes seconds on a busy laptop)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Runs the CLI's main() with the given arguments and prints whether torch got imported.
_WRAPPER = """
import sys
from napari_mprnet.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("TORCH-IMPORTED" if "torch" in sys.modules else "TORCH-NOT-IMPORTED", file=sys.stderr)
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WRAPPER, *args], check=False,
                          capture_output=True, text=True, env=_env(), timeout=120)


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("restore", "--help"),
                                  ("finetune", "--help"), ("export-bioimageio", "--help"),
                                  ("demo", "--help")])
def test_help_does_not_import_torch(args):
    result = _run(*args)
    assert "usage:" in result.stdout or "napari-mprnet" in result.stdout, result.stderr
    assert "TORCH-NOT-IMPORTED" in result.stderr, result.stderr


def test_python_m_help_does_not_import_torch():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "napari_mprnet", "--help"],
                            check=False, capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: napari-mprnet" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "napari_mprnet.cli" in imported  # the check itself works
    assert "torch" not in imported


def test_backend_choices_match_the_engine():
    from napari_mprnet.cli.common import BACKEND_CHOICES
    from napari_mprnet.engine.backends import BACKENDS

    assert tuple(BACKEND_CHOICES) == tuple(BACKENDS)


def test_tasks_match_the_official_presets():
    from napari_mprnet.model import OFFICIAL_PRESETS, TASKS

    assert tuple(OFFICIAL_PRESETS) == TASKS


def test_blind_spot_mask_choices_match_the_trainer():
    from napari_mprnet.cli.finetune import BLIND_SPOT_MASKS
    from napari_mprnet.training.blindspot import MASKS

    assert tuple(BLIND_SPOT_MASKS) == tuple(MASKS)

"""Every writer goes through the one atomic-write helper: its guarantees hold for each."""

from __future__ import annotations

import os

import pytest

from napari_mprnet.io import atomic


@pytest.fixture
def umask_untouchable(monkeypatch):
    """The process umask may be neither read nor changed (it is process-wide)."""
    previous = os.umask(0o027)

    def touched(mask):
        raise AssertionError("the process umask was read or changed")

    monkeypatch.setattr(os, "umask", touched)
    yield
    monkeypatch.undo()
    os.umask(previous)


def _committed_through_the_helper(monkeypatch):
    seen = []
    real = atomic.atomic_output

    def spy(target, **kwargs):
        seen.append(os.fspath(target))
        return real(target, **kwargs)

    monkeypatch.setattr(atomic, "atomic_output", spy)
    return seen


def test_save_model_leaves_the_umask_alone(tmp_path, tiny_model, umask_untouchable):
    from napari_mprnet import save_model

    for name in ("m.safetensors", "m.pth"):
        path = save_model(tiny_model, tmp_path / name)
        assert path.stat().st_mode & 0o777 == 0o640
    with pytest.raises(FileExistsError):
        save_model(tiny_model, tmp_path / "m.pth", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth", "m.safetensors"]


def test_settings_are_saved_atomically_and_read_back(tmp_path, umask_untouchable):
    from napari_mprnet._widgets.settings import RestoreSettings, load_settings, save_settings

    path = tmp_path / "cfg" / "settings.json"
    save_settings(RestoreSettings(), path)
    save_settings(RestoreSettings(), path)  # the second save replaces the first
    assert load_settings(path) == RestoreSettings()
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]
    assert path.stat().st_mode & 0o777 == 0o640

"""The atomic-write helper: no partial files, no replacement without overwrite, stale cleanup."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from napari_mprnet.io import atomic
from napari_mprnet.io.atomic import (
    TEMP_PREFIX,
    DiskFullError,
    OutputExistsError,
    atomic_output,
    atomic_write_bytes,
    is_temporary,
    remove_stale_temporaries,
)


def test_written_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "a.tif"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("a.tif") and is_temporary(tmp)
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["a.tif"]


def test_a_file_that_appears_meanwhile_is_never_replaced(tmp_path):
    target = tmp_path / "a.tif"
    with pytest.raises(OutputExistsError, match="kept"), atomic_output(target) as tmp:
        tmp.write_bytes(b"mine")
        target.write_bytes(b"theirs")  # another process got there first
    assert target.read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["a.tif"]  # the temporary is gone too


def test_no_hard_links_falls_back_to_an_exclusive_create(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(atomic.os, "link", no_link)
    atomic_write_bytes(tmp_path / "a.bin", b"one")
    assert (tmp_path / "a.bin").read_bytes() == b"one"
    with pytest.raises(OutputExistsError), atomic_output(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"mine")
        (tmp_path / "b.bin").write_bytes(b"theirs")
    assert (tmp_path / "b.bin").read_bytes() == b"theirs"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin"]


def test_overwrite_replaces_files_and_folders(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(tmp_path / "a.bin", b"new")
    atomic_write_bytes(tmp_path / "a.bin", b"new", overwrite=True)
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "old").write_text("x")
    with pytest.raises(OutputExistsError), atomic_output(tmp_path / "s.zarr", directory=True):
        pass
    with atomic_output(tmp_path / "s.zarr", directory=True, overwrite=True) as tmp:
        (tmp / "new").write_text("y")
    assert os.listdir(tmp_path / "s.zarr") == ["new"]
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "s.zarr"]


def test_a_folder_that_appears_meanwhile_is_kept(tmp_path):
    target = tmp_path / "s.zarr"
    with pytest.raises(OutputExistsError), atomic_output(target, directory=True) as tmp:
        (tmp / "mine").write_text("m")
        target.mkdir()
        (target / "theirs").write_text("t")
    assert os.listdir(target) == ["theirs"]
    assert os.listdir(tmp_path) == ["s.zarr"]


def test_failure_while_writing_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError("147456 requested and 78776 written"),  # numpy's tofile on a full disk
])
def test_disk_full_says_so(tmp_path, monkeypatch, error):
    monkeypatch.setattr(atomic.shutil, "disk_usage",
                        lambda path: type("U", (), {"free": 1000})())
    with pytest.raises(DiskFullError, match="disk full") as info, \
            atomic_output(tmp_path / "a.tif"):
        raise error
    assert info.value.errno == errno.ENOSPC and "a.tif" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_permissions_follow_the_umask_which_is_never_touched(tmp_path, monkeypatch):
    previous = os.umask(0o027)
    try:
        def touched(mask):
            raise AssertionError("the process umask was read or changed")

        monkeypatch.setattr(os, "umask", touched)
        atomic_write_bytes(tmp_path / "f", b"x")
        with atomic_output(tmp_path / "d", directory=True):
            pass
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750


def test_stale_temporaries_of_dead_runs_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = atomic._host()
    stale = tmp_path / f"{TEMP_PREFIX}{dead}-{host}-0123abcd.x_denoised.tif"
    stale.write_bytes(b"half")
    stale_dir = tmp_path / f"{TEMP_PREFIX}{dead}-{host}-0123abce.x_denoised.zarr"
    stale_dir.mkdir()
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-{host}-0123abcd.y_denoised.tif"
    live.write_bytes(b"in progress")
    other = tmp_path / ".x_denoised.tif.abc.tmp"  # not ours: never touched
    other.write_bytes(b"?")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([stale, stale_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])

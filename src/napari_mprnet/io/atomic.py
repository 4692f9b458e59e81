"""The one atomic-write helper: every file or folder this program writes goes through it.

A result is written to a temporary of our own recognisable name in the target's folder
(``.napari-mprnet-partial-<pid>-<host>-<token>.<name>``: same folder, so the commit is a
rename or a link on one file system; same ending, so writers that look at the suffix behave),
flushed to disk, then committed:

- without ``overwrite`` the commit never replaces anything, even if another process created
  the target meanwhile: files are committed with a hard link (``os.link`` fails if the target
  exists; on file systems without hard links, the target is reserved with an exclusive create
  first), folders with a rename that refuses to land on an existing entry;
- with ``overwrite`` a file is replaced in one ``os.replace``; a folder is swapped (the old one
  renamed aside, the new one renamed in, the old one removed).

The temporary is removed whatever happens. Its permissions are those of a plain new file
(``0o666`` less the umask, applied by the kernel: the process umask is never read or
changed). A run killed half-way leaves a temporary behind: :func:`remove_stale_temporaries`
(called by the CLI on every output folder) removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "TEMP_PREFIX",
    "DiskFullError",
    "OutputExistsError",
    "atomic_output",
    "atomic_write_bytes",
    "is_temporary",
    "remove_stale_temporaries",
    "remove_tree",
]

TEMP_PREFIX = ".napari-mprnet-partial-"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-([A-Za-z0-9]*)-([0-9a-f]{8})\.(.+)$")
#: Temporaries of another machine (shared file systems) count as stale after this many seconds.
FOREIGN_STALE_SECONDS = 24 * 3600
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS,
             errno.EXDEV}


class OutputExistsError(FileExistsError):
    """The target exists (or appeared while it was being written) and overwrite was not asked."""


class DiskFullError(OSError):
    """The device holding the target ran out of space (nothing was replaced)."""

    def __str__(self) -> str:
        return self.strerror or "disk full"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def _temporary_name(target: Path) -> Path:
    name = target.name[-150:]  # keeps the ending; the whole name stays well under 255 bytes
    return target.with_name(f"{TEMP_PREFIX}{os.getpid()}-{_host()}-{secrets.token_hex(4)}"
                            f".{name}")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like one of our temporaries."""
    return _TEMP_NAME.match(Path(path).name) is not None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def remove_tree(path: Path) -> None:
    """Remove a file or a folder tree (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove our temporaries in ``folder`` left by runs that were killed; return them.

    A temporary is stale when its process (named in it) no longer runs on this machine, or
    when it comes from another machine and is older than a day. Live runs' temporaries and
    every other file are left alone.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    host = _host()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None:
            continue
        pid, owner = int(match.group(1)), match.group(2)
        if owner == host:
            stale = pid != os.getpid() and not _process_alive(pid)
        else:
            try:
                stale = time.time() - entry.lstat().st_mtime > FOREIGN_STALE_SECONDS
            except OSError:
                continue
        if stale:
            remove_tree(entry)
            removed.append(entry)
    return removed


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):  # e.g. folders on Windows, some network file systems
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exists_error(target: Path) -> OutputExistsError:
    return OutputExistsError(errno.EEXIST, f"{target} exists and was kept (not replaced)",
                             str(target))


def _commit_file(tmp: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _exists_error(target) from None
    except OSError as err:
        if err.errno not in _NO_LINKS:
            raise
        # no hard links here: reserve the name exclusively, then move the result onto it
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise _exists_error(target) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def _commit_folder(tmp: Path, target: Path, overwrite: bool) -> None:
    old = None
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise _exists_error(target)
        old = _temporary_name(target)
        os.rename(target, old)
    try:
        os.rename(tmp, target)  # refuses a non-empty folder or a file that appeared meanwhile
    except OSError as err:
        if old is not None:
            os.rename(old, target)
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise _exists_error(target) from None
        raise
    if old is not None:
        remove_tree(old)


def _disk_full(err: BaseException, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    # numpy's tofile (used by tifffile) reports a short write without an errno
    match = re.search(r"(\d+) requested and (\d+) written", str(err))
    if match is None:
        return False
    try:
        return shutil.disk_usage(folder).free < int(match.group(1))
    except OSError:
        return False


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, *, overwrite: bool = False,
                  directory: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; commit it to ``target`` when the block ends.

    Parameters
    ----------
    target : path
        The file (or, with ``directory``, folder) to create. Its folder must exist.
    overwrite : bool
        Replace an existing target. Without it an existing target, or one that appears while
        the block runs, is kept and :class:`OutputExistsError` is raised.
    directory : bool
        The result is a folder (e.g. a zarr store): the temporary is an empty new folder.
    fsync : bool
        Flush the result to disk before the commit (a crash never leaves a truncated target).

    Raises
    ------
    OutputExistsError
        The target exists and ``overwrite`` is false (checked before and at the commit).
    DiskFullError
        The device ran out of space while writing; nothing was replaced.
    """
    target = Path(target)
    if not overwrite and (target.exists() or target.is_symlink()):
        raise _exists_error(target)
    tmp = _temporary_name(target)
    if directory:
        os.mkdir(tmp, 0o777)
    else:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    mode = tmp.stat().st_mode & 0o777  # a new file's permissions: the kernel applied the umask
    try:
        try:
            yield tmp
            if tmp.stat().st_mode & 0o777 != mode:  # a writer that recreated the file (0o600)
                os.chmod(tmp, mode)
            if fsync:
                _fsync(tmp)
        except Exception as err:
            if _disk_full(err, target.parent):
                raise DiskFullError(errno.ENOSPC, f"disk full: no space left on the device of "
                                    f"{target.parent} while writing {target.name} (nothing "
                                    "was replaced)", str(target)) from err
            raise
        (_commit_folder if directory else _commit_file)(tmp, target, overwrite)
        if fsync:
            _fsync(target.parent)
    finally:
        if tmp.exists() or tmp.is_symlink():
            remove_tree(tmp)


def atomic_write_bytes(target: str | os.PathLike, data: bytes | Callable[[Path], None], *,
                       overwrite: bool = False, fsync: bool = True) -> Path:
    """Write ``data`` (bytes, or a function writing the temporary path) atomically to ``target``.

    See :func:`atomic_output` for the guarantees and the errors raised.
    """
    target = Path(target)
    with atomic_output(target, overwrite=overwrite, fsync=fsync) as tmp:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
    return target

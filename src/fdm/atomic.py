"""Atomic file writes: a killed job never leaves a file that looks finished (docs/design.md).

A write goes to ``.<name>.<random>.tmp`` beside the file, is flushed to disk, given the mode a plain
``open`` would have given it (0666 less the umask: ``mkstemp`` makes it 0600, which would hide a run's
results from collaborators in a shared folder), and renamed onto the file when complete. A process killed
before the rename (SIGKILL runs no cleanup) leaves that temporary file; the next write of the same file
deletes it, so that a rerun of the killed job leaves none (a file has one writer at a time). A write
that fails because the disk is full leaves the old file as it was and is one ``FdmError`` line naming the
file (torch's writer reports a full disk as an unrelated ``RuntimeError``, so the file system is asked).
Torch-free, so light commands (report, track, train-config) can use it without importing torch.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fdm.errors import FdmError
from fdm.faults import fault_point

_FULL = (errno.ENOSPC, errno.EDQUOT)
_NEARLY_FULL_BYTES = 1 << 16  # what a failed write leaves free, at most, when it filled the disk


def temporary_beside(path: Path) -> str:
    """A new temporary file for a write of ``path``, after deleting those that killed writes of it left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_plain_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open`` would have: 0666 less the umask (``mkstemp`` makes 0600)."""
    os.chmod(path, 0o666 & ~current_umask())


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; give it the plain mode and rename it onto ``path`` only if
    the block succeeds, delete it if the block fails (a kill leaves it, for the next write to delete)."""
    path = Path(path)
    try:
        tmp = Path(temporary_beside(path))
    except OSError as err:
        if err.errno in _FULL:
            raise FdmError(f"{path}: no space left on device") from None
        raise
    try:
        yield tmp
        give_plain_mode(tmp)
        fault_point("atomic:before_rename", path)
        os.replace(tmp, path)
    except BaseException as err:
        full = isinstance(err, Exception) and disk_full(err, tmp)
        tmp.unlink(missing_ok=True)
        if full:
            raise FdmError(f"{path}: no space left on device") from None
        raise


def disk_full(err: BaseException, where: Path) -> bool:
    """Whether ``err`` (or an error it arose from) says the disk is full, or the file system of ``where``
    has (almost) no space left after it."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL:
            return True
        err = err.__cause__ or err.__context__
    try:
        stat = os.statvfs(where.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < _NEARLY_FULL_BYTES


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it into place."""
    with replacing(path) as tmp:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

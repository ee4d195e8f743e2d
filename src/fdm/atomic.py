"""Atomic file writes: a killed job never leaves a file that looks finished (docs/design.md).

The file is written under a temporary name beside its destination, flushed to disk, given the mode a
plain ``open`` would have given it (0666 less the umask: ``mkstemp`` makes it 0600, which would hide a
run's results from collaborators in a shared folder), then renamed into place. Torch-free, so light
commands (report, track, train-config) can use it without importing torch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_plain_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open`` would have: 0666 less the umask (``mkstemp`` makes 0600)."""
    os.chmod(path, 0o666 & ~current_umask())


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        give_plain_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

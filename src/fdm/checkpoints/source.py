"""Where a checkpoint comes from: a local file, or an http(s) URL downloaded once into a cache folder.

Downloads go through ``fdm.data.download`` (progress bar, Content-Length check, resume of an interrupted
``.part`` file with an HTTP Range request, SHA-256 check, redirects only to http(s), a size limit and a
deadline). The file is not read here: the conversion reads it once, and checks its size and SHA-256 on the
bytes it unpickles (``fdm.checkpoints.convert.read_once``). Torch-free.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path

from fdm.data.download import download
from fdm.errors import FdmError, shown


def default_cache_dir() -> Path:
    """``$FDM_CACHE/checkpoints``, else ``$XDG_CACHE_HOME/fdm/checkpoints``, else ``~/.cache/fdm/checkpoints``."""
    if os.environ.get("FDM_CACHE"):
        return Path(os.environ["FDM_CACHE"]).expanduser() / "checkpoints"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fdm" / "checkpoints"


def is_url(source: str) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source) is not None


def cached_name(url: str) -> str:
    """The cache file of ``url``: its last path segment, prefixed by a digest of the whole URL (runs reuse
    names such as network-snapshot-200000.pkl)."""
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", Path(urllib.parse.urlparse(url).path).name) or "checkpoint.pkl"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{tail.lstrip('.')}"


def expected_sha256(sha256: str | None) -> str | None:
    """``sha256`` in lower case, checked to be 64 hexadecimal digits (None stays None)."""
    if sha256 is not None and re.fullmatch(r"[0-9A-Fa-f]{64}", sha256) is None:
        raise FdmError(f"--sha256 {shown(sha256)} is not 64 hexadecimal digits")
    return sha256.lower() if sha256 else None


def locate(
    source: str,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    max_bytes: int,
    deadline: float,
) -> tuple[Path, bool]:
    """(The local file of ``source``, whether it is a cached download).

    A URL is downloaded into ``cache_dir`` (default ``default_cache_dir()``) unless already there: at most
    ``max_bytes``, within ``deadline`` seconds, checked against ``sha256`` (lower-case hex) when given.
    """
    if not is_url(source):
        path = Path(source)
        if not path.is_file():
            raise FdmError(f"no such file: {source}")
        return path, False
    if urllib.parse.urlparse(source).scheme not in ("http", "https"):
        raise FdmError(f"cannot download {source}: only http and https URLs are supported")
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / cached_name(source)
    if not path.is_file():
        download(source, path, sha256=sha256, resume=True, max_bytes=max_bytes, deadline=deadline)
    return path, True

"""Where a checkpoint comes from: a local file, or an http(s) URL downloaded once into a cache folder.

Downloads go through ``fdm.data.download`` (progress bar, Content-Length check, resume of an interrupted
``.part`` file with an HTTP Range request, SHA-256 check). Torch-free.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path

from fdm.data.download import download
from fdm.digest import file_sha256
from fdm.errors import FdmError


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


def locate(
    source: str, sha256: str | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[Path, str]:
    """(the local file of ``source``, its SHA-256), checked against ``sha256`` when given.

    A URL is downloaded into ``cache_dir`` (default ``default_cache_dir()``) unless already there; a cached
    or downloaded file that fails the check is deleted. A local file that fails it is left alone.
    """
    if sha256 is not None and re.fullmatch(r"[0-9A-Fa-f]{64}", sha256) is None:
        raise FdmError(f"--sha256 {sha256!r} is not 64 hexadecimal digits")
    expected = sha256.lower() if sha256 else None
    if not is_url(source):
        path = Path(source)
        if not path.is_file():
            raise FdmError(f"no such file: {source}")
        digest = file_sha256(path)
        if expected and digest != expected:
            raise FdmError(f"checksum mismatch: {path} has SHA-256 {digest}, expected {expected}")
        return path, digest
    if urllib.parse.urlparse(source).scheme not in ("http", "https"):
        raise FdmError(f"cannot download {source}: only http and https URLs are supported")
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / cached_name(source)
    if not path.is_file():
        download(source, path, sha256=expected, resume=True)
    digest = file_sha256(path)
    if expected and digest != expected:
        path.unlink()
        raise FdmError(
            f"checksum mismatch: the cached {path} has SHA-256 {digest}, expected {expected}; "
            "it was removed, run again to download it anew"
        )
    return path, digest

"""Download a file once, with a progress bar and an MD5 check, never leaving a partial file."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fdm.errors import FdmError

CHUNK = 1 << 20


def md5_of(path: str | os.PathLike) -> str:
    """Hex MD5 digest of a file (an integrity check, not a security one)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: str | os.PathLike, md5: str, hint: str = "") -> None:
    """Raise a one-line error (ending in ``hint``) if the file's MD5 is not ``md5``."""
    actual = md5_of(path)
    if actual != md5.lower():
        raise FdmError(f"checksum mismatch: {path} has MD5 {actual}, expected {md5.lower()}{hint}")


def download(url: str, dest: str | os.PathLike, md5: str, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest``: stream to a temporary file beside it, check length and MD5, rename.

    Offline, the error names the address, the file and the folder to put it in by hand.
    """
    dest = Path(dest)
    by_hand = f"download {dest.name} from {url} by hand and put it in {dest.parent}/"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        raise FdmError(f"cannot write to {dest.parent}: {err.strerror or err}") from None
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", None) or err
                raise FdmError(f"cannot download {url} ({reason}); {by_hand}") from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                digest, received = hashlib.md5(usedforsecurity=False), 0
                with tqdm(total=total, desc=f"downloading {dest.name}", unit="B", unit_scale=True) as bar:
                    try:
                        while chunk := response.read(CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
                    except (http.client.HTTPException, OSError):
                        total = max(total or 0, received + 1)
            if total is not None and received != total:
                raise FdmError(
                    f"download of {url} interrupted after {received} of {total} bytes; run again or {by_hand}"
                )
        if digest.hexdigest() != md5.lower():
            raise FdmError(
                f"checksum mismatch for {url}: MD5 {digest.hexdigest()}, expected {md5.lower()}; "
                "the download was discarded"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest

"""Download a file once, with a progress bar, a size check and an MD5 or SHA-256 check.

Nothing partial is ever left at the destination. By default the body goes to a temporary file that is
removed on any failure; with ``resume=True`` an interrupted body is kept as ``<dest>.part`` and the next
call continues it with an HTTP ``Range`` request (RFC 9110, section 14), starting over where the server
answers with the whole file instead.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fdm.atomic import give_plain_mode
from fdm.errors import FdmError

CHUNK = 1 << 20
_ALGORITHMS = {"MD5": "md5", "SHA-256": "sha256"}


def file_digest(path: str | os.PathLike, algorithm: str = "MD5") -> str:
    """Hex digest of a file, ``algorithm`` "MD5" (an integrity check, not a security one) or "SHA-256"."""
    digest = hashlib.new(_ALGORITHMS[algorithm], usedforsecurity=algorithm != "MD5")
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def md5_of(path: str | os.PathLike) -> str:
    """Hex MD5 digest of a file."""
    return file_digest(path, "MD5")


def check_md5(path: str | os.PathLike, md5: str, hint: str = "") -> None:
    """Raise a one-line error (ending in ``hint``) if the file's MD5 is not ``md5``."""
    actual = md5_of(path)
    if actual != md5.lower():
        raise FdmError(f"checksum mismatch: {path} has MD5 {actual}, expected {md5.lower()}{hint}")


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    *,
    sha256: str | None = None,
    timeout: float = 60.0,
    resume: bool = False,
) -> Path:
    """Fetch ``url`` to ``dest``: stream beside it, check the length and the checksums given, rename.

    The length is checked against the server's Content-Length (or Content-Range); a file failing a
    checksum is deleted. ``resume=True`` keeps an interrupted download as ``<dest>.part`` and continues
    it on the next call. Offline, the error names the address, the file and the folder to put it in.
    """
    dest = Path(dest)
    by_hand = f"download {dest.name} from {url} by hand and put it in {dest.parent}/"
    expected = {name: value.lower() for name, value in (("MD5", md5), ("SHA-256", sha256)) if value}
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if resume:
            part = dest.with_name(f"{dest.name}.part")
            part.touch()
        else:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            os.close(fd)
            part = Path(tmp)
    except OSError as err:
        raise FdmError(f"cannot write to {dest.parent}: {err.strerror or err}") from None
    try:
        received, total = _fetch(url, part, timeout, by_hand, dest.name)
        if total is not None and received != total:
            again = "run the command again to resume it" if resume else "run again"
            raise FdmError(
                f"download of {url} interrupted after {received} of {total} bytes; {again} or {by_hand}"
            )
        for name, value in expected.items():
            actual = file_digest(part, name)
            if actual != value:
                part.unlink()
                raise FdmError(
                    f"checksum mismatch for {url}: {name} {actual}, expected {value}; the download was discarded"
                )
        give_plain_mode(part)
        os.replace(part, dest)
    except BaseException:
        if not resume or (part.is_file() and part.stat().st_size == 0):
            part.unlink(missing_ok=True)
        raise
    return dest


def _fetch(url: str, part: Path, timeout: float, by_hand: str, name: str) -> tuple[int, int | None]:
    """Append the rest of ``url`` to ``part``; return (bytes now in ``part``, the file's full size or None)."""
    start = part.stat().st_size
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # Nothing after byte `start`: the part is stale; start over.
            part.write_bytes(b"")
            return _fetch(url, part, timeout, by_hand, name)
        raise FdmError(f"cannot download {url} (HTTP {err.code} {err.reason}); {by_hand}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise FdmError(f"cannot download {url} ({reason}); {by_hand}") from None
    with response:
        if response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != start:
                part.write_bytes(b"")
                raise FdmError(
                    f"{url} answered a request for bytes {start}- with bytes {first}-; "
                    f"the partial download was discarded, run again or {by_hand}"
                )
        else:  # The whole file: the server ignores ranges, or nothing had been downloaded.
            start = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        received = start
        with (
            open(part, "ab" if start else "wb") as out,
            tqdm(total=total, initial=start, desc=f"downloading {name}", unit="B", unit_scale=True) as bar,
        ):
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError):
                total = max(total or 0, received + 1)  # Reported as an interruption.
    return received, total


def _content_range(header: str | None) -> tuple[int, int | None]:
    """(first byte, full size or None) of a ``Content-Range: bytes FIRST-LAST/SIZE`` header."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    if match is None:
        raise FdmError(f"malformed Content-Range header {header!r} in a partial response")
    return int(match[1]), None if match[2] == "*" else int(match[2])

"""Download a file once, bounded in size and time, with a progress bar and an MD5 or SHA-256 check.

Nothing partial is ever left at the destination. By default the body goes to a temporary file that is
removed on any failure; with ``resume=True`` an interrupted body is kept as ``<dest>.part`` and the next
call continues it with an HTTP ``Range`` request (RFC 9110, section 14), starting over where the server
answers with the whole file instead.

What a server can make a download do is bounded:

- redirects are followed only to http and https addresses (urllib also follows ``ftp://``);
- the body may not exceed ``size`` bytes where the file's size is known, else ``max_bytes``
  (``DEFAULT_MAX_BYTES`` unless the caller overrides it): a larger Content-Length is refused before
  anything is read, a longer body when it gets there (and the partial file is deleted);
- the whole download, connection and headers included, ends after ``deadline`` seconds
  (``DEFAULT_DEADLINE``): a watchdog shuts the connection's socket down, whatever call is waiting on it,
  so a server sending a byte now and then cannot hold it (``timeout`` alone bounds each socket read);
  with ``resume`` what arrived is kept for the next call.

Torch-free.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fdm.atomic import give_plain_mode
from fdm.errors import FdmError, shown

CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: where the size is not known, more than any file the pipeline fetches
DEFAULT_DEADLINE = 3600.0  # seconds for one download, all of it
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


class _WrongSize(FdmError):
    """The server sent, or announced, more than the download's size limit, or not the file's known size:
    what arrived is deleted, even with ``resume``."""


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    *,
    sha256: str | None = None,
    timeout: float = 60.0,
    resume: bool = False,
    size: int | None = None,
    max_bytes: int | None = None,
    deadline: float | None = None,
) -> Path:
    """Fetch ``url`` to ``dest``: stream beside it, check the length and the checksums given, rename.

    The length is checked against the server's Content-Length (or Content-Range) and ``size`` where given;
    the body is limited to ``size``, else ``max_bytes`` (default ``DEFAULT_MAX_BYTES``), and the whole
    download to ``deadline`` seconds (default ``DEFAULT_DEADLINE``); ``timeout`` bounds each wait on the
    network. A file failing a checksum is deleted. ``resume=True`` keeps an interrupted download as
    ``<dest>.part`` and continues it on the next call. Offline, the error names the address, the file and
    the folder to put it in.
    """
    dest = Path(dest)
    by_hand = f"download {dest.name} from {url} by hand and put it in {dest.parent}/"
    expected = {name: value.lower() for name, value in (("MD5", md5), ("SHA-256", sha256)) if value}
    limit = size if size is not None else (max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES)
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
        with _Watchdog(DEFAULT_DEADLINE if deadline is None else deadline) as watchdog:
            received, total = _fetch(url, part, timeout, by_hand, dest.name, limit, watchdog)
        again = "run the command again to resume it" if resume else "run again"
        if watchdog.expired:
            raise FdmError(
                f"download of {url} took longer than its limit of {watchdog.seconds:g} s ({received:,} bytes "
                f"arrived); {again} or {by_hand}"
            )
        if size is not None and total is not None and total != size:
            raise _WrongSize(f"{url} has {total:,} bytes where {dest.name} has {size:,}; {by_hand}")
        if total is not None and received != total:
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
    except BaseException as err:
        empty = part.is_file() and part.stat().st_size == 0
        if not resume or empty or isinstance(err, _WrongSize):
            part.unlink(missing_ok=True)
        raise
    return dest


class _Watchdog:
    """Shuts down the sockets of a download once ``seconds`` have passed, unblocking any read or connect."""

    def __init__(self, seconds: float):
        self.seconds, self.expired = seconds, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, but only to http and https addresses."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urljoin(req.full_url, newurl)
        if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
            fp.close()
            raise FdmError(
                f"cannot download {req.full_url}: it redirects to {shown(newurl)}; only http and https are followed"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib with the redirect rule above, whose connections the watchdog can shut down."""

    class Connection(http.client.HTTPConnection):
        def connect(self):
            super().connect()
            watchdog.watch(self.sock)

    class SecureConnection(http.client.HTTPSConnection):
        def connect(self):
            super().connect()
            watchdog.watch(self.sock)

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(Connection, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(SecureConnection, req, context=self._context)

    return urllib.request.build_opener(Handler, SecureHandler, _Redirects)


def _fetch(
    url: str, part: Path, timeout: float, by_hand: str, name: str, limit: int, watchdog: _Watchdog
) -> tuple[int, int | None]:
    """Append the rest of ``url`` to ``part``; return (bytes now in ``part``, the file's full size or None)."""
    start = part.stat().st_size
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = _opener(watchdog).open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # Nothing after byte `start`: the part is stale; start over.
            part.write_bytes(b"")
            return _fetch(url, part, timeout, by_hand, name, limit, watchdog)
        raise FdmError(f"cannot download {url} (HTTP {err.code} {shown(err.reason)}); {by_hand}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        if watchdog.expired:
            return start, None
        reason = getattr(err, "reason", None) or err
        raise FdmError(f"cannot download {url} ({shown(str(reason))}); {by_hand}") from None
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
        if total is not None and total > limit:
            raise _WrongSize(
                f"{url} announces {total:,} bytes, more than the limit of {limit:,}; nothing was kept"
            )
        received = start
        with (
            open(part, "ab" if start else "wb") as out,
            tqdm(total=total, initial=start, desc=f"downloading {name}", unit="B", unit_scale=True) as bar,
        ):
            try:
                while received <= limit and (chunk := response.read(min(CHUNK, limit + 1 - received))):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError):
                total = max(total or 0, received + 1)  # Reported as an interruption (or the deadline).
    if received > limit:
        raise _WrongSize(f"{url} sent more than the limit of {limit:,} bytes; stopped, nothing was kept")
    return received, total


def _content_range(header: str | None) -> tuple[int, int | None]:
    """(first byte, full size or None) of a ``Content-Range: bytes FIRST-LAST/SIZE`` header."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    if match is None:
        raise FdmError(f"malformed Content-Range header {shown(header)} in a partial response")
    return int(match[1]), None if match[2] == "*" else int(match[2])

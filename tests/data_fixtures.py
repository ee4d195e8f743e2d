"""Helpers for the dataset tests: tiny CIFAR-format archives, image files and a local HTTP server."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import pickle
import re
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image


class _Python2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 ``str`` and numpy as numpy 1.x named it, like the real CIFAR batches."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", None) == "numpy._core.multiarray":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n" + obj.__name__.encode() + b"\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[type(len)] = save_global


def python2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def make_cifar_archive(path: Path, per_batch: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a CIFAR-10 python archive with 5 x ``per_batch`` training images; return them (HWC) and labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(5 * per_batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5 * per_batch)
    members = {}
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        rows = images[part].transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # HWC -> CHW rows.
        batch = {
            b"batch_label": f"training batch {b + 1} of 5".encode(),
            b"labels": [int(y) for y in labels[part]],
            b"data": rows,
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        members[f"cifar-10-batches-py/data_batch_{b + 1}"] = python2_pickle(batch)
    test = {b"labels": [0], b"data": np.zeros((1, 3072), np.uint8)}
    members["cifar-10-batches-py/test_batch"] = python2_pickle(test)
    members["cifar-10-batches-py/batches.meta"] = python2_pickle({b"label_names": [b"airplane"] * 10})
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return images, labels


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.hits.append(self.path)
        self.server.range_headers.append(self.headers.get("Range"))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, declared = route
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if self.server.ranges and wanted:
            first = int(wanted[1])
            if first >= declared:
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{declared - 1}/{declared}")
            body, declared = body[first:], declared - first
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(routes: dict[str, bytes | tuple[bytes, int]], ranges: bool = False):
    """Serve ``routes`` (path -> body, or (body, declared Content-Length)) on 127.0.0.1; yield the server.

    ``server.url`` is the base address, ``server.hits`` the paths requested so far and
    ``server.range_headers`` their Range headers (None where absent). With ``ranges`` a
    ``Range: bytes=N-`` request gets the rest of the body (206); without, the whole body (200), as
    from a server that ignores ranges.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes = {p: r if isinstance(r, tuple) else (r, len(r)) for p, r in routes.items()}
    server.hits, server.range_headers, server.ranges = [], [], ranges
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB", fmt: str | None = None, seed: int = 0):
    """Write a random image of ``size`` (width, height) in ``mode``; return it as saved (a PIL image)."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "I;16":
        image = PIL.Image.fromarray(rng.integers(0, 65536, size=(height, width), dtype=np.uint16))
    else:
        image = PIL.Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return image


def png_bytes(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    PIL.Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(buffer, format="png")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip with exactly these member names (unsafe ones included) and contents."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def run_fdm(*args):
    """Run the `fdm` command line in-process; return click's result."""
    from click.testing import CliRunner

    from fdm.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def assert_fails_cleanly(result, dest: Path, *words: str) -> str:
    """The command exited 2 with one `fdm: error:` line naming ``words``, and left nothing beside ``dest``."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("fdm: error:")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not dest.exists()
    if dest.parent.is_dir():
        assert not [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")]
    return lines[0]

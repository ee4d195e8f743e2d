"""The dataset archive: EDM's zip of PNGs plus ``dataset.json`` (docs/paper.md section 6).

Layout, shared with EDM's and FDM's ``dataset_tool.py`` so that zips move freely between them:

- image ``i`` is the member ``{i // 1000:05d}/img{i:08d}.png``, an uncompressed PNG (mode ``L`` or ``RGB``);
- ``dataset.json`` holds ``{"labels": [[member, class_index], ...]}`` or ``{"labels": null}``;
- all images are square and share one size and channel count.

Our writer is byte-reproducible: members in index order, stored (not deflated), a fixed
timestamp and permissions, PNGs at ``compress_level=0``, and a fixed JSON layout. Output goes
to a temporary file beside the destination and is renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import PIL.Image
from tqdm import tqdm

from fdm.atomic import replacing
from fdm.errors import FdmError

LABELS_MEMBER = "dataset.json"
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # The earliest time a zip header can hold.
ZIP_FILE_MODE = 0o100644  # Regular file, rw-r--r--.
CHANNEL_MODES = {1: "L", 3: "RGB"}


def member_name(index: int) -> str:
    """Archive name of image ``index``: folders of 1000 images, as EDM's dataset tool names them."""
    return f"{index // 1000:05d}/img{index:08d}.png"


def check_member_name(name: str, archive: str | os.PathLike) -> None:
    """Reject zip members that would escape a folder if extracted ("zip slip")."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise FdmError(f"{archive}: unsafe member path {name!r} (absolute or containing '..')")


def is_image_name(name: str) -> bool:
    """Whether PIL knows the file extension of ``name`` as an image format."""
    return os.path.splitext(name)[1].lower() in PIL.Image.registered_extensions()


def error_reason(err: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    if isinstance(err, PIL.UnidentifiedImageError):
        return "not an image format PIL recognises"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclasses.dataclass(frozen=True)
class Item:
    """One image on its way into an archive: ``pixels`` uint8 [H, W, C] with C in {1, 3}."""

    source: str  # Where it came from, for error messages.
    pixels: np.ndarray
    label: int | None = None


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a prepared archive holds."""

    path: Path
    num_images: int
    resolution: int
    channels: int
    num_classes: int  # 0 when unlabelled.
    class_names: tuple[str, ...] = ()  # Index order, when the classes have names.

    def line(self) -> str:
        classes = f", {self.num_classes} classes" if self.num_classes else ", unlabelled"
        if self.class_names:
            shown = ", ".join(self.class_names[:10]) + (", ..." if len(self.class_names) > 10 else "")
            classes += f" ({shown})"
        return (
            f"wrote {self.path}: {self.num_images} images, {self.resolution}x{self.resolution}, "
            f"{self.channels} channel{'s' if self.channels > 1 else ''}{classes}"
        )


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    if dest.is_dir():
        raise FdmError(f"cannot write {dest}: it is a directory")
    try:
        with replacing(dest) as tmp:
            yield tmp
    except OSError as err:  # Sources raise FdmError for their own files; this is the output failing.
        raise FdmError(f"cannot write {dest}: {err.strerror or error_reason(err)}") from None


def encode_png(pixels: np.ndarray) -> bytes:
    """Uncompressed PNG bytes of a uint8 [H, W, C] image (C in {1, 3})."""
    image = PIL.Image.fromarray(
        pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, CHANNEL_MODES[pixels.shape[2]]
    )
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=0, optimize=False)
    return buffer.getvalue()


def _write_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix, whatever the host, so the bytes do not depend on it.
    info.external_attr = ZIP_FILE_MODE << 16
    archive.writestr(info, data)


def write_archive(
    dest: str | os.PathLike, items: Iterable[Item], total: int | None = None, desc: str = "writing"
) -> Summary:
    """Write ``items`` to ``dest`` as a dataset archive, atomically; return its summary.

    Every item must have the shape of the first, be square, and either all items carry a label
    or none does. Any failure leaves ``dest`` untouched and no temporary file behind.
    """
    dest = Path(dest)
    labels: list[list] = []
    shape = labelled = None
    count = 0
    with atomic_output(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for item in tqdm(items, total=total, desc=desc, unit="img", dynamic_ncols=True):
            pixels = item.pixels
            if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in CHANNEL_MODES:
                raise FdmError(f"{item.source}: expected uint8 [H, W, 1 or 3] pixels, got {pixels.shape}")
            if shape is None:
                shape = pixels.shape
                if shape[0] != shape[1]:
                    raise FdmError(f"{item.source}: image is {shape[1]}x{shape[0]}, not square")
            elif pixels.shape != shape:
                raise FdmError(
                    f"{item.source}: image is {pixels.shape[1]}x{pixels.shape[0]}x{pixels.shape[2]}, "
                    f"but earlier images are {shape[1]}x{shape[0]}x{shape[2]} (mixed sizes)"
                )
            if count == 0:
                labelled = item.label is not None
            elif (item.label is not None) != labelled:
                raise FdmError(f"{item.source}: some images have labels and some do not")
            name = member_name(count)
            _write_member(archive, name, encode_png(pixels))
            if item.label is not None:
                labels.append([name, int(item.label)])
            count += 1
        if count == 0:
            raise FdmError(f"no images to write to {dest}")
        meta = {"labels": labels or None}
        _write_member(archive, LABELS_MEMBER, json.dumps(meta, separators=(",", ":")).encode())
    num_classes = max(label for _, label in labels) + 1 if labels else 0
    return Summary(dest, count, shape[0], shape[2], num_classes)


def safe_names(archive: zipfile.ZipFile, path: str | os.PathLike) -> list[str]:
    """All member names of an archive after the zip-slip check; directories left out."""
    names = []
    for info in archive.infolist():
        check_member_name(info.filename, path)
        if not info.is_dir():
            names.append(info.filename)
    return names

"""Images from a folder or zip of the user's: FFHQ, AFHQv2 or anything else (docs/paper.md section 6).

Files are found recursively and taken in sorted path order. Each image is converted to the
requested channel count, optionally centre-cropped to a square, and resized to the target
resolution with PIL's Lanczos filter, as EDM's dataset tool does for FFHQ-64 and AFHQv2-64.

Accepted image modes: 1, L, P, RGB, CMYK, YCbCr, and LA/RGBA when fully opaque. Transparent
images and 16-bit or float images (I, I;16, F) are refused rather than silently altered.
Labels, when asked for, are the name of the folder holding each image (AFHQv2's
``train/cat/x.png`` and ``test/cat/y.png`` are both "cat"); class indices follow sorted names.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import PIL.Image

from fdm.data.archive import Item, error_reason, is_image_name, safe_names
from fdm.errors import FdmError

CROPS = ("none", "center")
PLAIN_MODES = ("1", "L", "RGB", "CMYK", "YCbCr")
ALPHA_MODES = {"LA": "L", "RGBA": "RGB"}


def _is_listed(name: str) -> bool:
    """Image files, skipping hidden ones and macOS resource forks (``__MACOSX/``, ``._x.png``)."""
    parts = name.split("/")
    return is_image_name(name) and not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def list_images(source: str | os.PathLike) -> list[str]:
    """Relative paths of the images in a folder or zip archive, recursively, in sorted order."""
    source = Path(source)
    if source.is_dir():
        names = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    elif source.is_file():
        try:
            with zipfile.ZipFile(source) as archive:
                names = safe_names(archive, source)
        except (zipfile.BadZipFile, OSError) as err:
            raise FdmError(
                f"{source}: not a folder or a readable zip archive ({error_reason(err)})"
            ) from None
    else:
        raise FdmError(f"missing source: {source} does not exist")
    return sorted(filter(_is_listed, names), key=lambda name: name.split("/"))  # Component-wise.


@contextlib.contextmanager
def _open_reader(source: Path) -> Iterator[Callable[[str], bytes]]:
    """Yield a function returning the bytes of an image given its relative path."""
    if source.is_dir():
        yield lambda name: (source / name).read_bytes()
    else:
        with zipfile.ZipFile(source) as archive:
            yield archive.read


def class_labels(names: list[str], source: str | os.PathLike) -> tuple[list[int], list[str]]:
    """Per-image class indices from parent folder names, and the sorted class names."""
    for name in names:
        if "/" not in name:
            raise FdmError(f"labels requested but {source}/{name} is not inside a class folder")
    folders = [name.split("/")[-2] for name in names]
    classes = sorted(set(folders))
    index = {c: i for i, c in enumerate(classes)}
    return [index[f] for f in folders], classes


def _to_mode(image: PIL.Image.Image, channels: int, where: str) -> PIL.Image.Image:
    """Convert to L (channels=1) or RGB (channels=3), refusing modes that would lose information."""
    mode = image.mode
    if mode == "P":  # A palette may carry transparency; expand it to see.
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ALPHA_MODES:
        if image.getchannel("A").getextrema()[0] < 255:
            raise FdmError(f"{where}: image has transparent pixels (mode {image.mode}); flatten it first")
        image = image.convert(ALPHA_MODES[mode])
    elif mode not in PLAIN_MODES:
        raise FdmError(
            f"{where}: unsupported image mode {mode} (supported: 1, L, P, LA, RGB, RGBA, CMYK, YCbCr)"
        )
    return image.convert("L" if channels == 1 else "RGB")


def load_image(data: bytes, where: str, resolution: int | None, crop: str, channels: int) -> np.ndarray:
    """Decode, convert, crop and resize one image to uint8 [H, W, channels]."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            image.load()
            image = _to_mode(image, channels, where)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise FdmError(f"{where}: cannot read image ({error_reason(err)})") from None
    width, height = image.size
    if width != height:
        if crop == "none":
            raise FdmError(f"{where}: image is {width}x{height}, not square; pass --crop center to crop it")
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if resolution is not None and image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), PIL.Image.LANCZOS)
    return np.asarray(image).reshape(image.size[1], image.size[0], channels)


def _load_job(job: tuple) -> np.ndarray:
    return load_image(*job)


def folder_items(
    source: str | os.PathLike,
    resolution: int | None = None,
    crop: str = "none",
    labels: bool = False,
    channels: int = 3,
    workers: int = 1,
) -> tuple[int, list[str] | None, Iterator[Item]]:
    """Count, class names (or None) and items of a folder or zip source.

    The source is scanned, and labels resolved, before the first image is decoded, so an empty
    source or a missing class folder fails before anything is written. With ``workers > 1``
    images are decoded and resized in that many processes; the items and their order are the same.
    """
    if crop not in CROPS:
        raise FdmError(f"unknown crop mode {crop!r}; choose from {', '.join(CROPS)}")
    if channels not in (1, 3):
        raise FdmError(f"channels must be 1 or 3, not {channels}")
    names = list_images(source)
    if not names:
        raise FdmError(f"no images found in {source}")
    indices, classes = class_labels(names, source) if labels else ([None] * len(names), None)
    places = [f"{source}/{name}" for name in names]

    def jobs(read: Callable[[str], bytes]) -> Iterator[tuple]:
        for name, where in zip(names, places, strict=True):
            try:
                data = read(name)
            except (OSError, zipfile.BadZipFile) as err:
                raise FdmError(f"{where}: cannot read file ({error_reason(err)})") from None
            yield data, where, resolution, crop, channels

    def items() -> Iterator[Item]:
        with contextlib.ExitStack() as stack:
            read = stack.enter_context(_open_reader(Path(source)))
            if workers > 1:
                pool = stack.enter_context(multiprocessing.Pool(workers))
                images = pool.imap(_load_job, jobs(read), chunksize=4)
            else:
                images = map(_load_job, jobs(read))
            for where, label, pixels in zip(places, indices, images, strict=True):
                yield Item(where, pixels, label)

    return len(names), classes, items()

"""The prepare stage: turn each source into one dataset archive (docs/paper.md section 6).

Every function writes ``dest`` atomically (temporary file, then rename) and returns the
archive's `Summary`. Running one twice with the same inputs gives byte-identical zips.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from fdm.data import cifar10, digits
from fdm.data.archive import Summary, is_power_of_two, write_archive
from fdm.data.folder import folder_items
from fdm.errors import FdmError

# Where FFHQ and AFHQv2 come from; neither can be fetched without an account or a quota.
HOMEPAGES = {
    "ffhq": "https://github.com/NVlabs/ffhq-dataset (images1024x1024)",
    "afhqv2": "https://github.com/clovaai/stargan-v2 (afhq-v2-dataset)",
}
# The paper's 64x64 datasets as presets of `prepare_folder`: AFHQv2 keeps its folder labels
# (cat, dog, wild) as EDM writes them, though the paper trains it unconditionally.
PRESETS = {
    "ffhq": {"resolution": 64, "crop": "none", "labels": False},
    "afhqv2": {"resolution": 64, "crop": "none", "labels": True},
}


def prepare_digits(dest: str | os.PathLike) -> Summary:
    """scikit-learn's 1,797 digits, 16x16 grayscale, labels 0-9 (see `fdm.data.digits`)."""
    return write_archive(dest, digits.digits_items(), total=digits.NUM_IMAGES, desc="digits")


def prepare_cifar10(
    dest: str | os.PathLike,
    source: str | os.PathLike | None = None,
    download_dir: str | os.PathLike | None = None,
    url: str = cifar10.URL,
    md5: str = cifar10.MD5,
) -> Summary:
    """CIFAR-10's 50,000 training images with labels, from ``source`` or a verified download.

    Without ``source`` the archive is looked up in, or downloaded to, ``download_dir``
    (default: a ``downloads`` folder beside ``dest``).
    """
    download_dir = Path(dest).parent / "downloads" if download_dir is None else Path(download_dir)
    archive = cifar10.locate_archive(source, download_dir, url, md5)
    return write_archive(dest, cifar10.cifar10_items(archive), total=cifar10.NUM_IMAGES, desc="cifar10")


def prepare_folder(
    dest: str | os.PathLike,
    source: str | os.PathLike,
    resolution: int | None = None,
    crop: str = "none",
    labels: bool = False,
    channels: int = 3,
    workers: int = 1,
) -> Summary:
    """Images found recursively in a folder or zip, resized to ``resolution`` (Lanczos) if given.

    ``workers`` processes decode and resize in parallel; the archive is the same for any number.
    """
    if resolution is not None and not is_power_of_two(resolution):
        raise FdmError(f"resolution must be a power of two, not {resolution}")
    count, classes, items = folder_items(
        source, resolution=resolution, crop=crop, labels=labels, channels=channels, workers=workers
    )
    summary = write_archive(dest, items, total=count, desc=Path(source).name)
    return dataclasses.replace(summary, class_names=tuple(classes or ()))


def prepare_preset(
    name: str, dest: str | os.PathLike, source: str | os.PathLike | None, **overrides
) -> Summary:
    """FFHQ-64 or AFHQv2-64 from the user's copy of the original images."""
    if source is None:
        raise FdmError(
            f"missing source: {name} cannot be downloaded automatically; get it from "
            f"{HOMEPAGES[name]} and pass its folder or zip as --source"
        )
    options = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return prepare_folder(dest, source, **options)

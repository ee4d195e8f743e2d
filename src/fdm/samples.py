"""Sample files and grids: generated images as one uint8 ``.npz`` with their seeds, labels and provenance.

Samples go to one ``.npz`` file (uint8 images [N, H, W, C], seeds, labels, provenance) and a grid PNG
for people, not to tens of thousands of PNGs; ``fdm fid`` also reads a bare ``.npy`` uint8 array.
Seeds are written as the specs ``parse_seeds`` reads (``0-49999``, ``1,5,10-19``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fdm.atomic import atomic_write
from fdm.errors import FdmError

NO_LABEL = -1  # The label stored for images of unconditional models.


def parse_seeds(spec: str) -> list[int]:
    """Seeds from a comma-separated list of integers and inclusive ranges: ``"0-49999"``, ``"1,5,10-19"``."""
    seeds = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise FdmError(
                f"bad seed list {spec!r}: expected integers and ranges such as 0-49999 or 1,5,10-19"
            )
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if last < first:
            raise FdmError(f"bad seed range {part.strip()!r}: the end is below the start")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        raise FdmError(f"seed list {spec!r} repeats seeds")
    return seeds


def format_seeds(seeds: Sequence[int]) -> str:
    """The shortest spec that ``parse_seeds`` reads back as ``seeds``: runs become ``a-b``."""
    parts, start = [], 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            first, last = seeds[start], seeds[i - 1]
            parts.append(str(first) if first == last else f"{first}-{last}")
            start = i
    return ",".join(parts)


def quantize(images: torch.Tensor) -> np.ndarray:
    """Float images [N, C, H, W] in [-1, 1] to uint8 [N, H, W, C]: clip(x * 127.5 + 128, 0, 255), truncated."""
    pixels = (images * 127.5 + 128).clip(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


@dataclass(frozen=True)
class Samples:
    """Generated images with their seeds, labels (-1: unconditional) and provenance."""

    images: np.ndarray  # uint8 [N, H, W, C]
    seeds: np.ndarray  # int64 [N]
    labels: np.ndarray  # int64 [N]
    meta: dict = field(default_factory=dict)  # sampler, num_steps, nfe, snapshot, snapshot_sha256


def save_samples(path: str | os.PathLike, samples: Samples) -> None:
    """Write ``samples`` to one ``.npz`` file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                images=samples.images,
                seeds=samples.seeds,
                labels=samples.labels,
                meta=np.str_(json.dumps(samples.meta, sort_keys=True)),
            )

    atomic_write(path, write)


def check_images(images: np.ndarray, source: str) -> np.ndarray:
    """Refuse anything but uint8 square images [N, H, W, C] with C = 1 or 3 and N >= 1."""
    if images.dtype != np.uint8:
        raise FdmError(f"{source}: images must be uint8, got {images.dtype}")
    if (
        images.ndim != 4
        or images.shape[0] < 1
        or images.shape[1] != images.shape[2]
        or images.shape[3] not in (1, 3)
    ):
        raise FdmError(
            f"{source}: images must be [N, H, W, C] with H = W and C = 1 or 3, got {list(images.shape)}"
        )
    return images


def load_samples(path: str | os.PathLike) -> Samples:
    """Read a sample file: our ``.npz``, or a bare ``.npy`` uint8 array [N, H, W, C] from elsewhere."""
    path = Path(path)
    if not path.is_file():
        raise FdmError(f"sample file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            images, seeds, labels, meta = data, None, None, {}
        else:
            with data:
                images, seeds, labels = data["images"], data["seeds"], data["labels"]
                meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FdmError(f"{path} is not a sample file written by `fdm sample` ({err})") from None
    images = check_images(images, str(path))
    count = len(images)
    if seeds is None:
        seeds = labels = np.full(count, NO_LABEL, dtype=np.int64)
    if seeds.shape != (count,) or labels.shape != (count,):
        raise FdmError(f"{path}: {count} images but {seeds.shape} seeds and {labels.shape} labels")
    return Samples(images, seeds, labels, meta)


def save_grid(path: str | os.PathLike, images: np.ndarray, max_images: int = 64) -> None:
    """A square-ish grid PNG of the first ``max_images`` uint8 images [N, H, W, C], for people."""
    from torchvision.utils import save_image

    images = torch.from_numpy(images[:max_images]).permute(0, 3, 1, 2).float() / 255
    nrow = math.ceil(math.sqrt(len(images)))
    atomic_write(path, lambda tmp: save_image(images, tmp, nrow=nrow, padding=1, format="png"))

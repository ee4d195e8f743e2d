"""Read a dataset archive into memory for training and reference statistics.

Reads the zips ``fdm prepare`` writes and those made by EDM's or FDM's ``dataset_tool.py``
(docs/paper.md section 6): any PNG/JPEG/... members in any folders, taken in sorted name order,
with labels from ``dataset.json`` when it is there. The whole archive is decoded once into a
uint8 array [N, C, H, W]; CIFAR-10 at 32x32 takes 150 MB. The archive is checked on open:
safe member paths, readable images of mode L or RGB, square, one size and channel count, and
a label for every image when ``dataset.json`` lists labels.

With ``xflip=True`` the dataset has 2N items, as in EDM: index ``i >= N`` is image ``i - N``
mirrored left to right. Order is fixed; the training loop draws its own index stream.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm import tqdm

from fdm.data.archive import LABELS_MEMBER, error_reason, is_image_name, safe_names
from fdm.errors import FdmError

CHANNELS_OF_MODE = {"L": 1, "RGB": 3}


class ImageDataset:
    """An image dataset archive held in memory.

    Attributes: ``path``; ``images`` uint8 numpy [N, C, H, W] (never flipped); ``labels`` int64
    numpy [N] or None; ``label_dim`` (number of classes, 0 when unlabelled or ``use_labels=False``);
    ``resolution``; ``channels``; ``num_images`` (N); ``xflip``; ``names`` (archive members).
    """

    def __init__(self, path: str | os.PathLike, xflip: bool = False, use_labels: bool = True):
        self.path = Path(path)
        self.xflip = bool(xflip)
        if not self.path.is_file():
            raise FdmError(f"dataset not found: {self.path} (create it with `fdm prepare`)")
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = safe_names(archive, self.path)
                self.names = sorted(name for name in names if is_image_name(name))
                if not self.names:
                    raise FdmError(f"{self.path}: no images in the archive")
                self.images = self._read_images(archive)
                labels = self._read_labels(archive, names) if use_labels else None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
            raise FdmError(f"{self.path}: not a readable zip archive ({error_reason(err)})") from None
        self.labels = labels
        self.label_dim = int(labels.max()) + 1 if labels is not None else 0
        self.num_images, self.channels, self.resolution = self.images.shape[0], *self.images.shape[1:3]

    def _read_images(self, archive: zipfile.ZipFile) -> np.ndarray:
        images = None
        for i, name in enumerate(tqdm(self.names, desc=f"reading {self.path.name}", unit="img", leave=False)):
            try:
                with PIL.Image.open(io.BytesIO(archive.read(name))) as image:
                    image.load()
                    mode, (width, height) = image.mode, image.size
                    pixels = np.asarray(image)
            except (OSError, SyntaxError, ValueError) as err:
                raise FdmError(f"{self.path}: cannot read image {name}: {error_reason(err)}") from None
            if mode not in CHANNELS_OF_MODE:
                raise FdmError(
                    f"{self.path}: {name} has image mode {mode}, expected L or RGB "
                    "(convert the images with `fdm prepare folder`)"
                )
            if width != height:
                raise FdmError(f"{self.path}: {name} is {width}x{height}, not square")
            pixels = pixels.reshape(height, width, CHANNELS_OF_MODE[mode]).transpose(2, 0, 1)
            if images is None:
                images = np.empty((len(self.names), *pixels.shape), dtype=np.uint8)
            elif pixels.shape != images.shape[1:]:
                c, h, w = images.shape[1:]
                raise FdmError(
                    f"{self.path}: {name} is {width}x{height} with {pixels.shape[0]} channel(s), "
                    f"but {self.names[0]} is {w}x{h} with {c} (mixed sizes or channel counts)"
                )
            images[i] = pixels
        return images

    def _read_labels(self, archive: zipfile.ZipFile, names: list[str]) -> np.ndarray | None:
        if LABELS_MEMBER not in names:
            return None
        try:
            labels = json.loads(archive.read(LABELS_MEMBER)).get("labels")
        except (ValueError, AttributeError) as err:
            raise FdmError(f"{self.path}: {LABELS_MEMBER} is not valid ({error_reason(err)})") from None
        if labels is None:
            return None
        try:
            table = {str(name).replace("\\", "/"): label for name, label in labels}
        except (TypeError, ValueError):
            raise FdmError(f"{self.path}: {LABELS_MEMBER} labels must be a list of [file, class]") from None
        if set(table) - set(self.names):
            extra = sorted(set(table) - set(self.names))[0]
            raise FdmError(
                f"{self.path}: {LABELS_MEMBER} labels {extra!r}, which is not an image in the archive"
            )
        result = np.empty(len(self.names), dtype=np.int64)
        for i, name in enumerate(self.names):
            label = table.get(name)
            if label is None:
                raise FdmError(f"{self.path}: {LABELS_MEMBER} has no label for {name}")
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise FdmError(f"{self.path}: label of {name} is {label!r}, expected a class index >= 0")
            result[i] = label
        return result

    def __len__(self) -> int:
        return self.num_images * (2 if self.xflip else 1)

    def __repr__(self) -> str:
        return (
            f"ImageDataset({str(self.path)!r}, images={self.num_images}, resolution={self.resolution}, "
            f"channels={self.channels}, label_dim={self.label_dim}, xflip={self.xflip})"
        )

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images and labels at ``indices`` (ints in [0, len(self))).

        Returns float32 images [n, C, H, W] in [-1, 1] (x / 127.5 - 1) and float32 one-hot labels
        [n, label_dim], or None for an unlabelled dataset. Indices ``>= N`` are mirrored copies.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"dataset index out of range [0, {len(self)})")
        raw, flip = indices % self.num_images, indices >= self.num_images
        pixels = self.images[raw]
        pixels[flip] = pixels[flip][..., ::-1]
        images = torch.from_numpy(pixels).to(torch.float32) / 127.5 - 1
        if self.labels is None:
            return images, None
        onehot = torch.zeros(len(indices), self.label_dim, dtype=torch.float32)
        onehot[torch.arange(len(indices)), torch.from_numpy(self.labels[raw])] = 1
        return images, onehot

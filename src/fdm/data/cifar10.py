"""CIFAR-10 from its official python archive (docs/paper.md section 6; torchvision's CIFAR10 for the archive's checksums).

The archive ``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/data_batch_1..5``: pickled
dicts with ``data`` (10000 x 3072 uint8, each row a 3x32x32 CHW image) and ``labels`` (0-9).
We convert the 50,000 training images with their labels; the test batch is not used.

The archive is trusted only after its MD5 matches, and even then the batches are unpickled with
a loader that resolves only the three numpy names an ndarray pickle needs, so a tampered file
cannot run code.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fdm.data.archive import Item
from fdm.data.download import check_md5, download
from fdm.errors import FdmError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
SIZE = 170_498_071  # bytes of the archive with that MD5: its download may not exceed them
FILENAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
NUM_IMAGES = 50_000

# The function numpy pickles arrays with; its module moved in numpy 2, so take it from numpy itself.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that builds only plain containers and numpy arrays."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def locate_archive(
    source: str | os.PathLike | None, download_dir: str | os.PathLike, url: str, md5: str
) -> Path:
    """The verified archive: ``source`` if given, else ``download_dir/FILENAME``, downloaded if absent."""
    if source is not None:
        source = Path(source)
        if not source.is_file():
            raise FdmError(f"missing source: {source} does not exist (expected {FILENAME})")
        check_md5(source, md5)
        return source
    path = Path(download_dir) / FILENAME
    if path.is_file():
        check_md5(path, md5, hint="; delete it to download it again")
        return path
    return download(url, path, md5, size=SIZE if md5.lower() == MD5 else None)


def _read_batch(archive: tarfile.TarFile, path: Path, member: str) -> tuple[np.ndarray, list]:
    try:
        f = archive.extractfile(member)
    except KeyError:
        raise FdmError(f"{path}: no {member}; not a CIFAR-10 python archive") from None
    try:
        batch = _BatchUnpickler(f, encoding="latin1").load()
        data, labels = batch["data"], batch["labels"]
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise FdmError(f"{path}: corrupt or truncated archive ({err})") from None
    except Exception as err:  # Anything a malformed pickle raises.
        raise FdmError(f"{path}: {member} is not a CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
    ):
        raise FdmError(f"{path}: {member} data is not an [N, 3072] uint8 array")
    if len(labels) != len(data) or not all(isinstance(y, int) and 0 <= y < 10 for y in labels):
        raise FdmError(f"{path}: {member} labels are not {len(data)} class indices in 0-9")
    return data, labels


def cifar10_items(path: str | os.PathLike) -> Iterator[Item]:
    """The training images of a CIFAR-10 python archive, 32x32 RGB, labelled 0-9, batch by batch."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in TRAIN_BATCHES:
                data, labels = _read_batch(archive, path, member)
                images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> HWC images.
                for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
                    yield Item(f"{path}:{member}[{i}]", np.ascontiguousarray(pixels), label)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise FdmError(f"{path}: corrupt or truncated archive ({err})") from None

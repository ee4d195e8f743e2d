"""The dataset reader: EDM-format zips in, uint8 in memory, [-1, 1] images and one-hot labels out."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from data_fixtures import png_bytes, write_zip

from fdm.data import ImageDataset
from fdm.errors import FdmError


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(png)))


def test_reads_edm_style_zip_without_dataset_json(tmp_path):
    # As EDM's dataset tool may leave it: deflated members, nested folders, no labels file.
    members = {f"{i // 2:05d}/img{i:08d}.png": png_bytes((8, 8), "RGB", seed=i) for i in (3, 0, 2, 1)}
    path = write_zip(tmp_path / "edm.zip", members)
    dataset = ImageDataset(path)
    assert (len(dataset), dataset.resolution, dataset.channels) == (4, 8, 3)
    assert dataset.labels is None and dataset.label_dim == 0
    for i, name in enumerate(sorted(members)):  # Sorted member order.
        np.testing.assert_array_equal(dataset.images[i], _pixels(members[name]).transpose(2, 0, 1))
    images, labels = dataset.get([0, 3])
    assert labels is None
    assert images.dtype == torch.float32 and images.shape == (2, 3, 8, 8)
    expected = torch.from_numpy(dataset.images[[0, 3]]).double() / 127.5 - 1
    torch.testing.assert_close(images.double(), expected)


def test_labels_one_hot_and_xflip(tmp_path):
    names = [f"00000/img{i:08d}.png" for i in range(3)]
    members = {name: png_bytes((4, 4), "L", seed=i) for i, name in enumerate(names)}
    members["dataset.json"] = json.dumps({"labels": [[names[0], 2], [names[1], 0], [names[2], 4]]}).encode()
    path = write_zip(tmp_path / "labelled.zip", members)

    dataset = ImageDataset(path, xflip=True)
    assert len(dataset) == 6 and dataset.num_images == 3 and dataset.label_dim == 5
    np.testing.assert_array_equal(dataset.labels, [2, 0, 4])
    images, onehot = dataset.get([0, 1, 2, 3, 4, 5])
    assert onehot.shape == (6, 5) and torch.equal(onehot.argmax(1), torch.tensor([2, 0, 4, 2, 0, 4]))
    assert torch.equal(onehot.sum(1), torch.ones(6))
    torch.testing.assert_close(images[3:], images[:3].flip(-1))  # Index N + i is image i mirrored.
    assert not torch.equal(images[3:], images[:3])
    assert images.min() >= -1 and images.max() <= 1

    unconditional = ImageDataset(path, use_labels=False)
    assert unconditional.label_dim == 0 and unconditional.get([0])[1] is None
    with pytest.raises(IndexError):
        dataset.get([6])


def _bad_zip(tmp_path, case):
    good = png_bytes((8, 8), "RGB")
    members = {
        "absolute path": {"/etc/img.png": good},
        "dot-dot path": {"images/../../img.png": good},
        "mixed sizes": {"a.png": good, "b.png": png_bytes((16, 16), "RGB")},
        "non-square": {"a.png": png_bytes((8, 6), "RGB")},
        "channel count": {"a.png": png_bytes((8, 8), "RGBA")},
        "mixed channels": {"a.png": good, "b.png": png_bytes((8, 8), "L")},
        "corrupt image": {"a.png": good, "b.png": good[: len(good) // 2]},
        "no images": {"readme.txt": b"hello"},
        "label missing": {"a.png": good, "b.png": good, "dataset.json": b'{"labels": [["a.png", 1]]}'},
        "label not int": {"a.png": good, "dataset.json": b'{"labels": [["a.png", 1.5]]}'},
        "label unknown file": {"a.png": good, "dataset.json": b'{"labels": [["a.png", 0], ["z.png", 1]]}'},
        "bad json": {"a.png": good, "dataset.json": b"{labels"},
    }[case]
    return write_zip(tmp_path / "bad.zip", members)


@pytest.mark.parametrize(
    "case, words",
    [
        ("absolute path", ["unsafe member path", "/etc/img.png"]),
        ("dot-dot path", ["unsafe member path", ".."]),
        ("mixed sizes", ["b.png", "mixed sizes"]),
        ("non-square", ["a.png", "8x6", "not square"]),
        ("channel count", ["a.png", "RGBA", "expected L or RGB"]),
        ("mixed channels", ["b.png", "channel"]),
        ("corrupt image", ["cannot read image b.png"]),
        ("no images", ["no images"]),
        ("label missing", ["no label for b.png"]),
        ("label not int", ["1.5", "class index"]),
        ("label unknown file", ["z.png"]),
        ("bad json", ["dataset.json is not valid"]),
    ],
)
def test_invalid_archives_fail_on_open(tmp_path, case, words):
    path = _bad_zip(tmp_path, case)
    with pytest.raises(FdmError) as err:
        ImageDataset(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_missing_truncated_and_non_zip_files(tmp_path):
    with pytest.raises(FdmError, match="dataset not found.*fdm prepare"):
        ImageDataset(tmp_path / "absent.zip")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(FdmError, match="not a readable zip"):
        ImageDataset(tmp_path / "text.zip")
    whole = write_zip(tmp_path / "whole.zip", {"a.png": png_bytes((8, 8))}, zipfile.ZIP_STORED).read_bytes()
    (tmp_path / "cut.zip").write_bytes(whole[: len(whole) - 30])
    with pytest.raises(FdmError, match="not a readable zip"):
        ImageDataset(tmp_path / "cut.zip")

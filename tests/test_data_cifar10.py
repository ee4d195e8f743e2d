"""`fdm prepare cifar10`: download with progress, MD5 check, extract and convert, against a local server."""

from __future__ import annotations

import io
import os
import pickle
import socket
import tarfile

import numpy as np
import pytest
from data_fixtures import assert_fails_cleanly, make_cifar_archive, md5_hex, run_fdm, serve

from fdm.data import ImageDataset
from fdm.data.cifar10 import FILENAME


@pytest.fixture
def archive(tmp_path):
    """A 20-image archive in CIFAR-10's python format: (bytes, images [N, 32, 32, 3], labels)."""
    path = tmp_path / "source" / FILENAME
    path.parent.mkdir()
    images, labels = make_cifar_archive(path)
    return path.read_bytes(), images, labels


def _prepare(dest, *options):
    return run_fdm("prepare", "cifar10", "--dest", dest, *options)


def test_download_checksum_extract_convert(tmp_path, archive):
    data, images, labels = archive
    dest = tmp_path / "data" / "cifar10.zip"
    with serve({"/cifar.tgz": data}) as server:
        options = ("--url", f"{server.url}/cifar.tgz", "--md5", md5_hex(data))
        result = _prepare(dest, *options)
        assert result.exit_code == 0, result.output
        assert f"20 images, 32x32, 3 channels, {labels.max() + 1} classes" in result.stdout
        assert (tmp_path / "data" / "downloads" / FILENAME).read_bytes() == data
        first = dest.read_bytes()
        # A second run finds the verified archive in the download folder and writes the same bytes.
        assert _prepare(dest, *options).exit_code == 0
        assert server.hits == ["/cifar.tgz"]
    assert dest.read_bytes() == first
    assert sorted(os.listdir(tmp_path / "data" / "downloads")) == [FILENAME]

    dataset = ImageDataset(dest)
    assert (len(dataset), dataset.resolution, dataset.channels) == (20, 32, 3)
    np.testing.assert_array_equal(dataset.images, images.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(dataset.labels, labels)


def test_checksum_mismatch_discards_download(tmp_path, archive):
    data, _, _ = archive
    dest = tmp_path / "data" / "cifar10.zip"
    with serve({"/cifar.tgz": data}) as server:
        result = _prepare(dest, "--url", f"{server.url}/cifar.tgz", "--md5", "0" * 32)
    assert_fails_cleanly(result, dest, "checksum mismatch", md5_hex(data), "0" * 32)
    downloads = tmp_path / "data" / "downloads"
    assert os.listdir(downloads) == []
    # A damaged file already in the download folder is not trusted either.
    (downloads / FILENAME).write_bytes(data[:100])
    result = _prepare(dest, "--md5", md5_hex(data))
    assert_fails_cleanly(result, dest, "checksum mismatch", str(downloads / FILENAME), "delete it")


def test_interrupted_download_leaves_nothing(tmp_path, archive):
    data, _, _ = archive
    dest = tmp_path / "data" / "cifar10.zip"
    half = data[: len(data) // 2]
    with serve({"/cifar.tgz": (half, len(data))}) as server:  # Promises the whole file, sends half.
        result = _prepare(dest, "--url", f"{server.url}/cifar.tgz", "--md5", md5_hex(data))
    assert_fails_cleanly(result, dest, "interrupted", f"{len(half)} of {len(data)} bytes")
    assert os.listdir(tmp_path / "data" / "downloads") == []


def test_offline_error_names_address_file_and_folder(tmp_path):
    with socket.socket() as probe:  # A port nobody listens on.
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/{FILENAME}"
    dest, downloads = tmp_path / "cifar10.zip", tmp_path / "cache"
    result = _prepare(dest, "--download-dir", downloads, "--url", url)
    assert_fails_cleanly(result, dest, url, FILENAME, str(downloads))
    assert os.listdir(downloads) == []


def test_source_archive_and_its_errors(tmp_path, archive):
    data, images, _ = archive
    source = tmp_path / "source" / FILENAME
    dest = tmp_path / "out" / "cifar10.zip"
    result = _prepare(dest, "--source", source, "--md5", md5_hex(data))
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(ImageDataset(dest).images, images.transpose(0, 3, 1, 2))
    dest.unlink()

    # The official checksum guards a user's archive too.
    assert_fails_cleanly(_prepare(dest, "--source", source), dest, "checksum mismatch", str(source))
    assert_fails_cleanly(
        _prepare(dest, "--source", tmp_path / "nowhere.tar.gz"), dest, "missing source", "nowhere.tar.gz"
    )
    # A truncated archive whose checksum was (wrongly) vouched for is still caught while converting.
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    result = _prepare(dest, "--source", truncated, "--md5", md5_hex(truncated.read_bytes()))
    assert_fails_cleanly(result, dest, "corrupt or truncated archive")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_batches_unpickle_only_numpy_arrays(tmp_path):
    archive = tmp_path / FILENAME
    payload = pickle.dumps({"data": _Exploit(), "labels": []}, protocol=2)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    dest = tmp_path / "cifar10.zip"
    result = _prepare(dest, "--source", archive, "--md5", md5_hex(archive.read_bytes()))
    assert_fails_cleanly(result, dest, "not a CIFAR-10 batch", "refusing to load")
    assert "pwned" not in result.output

"""`fdm prepare folder|ffhq|afhqv2`: a user's images, found recursively, to a square RGB archive."""

from __future__ import annotations

import os
import shutil

import numpy as np
import PIL.Image
import pytest
from data_fixtures import assert_fails_cleanly, png_bytes, run_fdm, write_image, write_zip

from fdm.data import ImageDataset


def _mixed_folder(root):
    """AFHQ-like tree of mixed formats and modes; returns the file list in the expected sorted order."""
    files = [
        ("cat/a.png", (64, 64), "RGB", None),
        ("cat/b.jpg", (100, 100), "L", None),
        ("cat/c.png", (80, 80), "P", None),
        ("dog/d.png", (64, 64), "L", None),
        ("dog/e.png", (96, 96), "RGBA", None),  # Fully opaque alpha is accepted.
        ("test/dog/f.jpg", (128, 96), "RGB", None),  # Not square: needs --crop center.
        ("test/wild/g.jpeg", (72, 72), "CMYK", "jpeg"),
    ]
    for i, (name, size, mode, fmt) in enumerate(files):
        write_image(root / name, size, mode, fmt, seed=i)
    (root / "notes.txt").write_text("not an image")
    return files


def test_mixed_folder_converts_to_64x64_rgb(tmp_path):
    source, dest = tmp_path / "pics", tmp_path / "out" / "pics.zip"
    files = _mixed_folder(source)
    result = run_fdm(
        "prepare",
        "folder",
        "--source",
        source,
        "--dest",
        dest,
        "--resolution",
        64,
        "--crop",
        "center",
        "--labels",
    )
    assert result.exit_code == 0, result.output
    assert "7 images, 64x64, 3 channels, 3 classes (cat, dog, wild)" in result.stdout

    dataset = ImageDataset(dest)
    assert dataset.images.shape == (7, 3, 64, 64)
    np.testing.assert_array_equal(dataset.labels, [0, 0, 0, 1, 1, 1, 2])  # cat, dog, wild by parent folder.
    # A 64x64 RGB PNG passes through untouched; a 64x64 grayscale one becomes three equal channels.
    original = np.asarray(PIL.Image.open(source / files[0][0])).transpose(2, 0, 1)
    np.testing.assert_array_equal(dataset.images[0], original)
    gray = np.asarray(PIL.Image.open(source / files[3][0]))
    assert all(np.array_equal(dataset.images[3, c], gray) for c in range(3))

    # The same tree zipped gives the same archive, byte for byte.
    zipped = shutil.make_archive(str(tmp_path / "pics"), "zip", source)
    again = tmp_path / "out" / "again.zip"
    result = run_fdm(
        "prepare",
        "folder",
        "--source",
        zipped,
        "--dest",
        again,
        "--resolution",
        64,
        "--crop",
        "center",
        "--labels",
    )
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == dest.read_bytes()


def test_presets_and_grayscale_output(tmp_path):
    source = tmp_path / "ffhq"
    for i in range(3):
        write_image(source / f"{i:05d}.png", (128, 128), "RGB", seed=i)
    dest = tmp_path / "ffhq.zip"
    result = run_fdm("prepare", "ffhq", "--source", source, "--dest", dest)
    assert result.exit_code == 0, result.output
    dataset = ImageDataset(dest)
    assert dataset.images.shape == (3, 3, 64, 64) and dataset.labels is None
    # Downsampling is PIL's Lanczos filter.
    expected = PIL.Image.open(source / "00001.png").resize((64, 64), PIL.Image.LANCZOS)
    np.testing.assert_array_equal(dataset.images[1], np.asarray(expected).transpose(2, 0, 1))

    afhq = tmp_path / "afhq"
    for i, name in enumerate(["train/cat/1.png", "train/dog/2.png", "test/cat/3.png"]):
        write_image(afhq / name, (128, 128), "RGB", seed=i)
    dest = tmp_path / "afhqv2.zip"
    assert run_fdm("prepare", "afhqv2", "--source", afhq, "--dest", dest, "--channels", 1).exit_code == 0
    dataset = ImageDataset(dest)
    assert dataset.images.shape == (3, 1, 64, 64)
    np.testing.assert_array_equal(dataset.labels, [0, 0, 1])  # test/cat, train/cat, train/dog.


def _bad_source(tmp_path, case):
    root = tmp_path / "src"
    root.mkdir()
    if case == "missing source":
        return root / "absent"
    if case == "empty folder":
        (root / "readme.txt").write_text("no images here")
    elif case == "non-square":
        write_image(root / "wide.png", (32, 16))
    elif case == "corrupt image":
        write_image(root / "a.png", (16, 16))
        (root / "b.png").write_bytes(b"this is not a png")
    elif case == "truncated image":
        write_image(root / "a.jpg", (64, 64), fmt="jpeg")
        data = (root / "a.jpg").read_bytes()
        (root / "a.jpg").write_bytes(data[: len(data) // 2])
    elif case == "unsupported mode":
        write_image(root / "deep.png", (16, 16), "I;16")
    elif case == "transparent":
        image = PIL.Image.new("RGBA", (16, 16), (255, 0, 0, 0))
        image.save(root / "clear.png")
    elif case == "mixed sizes":
        write_image(root / "a.png", (16, 16))
        write_image(root / "b.png", (32, 32))
    elif case == "unsafe zip member":
        return write_zip(
            tmp_path / "src.zip", {"ok/a.png": png_bytes((16, 16)), "../evil.png": png_bytes((16, 16))}
        )
    elif case == "corrupt zip member":
        path = write_zip(
            tmp_path / "src.zip", {"a.png": png_bytes((16, 16)), "b.png": png_bytes((16, 16))}, 0
        )
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # Flip bits inside a stored member: its CRC no longer matches.
        path.write_bytes(bytes(data))
        return path
    elif case == "labels missing":
        write_image(root / "cat" / "a.png", (16, 16))
        write_image(root / "b.png", (16, 16))
    return root


@pytest.mark.parametrize(
    "case, options, words",
    [
        ("missing source", [], ["missing source", "absent"]),
        ("empty folder", [], ["no images found"]),
        ("non-square", [], ["wide.png", "32x16", "not square", "--crop center"]),
        ("corrupt image", [], ["b.png", "cannot read image"]),
        ("truncated image", [], ["a.jpg", "cannot read image", "truncated"]),
        ("unsupported mode", [], ["deep.png", "unsupported image mode I;16"]),
        ("transparent", [], ["clear.png", "transparent"]),
        ("mixed sizes", [], ["b.png", "32x32", "mixed sizes"]),
        pytest.param("mixed sizes", ["--resolution", "48"], ["power of two", "48"], id="resolution-48"),
        ("unsafe zip member", [], ["unsafe member path", "../evil.png"]),
        ("corrupt zip member", [], ["src.zip/", "cannot read file", "CRC"]),
        ("corrupt zip member", ["--workers", "2"], ["src.zip/", "cannot read file", "CRC"]),
        ("labels missing", ["--labels"], ["labels requested", "b.png", "class folder"]),
    ],
)
def test_bad_input_fails_cleanly(tmp_path, case, options, words):
    source = _bad_source(tmp_path, case)
    dest = tmp_path / "out" / "x.zip"
    result = run_fdm("prepare", "folder", "--source", source, "--dest", dest, *options)
    assert_fails_cleanly(result, dest, *words)


def test_unwritable_output(tmp_path):
    source = tmp_path / "src"
    write_image(source / "a.png", (16, 16))
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    dest = blocker / "x.zip"
    result = run_fdm("prepare", "folder", "--source", source, "--dest", dest)
    assert_fails_cleanly(result, dest, "cannot write", str(dest))
    # An existing directory in the way of the output file.
    (tmp_path / "dir.zip").mkdir()
    result = run_fdm("prepare", "folder", "--source", source, "--dest", tmp_path / "dir.zip")
    assert result.exit_code == 2 and "is a directory" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_folder(tmp_path):
    source, out = tmp_path / "src", tmp_path / "ro"
    write_image(source / "a.png", (16, 16))
    out.mkdir()
    out.chmod(0o500)
    try:
        result = run_fdm("prepare", "folder", "--source", source, "--dest", out / "x.zip")
        assert_fails_cleanly(result, out / "x.zip", "cannot write", "Permission denied")
    finally:
        out.chmod(0o700)

"""`fdm prepare digits`: the embedded default dataset, reproducible to the byte."""

from __future__ import annotations

import numpy as np
from data_fixtures import run_fdm
from sklearn.datasets import load_digits

from fdm.data import ImageDataset


def test_digits_twice_byte_identical_and_loads(tmp_path):
    first, second = tmp_path / "a" / "digits.zip", tmp_path / "b" / "digits.zip"
    for dest in (first, second, first):  # The third run rewrites the first in place.
        result = run_fdm("prepare", "digits", "--dest", dest)
        assert result.exit_code == 0, result.output
        assert "1797 images, 16x16, 1 channel, 10 classes" in result.stdout
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in first.parent.iterdir()) == ["digits.zip"]

    dataset = ImageDataset(first)
    assert (len(dataset), dataset.resolution, dataset.channels, dataset.label_dim) == (1797, 16, 1, 10)
    assert dataset.images.dtype == np.uint8 and dataset.images.shape == (1797, 1, 16, 16)
    np.testing.assert_array_equal(dataset.labels, load_digits().target)


def test_digits_upsampling_stays_within_source_range(tmp_path):
    # Bilinear 2x upsampling: each output pixel is a convex combination of the source pixels
    # in its 3x3 neighbourhood, so it never leaves their range (Lanczos or bicubic would).
    dest = tmp_path / "digits.zip"
    assert run_fdm("prepare", "digits", "--dest", dest).exit_code == 0
    stored = ImageDataset(dest).images[:, 0].astype(int)
    source = np.round(load_digits().images * 255 / 16).astype(int)
    padded = np.pad(source, ((0, 0), (1, 1), (1, 1)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # [N, 8, 8, 3, 3]
    low = windows.min(axis=(3, 4)).repeat(2, axis=1).repeat(2, axis=2)
    high = windows.max(axis=(3, 4)).repeat(2, axis=1).repeat(2, axis=2)
    assert np.all((low <= stored) & (stored <= high))
    # And it is an upsampling of the digit, not a shifted or blurred-out copy: 2x2 block means track the source.
    blocks = stored.reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4))
    assert np.corrcoef(blocks.ravel(), source.ravel())[0, 1] > 0.95

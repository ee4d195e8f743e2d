"""Sample files and seed lists (``fdm.samples``): the uint8 quantisation, seed specs, and what is refused."""

import numpy as np
import pytest
import torch

from fdm.errors import FdmError
from fdm.samples import Samples, format_seeds, load_samples, parse_seeds, quantize, save_samples


def test_quantize_is_edm_rounding_by_truncation():
    x = torch.tensor([-1.5, -1.0, -0.997, 0.0, 0.5, 0.999, 1.0, 2.0], dtype=torch.float64).reshape(1, 1, 1, 8)
    expected = [0, 0, 0, 128, 191, 255, 255, 255]  # clip(x * 127.5 + 128, 0, 255), truncated.
    assert quantize(x).ravel().tolist() == expected
    assert quantize(x).shape == (1, 1, 8, 1)


def test_seed_lists():
    assert parse_seeds("0-3,7, 10-11") == [0, 1, 2, 3, 7, 10, 11]
    assert format_seeds(parse_seeds("0-3,7,10-11")) == "0-3,7,10-11"
    assert format_seeds(parse_seeds("0-49999")) == "0-49999"
    for bad in ("", "a-3", "5-2", "1,1", "-1"):
        with pytest.raises(FdmError):
            parse_seeds(bad)


def test_sample_files_of_wrong_dtype_or_shape_are_refused(tmp_path):
    images = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    seeds, labels = np.arange(4), np.full(4, -1)
    save_samples(tmp_path / "float.npz", Samples(images.astype(np.float32), seeds, labels))
    save_samples(tmp_path / "flat.npz", Samples(images[..., 0], seeds, labels))
    np.save(tmp_path / "chw.npy", images.transpose(0, 3, 1, 2))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    for name, fragment in [("float.npz", "uint8"), ("flat.npz", "[N, H, W, C]"), ("chw.npy", "[N, H, W, C]"),
                           ("junk.npz", "not a sample file")]:  # fmt: skip
        with pytest.raises(FdmError, match=fragment.replace("[", r"\[")):
            load_samples(tmp_path / name)
    np.save(tmp_path / "ok.npy", images)
    assert load_samples(tmp_path / "ok.npy").images.shape == (4, 8, 8, 1)  # A bare array from elsewhere.

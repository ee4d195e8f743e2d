"""Snapshots: safetensors round trip, the denoiser they rebuild, and refusing files that are not ours."""

import json
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fdm.diffusion import Denoiser, formulation
from fdm.errors import FdmError
from fdm.nets import build
from fdm.snapshot import load_denoiser, load_snapshot, save_snapshot

NETWORK = {
    "arch": "ddpmpp",
    "img_resolution": 8,
    "img_channels": 1,
    "label_dim": 3,
    "model_channels": 8,
    "channel_mult": [1, 2],
    "num_blocks": 1,
    "attn_resolutions": [4],
}


def test_round_trip_rebuilds_the_same_denoiser(tmp_path):
    torch.manual_seed(0)
    net = build(**NETWORK)
    for p in net.parameters():  # make the zero-initialised output layers non-trivial
        p.data.normal_(0, 0.05)
    f = formulation("fdm_vp", multiplier=1.0, warmup=10)
    config = {"network": NETWORK, "formulation": f.config(), "kimg": 12}
    path = tmp_path / "snap.safetensors"
    save_snapshot(path, net.state_dict(), config)
    assert [p.name for p in tmp_path.iterdir()] == ["snap.safetensors"]  # no temporary file left

    D, loaded = load_denoiser(path)
    assert loaded == config
    assert D.formulation == f and not D.training
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.eye(3)[[0, 1, 2, 0]]
    sigma = torch.tensor([0.01, 0.5, 5.0, 50.0])
    with torch.no_grad():
        torch.testing.assert_close(
            D(x, sigma, labels), Denoiser(net.eval(), f)(x, sigma, labels), rtol=0, atol=0
        )

    # Read with safetensors itself, not through load_snapshot: exactly the weights, and the config as JSON.
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["fdm_snapshot"])["config"] == config
        stored = {name: f.get_tensor(name) for name in f.keys()}
    assert stored.keys() == net.state_dict().keys()
    assert all(torch.equal(stored[name], tensor) for name, tensor in net.state_dict().items())

    # Saving the same weights twice gives the same bytes.
    save_snapshot(tmp_path / "again.safetensors", net.state_dict(), config)
    assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes()


def test_refuses_files_that_are_not_snapshots(tmp_path):
    pickled = tmp_path / "net.pkl"
    pickled.write_bytes(pickle.dumps({"ema": [1, 2, 3]}))
    with pytest.raises(FdmError, match="not an fdm snapshot"):
        load_snapshot(pickled)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(FdmError, match="not an fdm snapshot"):
        load_snapshot(foreign)
    with pytest.raises(FdmError, match="does not exist"):
        load_snapshot(tmp_path / "missing.safetensors")
    mismatched = tmp_path / "mismatched.safetensors"
    save_snapshot(mismatched, {"w": torch.zeros(2)}, {"network": NETWORK, "formulation": {"name": "edm"}})
    with pytest.raises(FdmError, match="does not match its own config"):
        load_denoiser(mismatched)

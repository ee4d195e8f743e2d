"""Unit tests of the training pieces: seeds, EMA, augmentation, per-sample streams, state files, config,
`fdm train`'s options and the loop's helpers."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import re
import shutil

import click
import numpy as np
import pytest
import torch

from fdm.diffusion import formulation
from fdm.errors import FdmError
from fdm.paths import snapshot_name
from fdm.seeding import derive_seed
from fdm.training import TrainConfig
from fdm.training.augment import AUGMENT_DIM, NUM_NORMALS, NUM_UNIFORMS, augment, draw_augment_params
from fdm.training.cli import CommaList, _option, _with_options
from fdm.training.config import setting
from fdm.training.ema import ema_beta, ema_halflife_nimg, update_ema
from fdm.training.loop import learning_rate
from fdm.training.state import STATE_FORMAT, STATE_KEYS, load_state, save_state
from fdm.training.stream import SampleStream

# ----------------------------------------------------------------------------- seeding


def test_derive_seed_is_stable_and_separates_inputs():
    # Pinned: changing the derivation would silently change every run's randomness.
    assert derive_seed(0, "sample", 0) == 8682520423603238856
    seeds = {derive_seed(s, part, k) for s in (0, 1) for part in ("sample", "order") for k in range(50)}
    assert len(seeds) == 200
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(TypeError):
        derive_seed("0")


# ----------------------------------------------------------------------------- EMA


def test_ema_beta_halves_weight_after_one_halflife():
    batch, halflife_kimg = 64, 6.4
    beta = ema_beta(batch, images_seen=10**9, halflife_kimg=halflife_kimg, rampup_ratio=0.05)
    steps = round(halflife_kimg * 1000 / batch)
    assert beta**steps == pytest.approx(0.5, rel=1e-12)
    assert beta == pytest.approx(0.5 ** (batch / 6400))


def test_ema_rampup_caps_the_halflife():
    assert ema_halflife_nimg(500, images_seen=1000, rampup_ratio=0.05) == pytest.approx(50)
    assert ema_halflife_nimg(500, images_seen=10**8, rampup_ratio=0.05) == pytest.approx(500_000)
    assert ema_halflife_nimg(500, images_seen=0, rampup_ratio=None) == pytest.approx(500_000)
    # At the start the half-life is 0 and the EMA copies the weights.
    assert ema_beta(512, 0, 500, 0.05) == 0.0
    assert ema_beta(512, 2000, 500, 0.05) == pytest.approx(0.5 ** (512 / 100))


def test_update_ema_moves_towards_weights():
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, beta=0.25)
    for old, new, target in zip(before, ema.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(new, 0.25 * old + 0.75 * target.detach())


# ----------------------------------------------------------------------------- augmentation


def _images(n=3, c=2, size=8):
    return torch.arange(n * c * size * size, dtype=torch.float32).reshape(n, c, size, size) / 100


def _no_transforms(n):
    # Uniform draws of 1 switch every transform off (gates compare u < probability).
    return torch.ones(n, NUM_UNIFORMS, dtype=torch.float64), torch.zeros(n, NUM_NORMALS, dtype=torch.float64)


def test_augment_with_p_zero_is_identity_with_zero_labels():
    images = _images()
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    draws = [draw_augment_params(g) for g in generators]
    u, z = torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws])
    out, labels = augment(images, 0.0, u, z)
    assert torch.equal(out, images)
    assert labels.shape == (3, AUGMENT_DIM) and not labels.any()


def test_augment_xflip_only():
    images = _images()
    u, z = _no_transforms(3)
    u[1, 0], u[1, 1] = 0.0, 0.0  # Sample 1: x-flip gate open, flip bit set.
    out, labels = augment(images, 0.1, u, z)
    assert torch.equal(out[1], images[1].flip(-1))
    assert torch.equal(out[0], images[0]) and torch.equal(out[2], images[2])
    assert labels[1].tolist() == [1.0] + [0.0] * 8
    assert not labels[0].any()


def test_augment_rotation_quarter_turn_is_clockwise():
    images = _images(1)
    u, z = _no_transforms(1)
    u[0, 5], u[0, 6] = 0.0, 0.75  # Rotation gate open; theta = (2 * 0.75 - 1) pi = pi / 2.
    out, labels = augment(images, 0.5, u, z)
    torch.testing.assert_close(out, torch.rot90(images, -1, dims=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(labels[0, 3:5], torch.tensor([-1.0, 1.0]), atol=1e-6, rtol=0)
    assert labels[0, :3].abs().sum() == 0 and labels[0, 5:].abs().sum() == 0


def test_augment_translation_moves_content_and_labels_it():
    images = _images(1, size=8)
    u, z = _no_transforms(1)
    u[0, 10] = 0.0  # Translation gate open.
    z[0, 2] = 1.0  # tx = 0.125 of the width: one pixel of eight, to the right.
    out, labels = augment(images, 0.5, u, z)
    torch.testing.assert_close(out[..., 1:], images[..., :-1], atol=1e-5, rtol=0)
    assert labels[0, 7].item() == pytest.approx(0.125)
    assert labels[0, 8].item() == 0


def _documented_labels(u: torch.Tensor, z: torch.Tensor, p: float) -> torch.Tensor:
    """The 9 labels of each sample from its own uniforms u and normals z, as the module docstring assigns
    them (u[0] gates the x-flip, u[1] < 1/2 is its bit, ..., z[2], z[3] the translation): a transform is
    on where its u < p, strictly, so that it is on with probability p exactly for u ~ U[0, 1)."""
    on = (u < p).double()
    theta = on[:, 5] * (2 * u[:, 6] - 1) * math.pi
    aniso, phi = on[:, 7] * 0.2 * z[:, 1], (u[:, 8] < 0.5).double() * (2 * u[:, 9] - 1) * math.pi
    return torch.stack(
        [
            (u[:, 0] < min(1.0, 1e8 * p)).double() * (u[:, 1] < 0.5).double(),
            on[:, 2] * (u[:, 3] < 0.5).double(),
            on[:, 4] * 0.2 * z[:, 0],
            theta.cos() - 1,
            theta.sin(),
            aniso * phi.cos(),
            aniso * phi.sin(),
            on[:, 10] * 0.125 * z[:, 2],
            on[:, 10] * 0.125 * z[:, 3],
        ],
        dim=1,
    )


def test_augment_labels_follow_the_documented_draw_layout():
    """The label of each sample from its own draws, as the module docstring assigns them, at p = 1/2."""
    g = torch.Generator().manual_seed(5)
    n, p = 64, 0.5
    u = torch.rand(n, NUM_UNIFORMS, generator=g, dtype=torch.float64)
    z = torch.randn(n, NUM_NORMALS, generator=g, dtype=torch.float64)
    _, labels = augment(torch.zeros(n, 1, 8, 8, dtype=torch.float64), p, u, z)
    torch.testing.assert_close(labels, _documented_labels(u, z, p), rtol=0, atol=1e-12)
    on = u < p
    assert 0 < int(on[:, 7].sum()) < n and 0 < int(on[:, 10].sum()) < n  # both branches seen


def test_augment_gates_and_bits_are_strict_on_their_thresholds():
    """torch.rand draws from [0, 1), thresholds included: a gate u = p stays shut and a bit u = 1/2 stays
    0 (so that each is on with probability p, 1/2 exactly), and p = 0 switches every transform off even
    for u = 0: the unchanged image and a zero label (module docstring)."""
    p = 0.5
    z = torch.full((3, NUM_NORMALS), 0.7, dtype=torch.float64)
    u = torch.stack(
        [
            torch.full((NUM_UNIFORMS,), p, dtype=torch.float64),  # every gate exactly at p
            torch.tensor([0.25, 0.5, 0.25, 0.5, 0.25, 0.25, 0.6, 0.25, 0.5, 0.6, 0.25], dtype=torch.float64),
            torch.zeros(NUM_UNIFORMS, dtype=torch.float64),  # every gate open, every bit set
        ]
    )
    _, labels = augment(torch.zeros(3, 1, 8, 8, dtype=torch.float64), p, u, z)
    torch.testing.assert_close(labels, _documented_labels(u, z, p), rtol=0, atol=1e-12)
    assert labels[0].abs().sum() == 0 and labels[1, :2].abs().sum() == 0 and labels[1, 6] == 0
    images = _images()
    out, labels = augment(images, 0.0, torch.zeros(3, NUM_UNIFORMS), torch.ones(3, NUM_NORMALS))
    assert torch.equal(out, images) and not labels.any()


def test_augment_refuses_draws_of_the_wrong_shape():
    images, (u, z) = _images(2), _no_transforms(2)
    message = re.escape("need uniforms [2, 11] and normals [2, 4]")
    for uniforms, normals in [(u[:, :-1], z), (torch.ones(2, 12), z), (u, z[:, :-1]), (u, torch.ones(2, 5))]:
        with pytest.raises(ValueError, match=message):
            augment(images, 0.5, uniforms, normals)


def test_augment_isotropic_scale_alone_magnifies_about_the_centre():
    """A sample whose only transform is the isotropic scale s = 2^(0.2 z) = 2 (z = 5) is resampled: output
    pixel q reads the input at q / 2 (normalised coordinates). On an image linear in the pixel indices,
    bilinear interpolation is exact, so the result is that linear function at the read positions."""
    size = 8
    images = _images(1, c=2, size=size)
    u, z = _no_transforms(1)
    u[0, 4], z[0, 0] = 0.0, 5.0
    out, labels = augment(images, 0.5, u, z)
    assert labels[0].tolist() == pytest.approx([0.0, 0.0, 1.0] + [0.0] * 6)
    centres = (2 * torch.arange(size, dtype=torch.float64) + 1) / size - 1  # pixel centres in [-1, 1]
    read = ((centres / 2 + 1) * size - 1) / 2  # the input index each output index reads
    channel = torch.arange(2, dtype=torch.float64).view(2, 1, 1) * size * size
    expected = (channel + read.view(1, -1, 1) * size + read.view(1, 1, -1)) / 100
    torch.testing.assert_close(out[0].double(), expected, atol=1e-5, rtol=0)


def test_augment_does_not_resample_images_without_a_geometric_transform():
    """Next to a translated sample, one that is only x-flipped and one with no transform come back exactly
    (the flip, the image): not resampled. At 5 x 7 pixels an identity resampling is not bit-exact."""
    images = torch.arange(3 * 2 * 5 * 7, dtype=torch.float32).reshape(3, 2, 5, 7) / 10
    u, z = _no_transforms(3)
    u[0, 0], u[0, 1] = 0.0, 0.0  # sample 0: x-flip
    u[2, 10], z[2, 2] = 0.0, 1.0  # sample 2: translation
    out, labels = augment(images, 0.5, u, z)
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])
    assert not torch.equal(out[2], images[2]) and labels[2, 7] == 0.125


def test_augment_probability_and_label_statistics():
    n = 4000
    g = torch.Generator().manual_seed(0)
    draws = [draw_augment_params(g) for _ in range(n)]
    u, z = torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws])
    _, labels = augment(torch.zeros(n, 1, 4, 4), 0.2, u, z)
    assert labels[:, 0].mean().item() == pytest.approx(0.5, abs=0.03)  # x-flip: half, whatever p > 0 is.
    assert labels[:, 1].mean().item() == pytest.approx(0.2 * 0.5, abs=0.02)
    scaled = labels[:, 2] != 0
    assert scaled.float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert labels[scaled, 2].std().item() == pytest.approx(0.2, rel=0.1)  # log2 scale ~ N(0, 0.2^2).


# ----------------------------------------------------------------------------- per-sample streams


def test_sample_draws_depend_only_on_seed_and_index():
    edm = formulation("edm")
    stream = SampleStream(7, num_items=10, formulation=edm, image_shape=(1, 4, 4), augmenting=True)
    idx_a, sigma_a, noise_a, (u_a, z_a) = stream.draw([3, 4, 5])
    idx_b, sigma_b, noise_b, (u_b, z_b) = SampleStream(7, 10, edm, (1, 4, 4), True).draw([4])
    assert idx_a[1] == idx_b[0]
    assert torch.equal(sigma_a[1:2], sigma_b) and torch.equal(noise_a[1:2], noise_b)
    assert torch.equal(u_a[1:2], u_b) and torch.equal(z_a[1:2], z_b)
    other = SampleStream(8, 10, edm, (1, 4, 4), True).draw([4])
    assert not torch.equal(other[2], noise_b)


def documented_generator(seed: int, *parts) -> torch.Generator:
    """docs/training.md's seeding, written from its text: the first 8 bytes of SHA-256 of the JSON list
    [seed, *parts], big-endian, the top 63 bits."""
    digest = hashlib.sha256(json.dumps([seed, *parts], separators=(",", ":")).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


def test_the_stream_is_the_documented_function_of_seed_and_k():
    """Sample k's sigma, noise and augmentation draws come, in that order, from the generator of
    [seed, "sample", k]; its image is position k mod N of the permutation drawn from [seed, "order", k // N]."""
    edm, num_items, ks = formulation("edm"), 4, [0, 5, 9, 2]
    indices, sigma, noise, (uniforms, normals) = SampleStream(3, num_items, edm, (1, 2, 2), True).draw(ks)
    assert uniforms.dtype == normals.dtype == torch.float64
    for row, k in enumerate(ks):
        g = documented_generator(3, "sample", k)
        assert torch.equal(sigma[row : row + 1], edm.sample_sigma(1, g))
        assert torch.equal(noise[row], torch.randn((1, 2, 2), generator=g))
        assert torch.equal(uniforms[row], torch.rand(NUM_UNIFORMS, generator=g, dtype=torch.float64))
        assert torch.equal(normals[row], torch.randn(NUM_NORMALS, generator=g, dtype=torch.float64))
        order = torch.randperm(num_items, generator=documented_generator(3, "order", k // num_items))
        assert indices[row] == order[k % num_items]
    assert SampleStream(3, num_items, edm, (1, 2, 2), augmenting=False).draw(ks)[3] is None


def test_every_sample_has_its_own_draws_in_every_epoch():
    """Sample k and sample k + N (the same image, one epoch later) get fresh sigma, noise and augmentation:
    over three epochs of five images, fifteen different draws of each, not five repeated."""
    num_items, ks = 5, list(range(15))
    stream = SampleStream(7, num_items, formulation("fdm_edm"), image_shape=(1, 4, 4), augmenting=True)
    indices, sigma, noise, (uniforms, normals) = stream.draw(ks)
    assert sorted(indices[:num_items].tolist()) == list(range(num_items))
    for draws in (sigma, noise, uniforms, normals):
        assert len({row.numpy().tobytes() for row in draws}) == len(ks)
    # Drawn one at a time, in another order: the same rows (a pure function of the seed and k).
    for k in (13, 2, 8):
        _, sigma_k, noise_k, _ = SampleStream(7, num_items, formulation("fdm_edm"), (1, 4, 4), True).draw([k])
        assert torch.equal(sigma_k[0], sigma[k]) and torch.equal(noise_k[0], noise[k])


def test_data_order_is_a_permutation_per_epoch():
    stream = SampleStream(
        0, num_items=10, formulation=formulation("edm"), image_shape=(1, 2, 2), augmenting=False
    )
    epochs = [[stream.data_index(k) for k in range(e * 10, (e + 1) * 10)] for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(10))
    assert epochs[0] != epochs[1]


def test_learning_rate_ramps_linearly():
    cfg = TrainConfig(dataset="d.zip", outdir="o", lr=2e-4, lr_rampup_kimg=10)
    assert learning_rate(cfg, 0) == 0
    assert learning_rate(cfg, 5000) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10**7) == pytest.approx(2e-4)
    assert learning_rate(TrainConfig(dataset="d.zip", outdir="o", lr_rampup_kimg=0), 8) == pytest.approx(1e-3)


# ----------------------------------------------------------------------------- state files


def _state(**extra):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    state = {
        "format": STATE_FORMAT,
        "model": net.state_dict(),
        "ema": net.state_dict(),
        "optimizer": opt.state_dict(),
        "images_seen": 64,
        "step": 8,
        "config": {"lr": 1e-3, "channel_mult": [1, 2]},
        "log_bytes": 0,
    }
    return {**state, **extra}


def test_state_round_trip(tmp_path):
    state = _state()
    save_state(tmp_path / "state.pt", state)
    loaded = load_state(tmp_path / "state.pt")
    assert loaded["images_seen"] == 64 and loaded["step"] == 8 and loaded["config"] == state["config"]
    torch.testing.assert_close(loaded["model"]["weight"], state["model"]["weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # No temporary file left behind.


def test_state_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(_state(config=argparse.Namespace(lr=1e-3)), path)
    with pytest.raises(FdmError, match="is not a plain training state"):
        load_state(path)


def test_state_that_is_not_ours_is_refused(tmp_path):
    garbage, partial = tmp_path / "garbage.pt", tmp_path / "partial.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    torch.save({"model": {}}, partial)
    for path in (garbage, partial):
        with pytest.raises(FdmError, match="is not a plain training state"):
            load_state(path)
    # An empty file (torch.load: EOFError without a message) is named by the error's type.
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(FdmError, match=r"is not a plain training state \(refusing to load it: EOFError\)$"):
        load_state(empty)


def test_a_damaged_state_is_refused_in_one_line(tmp_path):
    """Every prefix of a real state.pt, and byte flips in it, give FdmError or a valid state, never a traceback."""
    path = tmp_path / "state.pt"
    save_state(path, _state())
    data = path.read_bytes()
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"\x80")  # One byte of a pickle: torch.load raises IndexError.
    with pytest.raises(FdmError, match="is not a plain training state"):
        load_state(damaged)
    for n in range(0, len(data), max(1, len(data) // 97)):
        damaged.write_bytes(data[:n])
        with pytest.raises(FdmError, match="is not a plain training state"):
            load_state(damaged)
    rng = random.Random(0)
    for _ in range(120):
        flipped = bytearray(data)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        damaged.write_bytes(bytes(flipped))
        try:
            assert set(STATE_KEYS) <= set(load_state(damaged))
        except FdmError as err:
            assert "\n" not in str(err)


def test_a_state_missing_a_key_is_not_written(tmp_path):
    state = _state()
    del state["ema"], state["log_bytes"]
    with pytest.raises(ValueError, match="^training state lacks ema, log_bytes$"):
        save_state(tmp_path / "state.pt", state)
    assert list(tmp_path.iterdir()) == []


def test_a_milestone_is_passed_once_its_images_are_seen_and_a_stale_run_without_folders_is_discarded(
    tmp_path,
):
    from fdm.training.run_folder import discard_stale_run, passed_milestones_missing, snapshot_path

    cfg = TrainConfig(dataset="d.zip", outdir=str(tmp_path / "run"), duration_kimg=1, snapshot_kimg=[0.5])
    assert passed_milestones_missing(cfg, 499) == []
    assert passed_milestones_missing(cfg, 500) == [0.5]  # at the milestone's own image count
    snapshot_path(cfg.outdir, 0.5).parent.mkdir(parents=True)
    snapshot_path(cfg.outdir, 0.5).write_bytes(b"")
    assert passed_milestones_missing(cfg, 1000) == [1.0]
    # A state written with another lr, in a folder with neither snapshots/ nor kept/: started over.
    for folder in ("snapshots", "kept"):
        shutil.rmtree(tmp_path / "run" / folder, ignore_errors=True)
    save_state(tmp_path / "run" / "state.pt", _state(config=dataclasses.replace(cfg, lr=2e-4).to_dict()))
    assert discard_stale_run(cfg) == ["lr"]
    assert list((tmp_path / "run").iterdir()) == []


# ----------------------------------------------------------------------------- config


def test_config_round_trip_and_errors():
    cfg = TrainConfig(dataset="d.zip", outdir="o", channel_mult=[1, 2], snapshot_kimg=[20, 10, 20])
    assert cfg.snapshot_kimg == (10.0, 20.0) and cfg.channel_mult == (1, 2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.milestones_kimg()[-1] == cfg.duration_kimg
    with pytest.raises(FdmError, match="unknown training option"):
        TrainConfig.from_dict({"dataset": "d.zip", "outdir": "o", "learning_rate": 1})
    with pytest.raises(FdmError, match="batch_per_device"):
        TrainConfig(dataset="d.zip", outdir="o", batch=8, batch_per_device=16)
    changed = dataclasses.replace(cfg, outdir="elsewhere", lr=2e-4, duration_kimg=100)
    assert changed.resume_mismatch(cfg.to_dict()) == ["lr"]


@pytest.mark.parametrize(
    ("kimg", "name"),
    [(200, "000200.safetensors"), (0.064, "000000.064.safetensors"), (2.5, "000002.5.safetensors")],
)
def test_snapshot_names_sort_by_kimg(kimg, name):
    assert snapshot_name(kimg) == name


def test_snapshot_names_order():
    kimgs = [0.016, 0.5, 1, 2.5, 10, 200]
    names = [snapshot_name(k) for k in kimgs]
    assert names == sorted(names)
    assert np.unique(names).size == len(names)


def _config(**changes) -> TrainConfig:
    return TrainConfig(
        **{"dataset": "d.zip", "outdir": "o", "duration_kimg": 10, "snapshot_kimg": [10], **changes}
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"batch": 1},
        {"batch": 8, "batch_per_device": 1},
        {"batch": 8, "batch_per_device": 8},
        {"lr_rampup_kimg": 0, "ema_halflife_kimg": 0},
        {"duration_kimg": 0.5, "snapshot_kimg": [0.5]},
        {"augment_p": 0.0},
        {"augment_p": 1.0},
        {"dropout": 0.0, "label_dropout": 0.0},
        {"gpus": 0},
    ],
)
def test_config_accepts_each_end_of_every_range(changes):
    cfg = _config(**changes)
    assert all(
        getattr(cfg, key) == pytest.approx(value) for key, value in changes.items() if key != "snapshot_kimg"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch": 0}, "batch must be positive, got 0"),
        ({"batch": 8, "batch_per_device": 0}, "batch_per_device must be in [1, batch], got 0"),
        ({"lr": 0.0}, "lr must be positive, got 0.0"),
        ({"lr_rampup_kimg": -1}, "lr_rampup_kimg must be >= 0"),
        ({"ema_halflife_kimg": -1}, "ema_halflife_kimg must be >= 0"),
        ({"ema_rampup_ratio": 0}, "ema_rampup_ratio must be > 0 or None"),
        ({"duration_kimg": 0, "snapshot_kimg": []}, "duration_kimg must be positive, got 0"),
        ({"snapshot_kimg": [0]}, "snapshot_kimg must lie in (0, duration]"),
        ({"snapshot_kimg": [10.5]}, "snapshot_kimg must lie in (0, duration]"),
        ({"tick_kimg": 0}, "tick_kimg and state_every_kimg must be positive"),
        ({"state_every_kimg": 0}, "tick_kimg and state_every_kimg must be positive"),
        ({"augment_p": 1.5}, "augment_p must be in [0, 1], got 1.5"),
        ({"augment_p": -0.1}, "augment_p must be in [0, 1], got -0.1"),
        ({"dropout": 1.0}, "dropout and label_dropout must be in [0, 1)"),
        ({"label_dropout": 1.0}, "dropout and label_dropout must be in [0, 1)"),
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda, got 'tpu'"),
        ({"precision": "fp8"}, "precision must be one of fp32, bf16, fp16, got 'fp8'"),
        ({"loss_scaling": 0.0}, "loss_scaling must be positive"),
        ({"threads": 0}, "threads must be positive, got 0"),
        ({"gpus": -1}, "gpus must be >= 0, got -1"),
        ({"seed": True}, "seed must be an integer"),
    ],
)
def test_config_refuses_just_past_every_end_with_its_own_message(changes, message):
    with pytest.raises(FdmError, match=f"^training config: {re.escape(message)}$"):
        _config(**changes)


def test_config_from_dict_names_what_is_missing_and_model_settings_keep_the_model():
    with pytest.raises(FdmError, match="^training config lacks dataset, outdir$"):
        TrainConfig.from_dict({})
    with pytest.raises(FdmError, match="^training config lacks outdir$"):
        TrainConfig.from_dict({"dataset": "d.zip"})
    with pytest.raises(FdmError, match="^training config: "):
        TrainConfig.from_dict({"dataset": "d.zip", "outdir": "o", "channel_mult": 3})
    valid = ", ".join(sorted(f.name for f in dataclasses.fields(TrainConfig)))
    with pytest.raises(
        FdmError, match=f"^unknown training option\\(s\\) epochs, learning_rate; valid: {valid}$"
    ):
        TrainConfig.from_dict({"dataset": "d.zip", "outdir": "o", "learning_rate": 1, "epochs": 2})
    settings = _config(lr=2e-4).model_settings()
    assert settings["lr"] == 2e-4 and settings["formulation"] == "edm" and settings["snapshot_kimg"] == [10.0]
    assert "dataset" not in settings and "outdir" not in settings and "gpus" not in settings


def test_every_setting_is_an_option_of_fdm_train_with_its_help_and_type(tmp_path):
    from fdm.training.cli import train_command

    options = {name: param for param in train_command.params for name in param.opts + param.secondary_opts}
    for field in dataclasses.fields(TrainConfig):
        option = field.metadata["option"]
        if option == "":
            continue
        flags = option.split("/") if option else [f"--{field.name.replace('_', '-')}"]
        if field.type == "bool" and len(flags) == 1:
            flags.append(f"--no-{flags[0][2:]}")
        for flag in flags:
            assert options[flag].name == field.name and options[flag].help == field.metadata["help"], flag

    def parse(*args):
        return train_command.make_context("train", list(args), resilient_parsing=False).params

    folder, file = tmp_path / "run", tmp_path / "d.zip"
    folder.mkdir()
    file.write_bytes(b"")
    params = parse(
        "--data",
        str(file),
        "--outdir",
        str(folder),
        "--snapshot-kimg",
        "10,20,",
        "--channel-mult",
        "1,2",
        "--batch",
        "8",
        "--lr",
        "2e-4",
        "--no-tf32",
        "--nondeterministic",
        "--formulation",
        "rf",
    )
    assert params["snapshot_kimg"] == [10.0, 20.0] and params["channel_mult"] == [1, 2]
    assert isinstance(params["channel_mult"][0], int) and params["batch"] == 8 and params["lr"] == 2e-4
    assert params["tf32"] is False and params["deterministic"] is False and params["formulation"] == "rf"
    assert params["dataset"] == str(file) and params["outdir"] == str(folder) and params["cond"] is None
    for args, message in [
        (["--snapshot-kimg", "10,x"], "expected comma-separated numbers, got '10,x'"),
        (["--data", str(folder)], "is a directory"),
        (["--outdir", str(file)], "is a file"),
        (["--batch", "8.5"], "is not a valid integer"),
        (["--formulation", "nope"], "is not one of"),
    ]:
        with pytest.raises(click.BadParameter, match=re.escape(message)):
            parse(*args)


def test_a_run_other_training_code_wrote_is_discarded_naming_both_sources(tmp_path):
    """discard_stale_run's reason names the saved run's source digest and the current one (12 hex digits
    each, as `git log --oneline` shortens a commit), and the run folder is emptied."""
    from fdm.provenance import source_digest
    from fdm.training.run_folder import discard_stale_run

    cfg = TrainConfig(dataset="d.zip", outdir=str(tmp_path / "run"))
    save_state(
        tmp_path / "run" / "state.pt", _state(config=cfg.to_dict(), code=[{"source_sha256": "ab" * 32}])
    )
    assert discard_stale_run(cfg) == [f"training code (source abababababab -> {source_digest('train')[:12]})"]
    assert list((tmp_path / "run").iterdir()) == []


# ----------------------------------------------------------------------------- loop helpers


def test_tf32_is_allowed_exactly_when_asked_for():
    from fdm.training.numerics import configure_numerics

    def tf32_allowed() -> tuple[bool, bool]:
        matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
        if hasattr(matmul, "fp32_precision"):  # PyTorch >= 2.9
            return matmul.fp32_precision == "tf32", cudnn.conv.fp32_precision == "tf32"
        return matmul.allow_tf32, cudnn.allow_tf32

    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        configure_numerics(deterministic, tf32=True)
        assert tf32_allowed() == (True, True)
        configure_numerics(deterministic, tf32=False)
        assert tf32_allowed() == (False, False)
    finally:
        configure_numerics(deterministic, tf32=False)


def test_precision_picks_the_autocast_dtype():
    """fp32: no autocast; bf16 and fp16: autocast to bfloat16 and float16 (here on the CPU)."""
    from fdm.training.loop import _autocast

    cpu = torch.device("cpu")
    with _autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with _autocast(cpu, precision):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == dtype, precision
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype


def test_peak_memory_is_in_gib_of_cuda_allocations_or_of_the_resident_set(monkeypatch):
    from pathlib import Path

    from fdm.training.loop import peak_memory_gb

    status = Path("/proc/self/status")
    if status.exists():  # Linux: the peak resident set size, VmHWM, in kB
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        assert peak_memory_gb(torch.device("cpu")) == pytest.approx(int(line.split()[1]) / 2**20, rel=0.05)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    assert peak_memory_gb(torch.device("cuda", 0)) == 3.0


def test_the_network_gets_labels_only_when_conditional_and_the_augment_label_only_when_augmenting():
    from types import SimpleNamespace

    from fdm.training.loop import network_config

    dataset = SimpleNamespace(resolution=16, channels=3, label_dim=10)
    conditional = network_config(TrainConfig(dataset="d.zip", outdir="o", cond=True), dataset)
    assert conditional["label_dim"] == 10 and conditional["augment_dim"] == 0
    assert conditional["img_resolution"] == 16 and conditional["img_channels"] == 3
    augmenting = network_config(TrainConfig(dataset="d.zip", outdir="o", augment_p=0.1), dataset)
    assert augmenting["label_dim"] == 0 and augmenting["augment_dim"] == AUGMENT_DIM


def test_the_weights_a_state_or_snapshot_is_made_of_are_a_copy_not_the_live_tensors():
    from fdm.training.loop import _state_dict_cpu

    net = torch.nn.Linear(2, 2)
    copied = _state_dict_cpu(net)
    before = {name: tensor.clone() for name, tensor in copied.items()}
    with torch.no_grad():
        net.weight.add_(1.0)  # training goes on
    assert all(torch.equal(copied[name], before[name]) for name in before)


# ----------------------------------------------------------------------------- `fdm train`'s options
# One per TrainConfig field, made from the field's type and its ``setting`` metadata (help, option name,
# choices), so that each setting is described once (fdm.training.cli). Built here at test time, by the
# same functions that built `fdm train`'s at import, from the fields as they are and from fresh ones.


def _fresh_train_options() -> click.Command:
    return _with_options(click.command("train")(lambda **options: options))


def _flags(field: dataclasses.Field) -> list[str]:
    """The documented names: ``option`` where given (``--a/--b`` a flag pair), else ``--<field-name>``
    with dashes; a boolean without a pair of its own gets ``--no-<name>``."""
    option = field.metadata["option"]
    flags = option.split("/") if option else [f"--{field.name.replace('_', '-')}"]
    if field.type == "bool" and len(flags) == 1:
        flags.append(f"--no-{flags[0][2:]}")
    return flags


def test_every_setting_is_an_option_named_typed_and_described_as_its_field_says(tmp_path):
    command = _fresh_train_options()
    params = {param.name: param for param in command.params}
    fields = [f for f in dataclasses.fields(TrainConfig) if f.metadata["option"] != ""]
    assert sorted(params) == sorted(f.name for f in fields)  # formulation/network_options: JSON only
    for field in fields:
        param, kind = params[field.name], field.type.removesuffix(" | None")
        assert param.opts + param.secondary_opts == _flags(field), field.name
        assert param.help == field.metadata["help"] and param.help, field.name
        if kind == "bool":
            assert param.is_flag and isinstance(param.type, click.types.BoolParamType), field.name
        elif kind.startswith("tuple["):
            element = int if kind.startswith("tuple[int") else float
            assert isinstance(param.type, CommaList) and param.type.kind is element, field.name
        elif field.metadata["choices"]:
            assert isinstance(param.type, click.Choice), field.name
            assert list(param.type.choices) == list(field.metadata["choices"]), field.name
        elif field.name in ("dataset", "outdir"):  # a dataset is a file, a run folder a folder
            assert isinstance(param.type, click.Path), field.name
            assert param.type.file_okay is (field.name == "dataset"), field.name
            assert param.type.dir_okay is (field.name == "outdir"), field.name
        else:
            expected = {"int": click.INT, "float": click.FLOAT, "str": click.STRING}[kind]
            assert param.type == expected, field.name

    # An option not given is None, booleans included: the config file's value (or the default) stands.
    given = command.make_context("train", [], resilient_parsing=False).params
    assert given == {field.name: None for field in fields}
    folder = tmp_path / "run"
    folder.mkdir()
    given = command.make_context(
        "train",
        ["--outdir", str(folder), "--channel-mult", "1,2,2", "--snapshot-kimg", "5,10"]
        + ["--cond", "--no-tf32", "--precision", "bf16", "--batch-per-device", "4"],
    ).params
    assert given["channel_mult"] == [1, 2, 2] and all(type(v) is int for v in given["channel_mult"])
    assert given["snapshot_kimg"] == [5.0, 10.0] and all(type(v) is float for v in given["snapshot_kimg"])
    assert given["cond"] is True and given["tf32"] is False and given["precision"] == "bf16"
    assert given["batch_per_device"] == 4 and given["outdir"] == str(folder)


def _probe_class():
    """A dataclass of fields made by ``setting`` now (not at import), one of each kind of option."""

    @dataclasses.dataclass(frozen=True)
    class Probe:
        count: int = setting("How many.", 3)
        rate: float | None = setting("How fast.", None, option="--speed")
        mode: str = setting("Which one.", "a", choices=("a", "b"))
        sizes: tuple[float, ...] = setting("Sizes, e.g. 1,2.", (1.0,))
        loud: bool = setting("Shout.", False)
        extra: dict = setting("JSON only.", factory=dict, option="")

    return Probe


def test_a_setting_carries_its_default_help_option_and_choices_into_its_option():
    probe_class = _probe_class()
    fields = {f.name: f for f in dataclasses.fields(probe_class)}
    assert dict(fields["count"].metadata) == {"help": "How many.", "option": None, "choices": None}
    assert dict(fields["mode"].metadata) == {"help": "Which one.", "option": None, "choices": ("a", "b")}
    assert dict(fields["extra"].metadata) == {"help": "JSON only.", "option": "", "choices": None}
    assert probe_class() == probe_class(count=3, rate=None, mode="a", sizes=(1.0,), loud=False, extra={})

    probe = click.command("probe")(lambda **options: options)
    for field in reversed([f for f in dataclasses.fields(probe_class) if f.metadata["option"] != ""]):
        probe = _option(field, field.type)(probe)  # as `fdm train` makes each of its options
    params = {param.name: param for param in probe.params}
    assert sorted(params) == ["count", "loud", "mode", "rate", "sizes"]
    assert params["rate"].opts == ["--speed"] and params["rate"].type == click.FLOAT
    assert params["loud"].opts + params["loud"].secondary_opts == ["--loud", "--no-loud"]
    assert {name: param.help for name, param in params.items()} == {
        name: fields[name].metadata["help"] for name in params
    }
    parsed = probe.make_context("probe", ["--count", "4", "--mode", "b", "--sizes", "0.5,2"]).params
    assert parsed == {"count": 4, "rate": None, "mode": "b", "sizes": [0.5, 2.0], "loud": None}
    with pytest.raises(click.BadParameter, match="is not one of"):
        probe.make_context("probe", ["--mode", "c"])


def test_the_record_is_the_same_file_for_the_same_settings_however_they_were_spelled(tmp_path, monkeypatch):
    """trained.json is a function of the run (settings, snapshots, code), not of the order in which its
    settings were spelled: `fdm train` merges `--formulation-option` over the config file's
    ``formulation_options``, so equal settings can arrive in either order. The record is the pipeline's
    declared output and part of the tracking digest (docs/tracking.md), so it must be byte-identical, as a
    snapshot's metadata is. The loop itself is stubbed: only the record's writing is under test."""
    from fdm.training import loop
    from fdm.training.run_folder import snapshot_path

    code = {
        "stage": "train",
        "package": "0.1.0",
        "commit": "c" * 40,
        "dirty": False,
        "source_sha256": "d" * 64,
    }

    class FinishedRun:  # a run whose snapshots exist, as a completed TrainingRun leaves them
        def __init__(self, cfg, world):
            self.cfg, self.code = cfg, [code]

        def run(self):
            for kimg in self.cfg.milestones_kimg():
                path = snapshot_path(self.cfg.outdir, kimg)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f"snapshot at {kimg}".encode())

    monkeypatch.setattr(loop, "TrainingRun", FinishedRun)
    monkeypatch.setattr(loop, "configure_numerics", lambda deterministic, tf32: None)
    outdir = str(tmp_path / "run")
    spelled = [
        {"multiplier": 1.5, "cin": "scale", "P_mean": -1.0},
        {"P_mean": -1.0, "cin": "scale", "multiplier": 1.5},
    ]
    records = []
    for i, options in enumerate(spelled):
        cfg = _config(
            outdir=outdir, formulation="fdm_edm", formulation_options=options, snapshot_kimg=[5, 10]
        )
        record = tmp_path / f"trained{i}.json"
        loop.train(cfg, record=record)
        records.append(record.read_bytes())
    assert _config(formulation_options=spelled[0]) == _config(formulation_options=spelled[1])
    assert records[0] == records[1]
    written = json.loads(records[0])
    assert written["settings"]["formulation_options"] == spelled[0] and written["code"] == code

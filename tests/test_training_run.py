"""End-to-end training runs on a tiny network and 8x8 data: determinism, resume, NaN stop, refusals,
and the equivalence of one process, gradient accumulation and two processes (gloo)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fdm.data.archive import Item, write_archive
from fdm.diffusion import formulation
from fdm.errors import FdmError
from fdm.seeding import derive_seed
from fdm.snapshot import load_snapshot
from fdm.training import TrainConfig, snapshot_path, train
from fdm.training.state import load_state

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """32 labelled 8x8 grayscale images: a bright square at one of four heights, plus noise."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(32):
        pixels = rng.integers(0, 30, (8, 8, 1), dtype=np.uint8)
        row = i % 4
        pixels[row : row + 4, 2:6] = 230
        items.append(Item(f"image {i}", pixels, label=row))
    path = tmp_path_factory.mktemp("data") / "tiny.zip"
    write_archive(path, items)
    return path


def tiny_config(data: Path, outdir: Path, **changes) -> TrainConfig:
    """FDM-EDM with its warmup cap active all along, dropout, augmentation and labels: every state matters."""
    values = dict(
        dataset=str(data),
        outdir=str(outdir),
        formulation="fdm_edm",
        formulation_options={"warmup": 40},
        model_channels=8,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(4,),
        dropout=0.1,
        augment_p=0.3,
        cond=True,
        batch=8,
        lr=2e-3,
        lr_rampup_kimg=0.02,
        ema_halflife_kimg=0.02,
        duration_kimg=0.16,
        snapshot_kimg=(0.08,),
        tick_kimg=0.016,
        state_every_kimg=0.016,
        seed=3,
        device="cpu",
        threads=1,
        progress=False,
    )
    values.update(changes)
    return TrainConfig(**values)


def snapshot_bytes(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "snapshots").iterdir())}


def write_config(cfg: TrainConfig, path: Path) -> Path:
    path.write_text(json.dumps(cfg.to_dict()))
    return path


@pytest.fixture(scope="module")
def reference_run(tiny_data, tmp_path_factory) -> Path:
    """One uninterrupted run that the other tests compare against."""
    return train(tiny_config(tiny_data, tmp_path_factory.mktemp("reference")))


def test_run_writes_snapshots_state_and_log(reference_run, tiny_data):
    names = list(snapshot_bytes(reference_run))
    assert names == ["000000.08.safetensors", "000000.16.safetensors"]
    state_dict, config = load_snapshot(reference_run / "snapshots" / names[-1])
    assert config["kimg"] == 0.16 and config["images_seen"] == 160 and config["step"] == 20
    assert config["formulation"]["name"] == "fdm_edm" and config["network"]["augment_dim"] == 9
    assert config["network"]["label_dim"] == 4  # cond: the four heights of the square
    assert config["dataset"] == {
        "path": str(tiny_data), "num_images": 32, "resolution": 8, "channels": 1, "label_dim": 4
    }  # fmt: skip
    assert all(torch.isfinite(t).all() for t in state_dict.values())
    state = load_state(reference_run / "state.pt")
    assert state["images_seen"] == 160 and state["step"] == 20
    ticks = [json.loads(line) for line in (reference_run / "train.jsonl").read_text().splitlines()]
    assert [t["kimg"] for t in ticks] == pytest.approx([0.016 * i for i in range(1, 11)])
    assert {"loss", "images_per_s", "lr", "peak_memory_gb", "step"} <= set(ticks[0])
    assert all(math.isfinite(t["loss"]) and t["loss"] > 0 for t in ticks)


def test_two_fresh_runs_are_byte_identical(reference_run, tiny_data, tmp_path):
    again = train(tiny_config(tiny_data, tmp_path / "again"))
    assert snapshot_bytes(again) == snapshot_bytes(reference_run)


def test_a_different_seed_gives_different_weights(reference_run, tiny_data, tmp_path):
    other = train(tiny_config(tiny_data, tmp_path / "other", seed=4, duration_kimg=0.08, snapshot_kimg=()))
    mine, _ = load_snapshot(snapshot_path(reference_run, 0.08))
    theirs, _ = load_snapshot(snapshot_path(other, 0.08))
    assert any(not torch.equal(mine[k], theirs[k]) for k in mine)


def test_snapshots_hold_the_ema_weights_not_the_raw_network(reference_run):
    """The final snapshot and the final state.pt are written at the same step: the snapshot's tensors are
    the state's EMA, which by then has moved away from the raw network's weights."""
    state = load_state(reference_run / "state.pt")
    weights, config = load_snapshot(snapshot_path(reference_run, 0.16))
    assert config["step"] == state["step"] == 20
    assert weights.keys() == state["ema"].keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, state["ema"][name]), name
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in weights)


def test_the_ema_follows_its_closed_form_step_by_step(tiny_data, tmp_path):
    """Without ramp-up the EMA decay is beta = 0.5^(B / h) at every step (EDM sec. 5): after a step the
    snapshot holds beta * ema_before + (1 - beta) * weights_after, from the states written around it."""
    run_dir = tmp_path / "ema"
    cfg = dict(ema_rampup_ratio=None, lr_rampup_kimg=0, snapshot_kimg=(), state_every_kimg=1.0)
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.008, **cfg))
    before = load_state(run_dir / "state.pt")["ema"]
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.016, **cfg))
    after = load_state(run_dir / "state.pt")["model"]
    weights, _ = load_snapshot(snapshot_path(run_dir, 0.016))
    beta = 0.5 ** (8 / 20)  # batch 8, half-life 0.02 kimg
    for name, tensor in weights.items():
        if tensor.is_floating_point() and name in after:
            expected = beta * before[name].double() + (1 - beta) * after[name].double()
            torch.testing.assert_close(tensor.double(), expected, rtol=1e-6, atol=1e-7, msg=name)
    assert any(not torch.allclose(weights[k], after[k], rtol=1e-4, atol=1e-6) for k in weights)


@pytest.mark.parametrize(("batch", "batch_per_device"), [(8, None), (4, 2)])
def test_the_fdm_loss_weight_cap_is_indexed_by_optimizer_steps(
    tiny_data, tmp_path, monkeypatch, batch, batch_per_device
):
    """The step handed to the formulation's loss weight over a 4-step run is 0, 1, 2, 3 whatever the batch
    and the accumulation rounds (never images seen: 0, 8, 16, 24 would end a 40-step warm-up early)."""
    fdm = type(formulation("fdm_edm"))
    original = fdm.loss_weight
    steps = []

    def recording(self, sigma, step=None):
        steps.append(step)
        return original(self, sigma, step=step)

    monkeypatch.setattr(fdm, "loss_weight", recording)
    cfg = tiny_config(
        tiny_data, tmp_path / "steps", batch=batch, batch_per_device=batch_per_device,
        duration_kimg=4 * batch / 1000, snapshot_kimg=(),
    )  # fmt: skip
    train(cfg)
    assert steps and sorted(set(steps)) == [0, 1, 2, 3] and steps == sorted(steps)


def test_resume_extends_a_run_bitwise_and_keeps_the_warmup_step(reference_run, tiny_data, tmp_path):
    """...and cuts train.jsonl back to its length when the state was written (a line after it: the tick
    of a process killed before its next state)."""
    run_dir = tmp_path / "extended"
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.08, snapshot_kimg=()))
    assert load_state(run_dir / "state.pt")["step"] == 10  # The FDM cap (warmup 40) is still growing.
    with open(run_dir / "train.jsonl", "a") as log:
        log.write('{"kimg": 0.088, "step": 11}\n')
    train(tiny_config(tiny_data, run_dir))
    final = "000000.16.safetensors"
    assert snapshot_bytes(run_dir)[final] == snapshot_bytes(reference_run)[final]
    assert load_state(run_dir / "state.pt")["step"] == 20
    kimgs = [json.loads(line)["kimg"] for line in (run_dir / "train.jsonl").read_text().splitlines()]
    assert kimgs == pytest.approx([0.016 * i for i in range(1, 11)])


def test_resume_with_different_settings_is_refused(reference_run, tiny_data):
    with pytest.raises(
        FdmError, match=r"holds a run with different settings \(lr, seed\); use another --outdir"
    ):
        train(tiny_config(tiny_data, reference_run, lr=1e-3, seed=4, duration_kimg=0.32))


def test_restart_on_change_starts_over_like_a_fresh_run(reference_run, tiny_data, tmp_path, capsys):
    run_dir = tmp_path / "edited"
    train(tiny_config(tiny_data, run_dir, lr=1e-3, seed=4, duration_kimg=0.08, snapshot_kimg=()))
    capsys.readouterr()
    train(tiny_config(tiny_data, run_dir), restart_on_change=True)
    assert f"{run_dir}: settings changed (lr, seed); training from scratch\n" in capsys.readouterr().err
    assert snapshot_bytes(run_dir) == snapshot_bytes(reference_run)
    kimgs = [json.loads(line)["kimg"] for line in (run_dir / "train.jsonl").read_text().splitlines()]
    assert kimgs == pytest.approx([0.016 * i for i in range(1, 11)])


def test_restart_on_change_still_resumes_a_run_with_the_same_settings(reference_run, tiny_data, tmp_path):
    run_dir = tmp_path / "continued"
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.08, snapshot_kimg=()))
    train(tiny_config(tiny_data, run_dir), restart_on_change=True)
    final = "000000.16.safetensors"
    assert snapshot_bytes(run_dir)[final] == snapshot_bytes(reference_run)[final]
    assert load_state(run_dir / "state.pt")["step"] == 20


def test_a_milestone_added_behind_the_state_restarts_and_reproduces_every_snapshot(
    reference_run, tiny_data, tmp_path
):
    """snapshot_kimg gains a milestone the run is already past: --restart-on-change trains from scratch and
    writes the same snapshots as a run that had it from the start (the pipeline's edit of a profile);
    without it, resuming is refused in one line."""
    run_dir = tmp_path / "late"
    train(tiny_config(tiny_data, run_dir, snapshot_kimg=()))
    with pytest.raises(
        FdmError, match=r"no snapshot at 0.08 kimg, which the saved state \(0.16 kimg\) is past"
    ):
        train(tiny_config(tiny_data, run_dir))
    train(tiny_config(tiny_data, run_dir), restart_on_change=True)
    assert snapshot_bytes(run_dir) == snapshot_bytes(reference_run)


def test_a_rerun_restores_the_snapshots_a_workflow_deleted_and_resumes(
    reference_run, tiny_data, tmp_path, capsys
):
    """The workflows declare snapshots/ as the training job's output and delete it before rerunning a
    killed job (DVC caches and pushes it): the rerun puts the snapshots back from kept/ (hard links) and
    resumes from state.pt, to the uninterrupted run's bytes, instead of training from scratch."""
    run_dir = tmp_path / "run"
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.096, snapshot_kimg=(0.08,)))
    assert sorted(p.name for p in (run_dir / "kept").iterdir()) == [
        "000000.08.safetensors",
        "000000.096.safetensors",
    ]
    assert os.path.samefile(run_dir / "kept" / "000000.08.safetensors", snapshot_path(run_dir, 0.08))
    first = (run_dir / "kept" / "000000.08.safetensors").read_bytes()
    shutil.rmtree(run_dir / "snapshots")
    capsys.readouterr()
    train(tiny_config(tiny_data, run_dir), restart_on_change=True)
    err = capsys.readouterr().err
    assert "restored 2 snapshot(s) from kept/" in err and "resuming at 0.096 kimg" in err, err
    assert load_state(run_dir / "state.pt")["step"] == 20
    final = "000000.16.safetensors"
    assert snapshot_bytes(run_dir)[final] == snapshot_bytes(reference_run)[final]
    assert snapshot_path(run_dir, 0.08).read_bytes() == first  # put back, not made again


def test_record_lists_every_snapshot_digest_once_training_is_complete(
    reference_run, tiny_data, tmp_path, capsys
):
    record = tmp_path / "trained.json"
    run_dir = train(tiny_config(tiny_data, tmp_path / "recorded"), record=record)
    digests = json.loads(record.read_text())["snapshots"]
    assert list(digests) == ["000000.08.safetensors", "000000.16.safetensors"]
    for name, digest in digests.items():
        assert digest == hashlib.sha256((run_dir / "snapshots" / name).read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".trained.json.*"))
    # A rerun of a complete run says so, trains nothing and leaves the state as it was.
    state = (run_dir / "state.pt").read_bytes()
    capsys.readouterr()
    train(tiny_config(tiny_data, run_dir))
    assert capsys.readouterr().err.splitlines()[-1] == f"{run_dir}: training already complete (0.16 kimg)"
    assert (run_dir / "state.pt").read_bytes() == state


def test_the_record_names_the_settings_and_the_code_that_trained_the_run(tiny_data, tmp_path):
    from fdm.provenance import code_version

    record = tmp_path / "trained.json"
    cfg = tiny_config(tiny_data, tmp_path / "run", duration_kimg=0.016, snapshot_kimg=())
    train(cfg, record=record)
    written = json.loads(record.read_text())
    assert written["settings"] == json.loads(json.dumps(cfg.model_settings()))
    assert written["code"] == code_version("train") and "code_history" not in written
    assert load_state(tmp_path / "run" / "state.pt")["code"] == [code_version("train")]


def _as_if_other_code_wrote(state_path: Path) -> None:
    state = load_state(state_path)
    state["code"] = [{**state["code"][-1], "source_sha256": "0" * 64, "commit": "an older one"}]
    torch.save(state, state_path)


def test_a_run_other_training_code_started_is_started_over_by_the_pipeline(
    reference_run, tiny_data, tmp_path
):
    """The pipeline reruns a training job when the training code changed (fdm.provenance); its
    --restart-on-change then trains from scratch, as for changed settings, instead of finishing the old
    code's run. By hand (no flag) the run continues, says so, and its record names both versions."""
    run_dir = tmp_path / "run"
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.08, snapshot_kimg=()))
    _as_if_other_code_wrote(run_dir / "state.pt")
    train(tiny_config(tiny_data, run_dir), restart_on_change=True, record=tmp_path / "trained.json")
    assert snapshot_bytes(run_dir) == snapshot_bytes(reference_run)
    assert "code_history" not in json.loads((tmp_path / "trained.json").read_text())

    by_hand = tmp_path / "by_hand"
    train(tiny_config(tiny_data, by_hand, duration_kimg=0.08, snapshot_kimg=()))
    _as_if_other_code_wrote(by_hand / "state.pt")
    train(tiny_config(tiny_data, by_hand), record=tmp_path / "by_hand.json")
    history = json.loads((tmp_path / "by_hand.json").read_text())["code_history"]
    assert [c["source_sha256"][:4] for c in history][0] == "0000" and len(history) == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only); skipped where none can be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here (needs root); the faked OSError case runs in test_atomic.py")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_keeps_the_last_state_and_the_rerun_resumes_bit_for_bit(
    reference_run, tiny_data, small_disk, tmp_path
):
    """`fdm train` into a 3 MB file system: it fills while writing a state.pt; the error is one line naming
    the file, the previous state.pt is intact and no temporary file is left; once space is freed, the
    rerun resumes and ends with the uninterrupted run's snapshots."""
    run_dir = small_disk / "run"
    config = write_config(tiny_config(tiny_data, run_dir), tmp_path / "train.json")
    # Room for the first state.pt and a second one beside it (written, then renamed over it), but not once
    # the first snapshot is there too.
    state = (reference_run / "state.pt").stat().st_size
    snapshot = (reference_run / "snapshots" / "000000.08.safetensors").stat().st_size
    disk = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (disk.f_bavail * disk.f_frsize - (2 * state + snapshot // 2)))
    fdm = str(Path(sys.executable).parent / "fdm")
    result = subprocess.run(
        [fdm, "train", "--config", str(config)], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line == f"fdm: error: {run_dir / 'state.pt'}: no space left on device", result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert 0 < load_state(run_dir / "state.pt")["images_seen"] < 160  # the last good state, intact
    filler.unlink()
    rerun = subprocess.run(
        [fdm, "train", "--config", str(config)], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming at" in rerun.stderr
    assert snapshot_bytes(run_dir) == snapshot_bytes(reference_run)


def _count_lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_sigkill_at_two_points_then_resume_is_byte_identical(reference_run, tiny_data, tmp_path):
    run_dir = tmp_path / "killed"
    config = write_config(tiny_config(tiny_data, run_dir), tmp_path / "config.json")
    command = [sys.executable, "-m", "fdm.training.cli", "--config", str(config)]
    log = run_dir / "train.jsonl"
    for ticks_before_kill in (2, 6):  # Kill after tick 2 of 10 (4 steps), then after tick 6.
        with open(tmp_path / "stderr.txt", "wb") as stderr:
            process = subprocess.Popen(command, env=ENV, stderr=stderr)
            while process.poll() is None and _count_lines(log) < ticks_before_kill:
                time.sleep(0.01)
        assert process.poll() is None, f"the run ended early: {(tmp_path / 'stderr.txt').read_text()[-500:]}"
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        assert 0 < load_state(run_dir / "state.pt")["images_seen"] < 160
    subprocess.run(command, env=ENV, check=True, stderr=subprocess.DEVNULL)
    assert snapshot_bytes(run_dir) == snapshot_bytes(reference_run)
    assert not [p for p in run_dir.rglob("*.tmp")]
    kimgs = [json.loads(line)["kimg"] for line in log.read_text().splitlines()]
    assert kimgs == pytest.approx([0.016 * i for i in range(1, 11)])


def _relative_difference(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over all weights together.

    Not per tensor: Adam divides by the gradient's magnitude, so a gradient that is zero in exact
    arithmetic (attention key biases: softmax ignores a shift of all keys) turns rounding noise into
    full-size steps of those few weights, whatever the summation order.
    """
    difference = sum((a[k].double() - b[k].double()).square().sum() for k in a)
    return float((difference / sum(a[k].double().square().sum() for k in a)).sqrt())


@pytest.mark.slow
def test_one_process_accumulation_and_two_processes_agree(tiny_data, tmp_path):
    # Dropout draws from the global generator per micro-batch, so equality needs dropout 0 (see docs).
    base = tiny_config(tiny_data, tmp_path / "single", dropout=0.0, duration_kimg=0.064, snapshot_kimg=())
    single = train(base)
    accumulated = train(dataclasses.replace(base, outdir=str(tmp_path / "accumulated"), batch_per_device=4))
    two = dataclasses.replace(base, outdir=str(tmp_path / "two"), batch_per_device=4)
    # `fdm train --gpus 2` starts itself under torchrun (here two CPU processes, gloo).
    fdm = Path(sys.executable).with_name("fdm")
    command = [fdm, "train", "--config", write_config(two, tmp_path / "two.json"), "--gpus", "2"]
    result = subprocess.run([str(c) for c in command], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fdm: starting 2 processes under torchrun" in result.stderr

    reference, _ = load_snapshot(snapshot_path(single, 0.064))
    for run_dir in (accumulated, Path(two.outdir)):
        other, config = load_snapshot(snapshot_path(run_dir, 0.064))
        assert config["step"] == 8
        assert _relative_difference(reference, other) < 1e-5
    # Summation order does differ, so this is not a byte comparison in disguise.
    other, _ = load_snapshot(snapshot_path(accumulated, 0.064))
    assert any(not torch.equal(reference[k], other[k]) for k in reference)


def test_nan_loss_stops_and_keeps_the_last_good_state(tiny_data, tmp_path):
    # A learning rate of 1e30 blows the weights up after the first (lr = 0) step.
    cfg = tiny_config(
        tiny_data,
        tmp_path / "nan",
        batch=4,
        lr=1e30,
        lr_rampup_kimg=0,
        duration_kimg=0.04,
        snapshot_kimg=(0.004,),
        state_every_kimg=1.0,
        tick_kimg=0.004,
    )
    with pytest.raises(FdmError, match=r"loss is (nan|inf) at 0.008 kimg \(optimizer step 2\)"):
        train(cfg)
    state = load_state(tmp_path / "nan" / "state.pt")
    assert state["images_seen"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert list(snapshot_bytes(tmp_path / "nan")) == ["000000.004.safetensors"]
    assert not [p for p in (tmp_path / "nan").rglob("*.tmp")]


def test_pickled_state_is_refused_on_resume(tiny_data, tmp_path):
    run_dir = tmp_path / "pickled"
    run_dir.mkdir()
    torch.save({"model": argparse.Namespace(weight=torch.zeros(1))}, run_dir / "state.pt")
    with pytest.raises(FdmError, match="is not a plain training state"):
        train(tiny_config(tiny_data, run_dir))


def _first_step(cfg: TrainConfig) -> tuple[float, set, set]:
    """A run's first optimizer step from generic weights (at initialisation the network's output is
    scaled by 1e-5, too little to move a float32 loss): its loss, the autocast dtypes in force inside
    the network's forward pass (None: autocast off), and the dtypes of the network's outputs."""
    from fdm.distributed import processes
    from fdm.training.loop import TrainingRun

    inside, outputs = set(), set()

    def before(module, args):
        inside.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)

    def after(module, args, output):
        outputs.add(output.dtype)

    with processes("cpu") as world:
        run = TrainingRun(cfg, world)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in run.net.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=generator))
        run.net.register_forward_pre_hook(before)
        run.net.register_forward_hook(after)
        return run.optimizer_step(), inside, outputs


def test_bf16_autocast_trains_on_the_cpu(tiny_data, tmp_path):
    """bf16 is entered around the forward pass (the network computes in bfloat16) and changes the loss's
    bits against fp32 on the same draws and weights; the weights it writes stay float32 and finite."""
    cfg = tiny_config(tiny_data, tmp_path / "bf16", precision="bf16", duration_kimg=0.016, snapshot_kimg=())
    bf16_loss, inside, outputs = _first_step(cfg)
    assert inside == {torch.bfloat16} and outputs == {torch.bfloat16}
    fp32_loss, inside, outputs = _first_step(dataclasses.replace(cfg, precision="fp32"))
    assert inside == {None} and outputs == {torch.float32}
    assert math.isfinite(bf16_loss) and bf16_loss != fp32_loss
    assert bf16_loss == pytest.approx(fp32_loss, rel=0.05)  # the same quantity, rounded differently
    run_dir = train(cfg)
    state_dict, _ = load_snapshot(snapshot_path(run_dir, 0.016))
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in state_dict.values())


def test_cli_trains_from_a_config_file_with_overrides(tiny_data, tmp_path):
    from fdm.cli import main

    cfg = tiny_config(tiny_data, tmp_path / "cli", duration_kimg=0.016, snapshot_kimg=())
    config = write_config(cfg, tmp_path / "cfg.json")
    result = CliRunner().invoke(
        main,
        ["train", "--config", str(config), "--snapshot-kimg", "0.008"]
        + ["--formulation-option", "multiplier=1.5", "--formulation-option", "P_std=1.4"],
    )
    assert result.exit_code == 0, result.output
    _, snap = load_snapshot(snapshot_path(tmp_path / "cli", 0.008))
    assert snap["formulation"]["multiplier"] == 1.5 and snap["formulation"]["warmup"] == 40
    assert snap["formulation"]["P_std"] == 1.4


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("P_meen=-1", "unknown option P_meen for formulation 'fdm_edm'; valid: P_mean, P_std, cin, "),
        ("multiplier=two", "formulation option multiplier: 'two' is not a float"),
        ("warmup", "formulation option 'warmup' is not KEY=VALUE"),
    ],
)
def test_cli_formulation_options_are_checked_in_one_line(tiny_data, tmp_path, option, message):
    from fdm.cli import main

    cfg = tiny_config(tiny_data, tmp_path / "cli", duration_kimg=0.016, snapshot_kimg=())
    config = write_config(cfg, tmp_path / "cfg.json")
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--formulation-option", option])
    assert result.exit_code == 2 and result.output.startswith(f"fdm: error: --formulation-option: {message}")
    assert result.output.count("\n") == 1 and not (tmp_path / "cli").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"P_meen": -1.0},
            "formulation: unknown option(s) P_meen for formulation 'fdm_edm'; valid: P_mean, ",
        ),
        ({"warmup": -1}, "formulation: FDM warmup must be a non-negative number of steps, got -1\n"),
        ({"cin": "multiply"}, "formulation: FDM cin must be one of replace, scale, got 'multiply'\n"),
    ],
)
def test_bad_formulation_options_from_a_profile_fail_in_one_line_before_any_output(
    tiny_data, tmp_path, options, message
):
    """What a profile's formulation_options give a train job (its train.json) is checked when training
    builds the formulation: one line, exit 2, no run folder."""
    from fdm.cli import main

    cfg = tiny_config(tiny_data, tmp_path / "run", duration_kimg=0.016, snapshot_kimg=())
    values = {
        **cfg.to_dict(),
        "formulation_options": {**cfg.formulation_options, **options},
        "progress": False,
    }
    config = tmp_path / "train.json"
    config.write_text(json.dumps(values))
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 2 and result.output.startswith(f"fdm: error: {message}"), result.output
    assert result.output.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_asking_for_cuda_without_it_is_a_clear_error(tiny_data, tmp_path):
    from fdm.cli import main

    result = CliRunner().invoke(
        main, ["train", "--data", str(tiny_data), "--outdir", str(tmp_path), "--device", "cuda"]
    )
    assert result.exit_code == 2
    assert "fdm: error:" in result.output and "CUDA" in result.output


def test_cli_rejects_bad_values(tiny_data, tmp_path):
    from fdm.cli import main

    args = ["train", "--data", str(tiny_data), "--outdir", str(tmp_path / "x")]
    result = CliRunner().invoke(main, [*args, "--channel-mult", "1,two"])
    assert result.exit_code == 2 and "comma-separated numbers" in result.output
    result = CliRunner().invoke(main, [*args, "--batch", "8", "--batch-per-device", "3", "--device", "cpu"])
    assert result.exit_code == 2 and "not a multiple" in result.output
    assert not (tmp_path / "x" / "state.pt").exists()


def test_a_ticks_loss_is_the_mean_of_its_steps_losses(tiny_data, tmp_path):
    """train.jsonl: with a tick every optimizer step the log holds each step's loss; with a tick every two
    steps, of the same run (same seed, same draws), the mean of each pair. Each record also carries the
    run's wall-clock start, no later than its own time, and a positive throughput."""
    every = train(
        tiny_config(tiny_data, tmp_path / "every", duration_kimg=0.032, tick_kimg=0.008, snapshot_kimg=())
    )
    pairs = train(
        tiny_config(tiny_data, tmp_path / "pairs", duration_kimg=0.032, tick_kimg=0.016, snapshot_kimg=())
    )

    def records(run_dir):
        return [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]

    steps, ticks = records(every), records(pairs)
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["step"] for r in ticks] == [2, 4]
    assert [r["kimg"] for r in ticks] == [0.016, 0.032]
    expected = [(steps[0]["loss"] + steps[1]["loss"]) / 2, (steps[2]["loss"] + steps[3]["loss"]) / 2]
    assert [r["loss"] for r in ticks] == pytest.approx(expected, rel=1e-12)
    for r in steps + ticks:
        assert r["started"] <= r["time"] and r["images_per_s"] > 0


def test_resume_checks_the_saved_run_and_says_what_it_continues(reference_run, tiny_data, tmp_path, capsys):
    """TrainingRun.resume on copies of the reference run's state.pt (0.16 kimg), to go on to 0.32 kimg:
    the same code resumes silently; a state without a code record (written before runs kept one)
    resumes as this code's; other code's run resumes with a warning and both versions in its record;
    milestones the state is past without their snapshots are refused, all of them named in one line."""
    from fdm.distributed import processes
    from fdm.provenance import code_version
    from fdm.training.loop import TrainingRun

    current = code_version("train")
    other = {**current, "source_sha256": "0" * 64, "commit": "an older one"}

    def resumed(name, edit=lambda state: None, **changes) -> TrainingRun:
        state = load_state(reference_run / "state.pt")
        edit(state)
        (tmp_path / name).mkdir()
        torch.save(state, tmp_path / name / "state.pt")
        cfg = tiny_config(
            tiny_data, tmp_path / name, **{"duration_kimg": 0.32, "snapshot_kimg": (), **changes}
        )
        run = TrainingRun(cfg, world)
        assert run.resume() and (run.images_seen, run.step) == (160, 20)
        return run

    with processes("cpu") as world:
        capsys.readouterr()
        assert resumed("same").code == [current]
        assert resumed("unrecorded", lambda state: state.pop("code")).code == [current]
        assert "warning" not in capsys.readouterr().err
        assert resumed("other", lambda state: state.update(code=[other])).code == [other, current]
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"{tmp_path / 'other'}: warning: resuming a run that other training code started; its record "
            "will list both versions"
        )
        with pytest.raises(
            FdmError, match=r"no snapshot at 0.04, 0.08 kimg, which the saved state \(0.16 kimg\) is past"
        ):
            resumed("milestones", snapshot_kimg=(0.04, 0.08))


def test_the_loop_writes_states_on_schedule_and_reports_ticks_and_progress(tiny_data, tmp_path, monkeypatch):
    """Two steps of 8 images with a tick and a state every 8 images, then resumed for two more:
    - state.pt is written at every multiple of state_every_kimg, fresh and resumed (8, 16 | 24, 32), each
      between the fault points `train:before_state` and `train:after_state` (names FDM_FAULT accepts);
    - a tick's loss is the mean per-sample loss of its step; its images_per_s is its images over its
      duration, so the ticks' durations add up to no more than the run's span in the log (time - started);
    - the progress bar counts images (SI prefixes) up to the duration, says "training" or "resumed";
    - the tracker's tags name the code that trains."""
    import fdm.tracking
    from fdm.faults import POINTS
    from fdm.provenance import code_version
    from fdm.training import loop

    events, losses, bars, shown, tags = [], [], [], [], []
    save_state, optimizer_step = loop.TrainingRun.save_state, loop.TrainingRun.optimizer_step

    def recording_save_state(self):
        events.append(("state", self.images_seen))
        save_state(self)

    def recording_step(self):
        losses.append(optimizer_step(self))
        return losses[-1]

    class Bar(loop.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)
            shown.append(not self.disable)

    class Tracker(fdm.tracking.Tracker):
        def __init__(self, *args, **kwargs):
            tags.append(kwargs["tags"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loop.TrainingRun, "save_state", recording_save_state)
    monkeypatch.setattr(loop.TrainingRun, "optimizer_step", recording_step)
    monkeypatch.setattr(loop, "fault_point", lambda name, where: events.append((name, str(where))))
    monkeypatch.setattr(loop, "tqdm", Bar)
    monkeypatch.setattr(fdm.tracking, "Tracker", Tracker)
    run_dir = tmp_path / "run"
    schedule = dict(tick_kimg=0.008, state_every_kimg=0.008, snapshot_kimg=(), progress=True)
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.016, **schedule))
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.032, **schedule))

    where = str(run_dir)
    assert events == [
        event
        for images in (8, 16, 24, 32)
        for event in (("train:before_state", where), ("state", images), ("train:after_state", where))
    ]
    assert {name for name, _ in events if name != "state"} <= set(POINTS)
    records = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in records] == [0.008, 0.016, 0.024, 0.032]
    assert [r["loss"] for r in records] == pytest.approx([loss / 8 for loss in losses], rel=1e-12)
    for started in {r["started"] for r in records}:
        ticks = [r for r in records if r["started"] == started]
        assert sum(8 / r["images_per_s"] for r in ticks) <= ticks[-1]["time"] - started + 1e-3, ticks
    assert [(bar.desc, bar.total, bar.n) for bar in bars] == [("training", 16, 16), ("resumed", 32, 32)]
    assert all(bar.unit == "img" and bar.unit_scale is True for bar in bars) and shown == [True, True]
    source = code_version("train")
    assert [(t["fdm.source_sha256"], t["mlflow.source.git.commit"]) for t in tags] == [
        (source["source_sha256"], str(source["commit"]))
    ] * 2


def test_one_optimizer_step_follows_the_documented_recipe(tiny_data, tmp_path, monkeypatch):
    """One step of batch 8 in eight micro-batches of 1 (docs/training.md, "Randomness, determinism and
    processes"; fdm.training.loop's docstring):
    - the network is initialised after seeding the global generator with derive_seed(seed, "init");
    - each micro-batch's dropout masks come after reseeding it with derive_seed(seed, "dropout", k), k the
      micro-batch's first sample, and the network gets the class labels of its images (cond);
    - the step's loss is the sum over micro-batches of their per-sample losses, accumulated in float64;
    - NaN, +inf and -inf in a gradient become 0, 1e5 and -1e5, and a parameter without a gradient gets
      zeros (here one frozen), whatever the process count."""
    from fdm.distributed import processes
    from fdm.nets import build
    from fdm.training import loop

    calls = []
    per_sample_loss = loop.per_sample_loss

    def recording(denoiser, formulation, y, sigma, noise, class_labels, augment_labels, step):
        seed = torch.initial_seed()
        losses = per_sample_loss(denoiser, formulation, y, sigma, noise, class_labels, augment_labels, step)
        calls.append((seed, class_labels, losses.detach().clone()))
        return losses

    monkeypatch.setattr(loop, "per_sample_loss", recording)
    cfg = tiny_config(tiny_data, tmp_path / "step", batch_per_device=1)
    with processes("cpu") as world:
        run = loop.TrainingRun(cfg, world)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    initial = build(**run.net_config).state_dict()
    assert all(torch.equal(initial[k], v) for k, v in run.net.state_dict().items())

    params = list(run.net.parameters())
    for p, value in zip(params[:3], (math.nan, math.inf, -math.inf), strict=True):
        p.register_hook(lambda grad, value=value: torch.full_like(grad, value))
    frozen = params[3].requires_grad_(False)
    loss = run.optimizer_step()

    assert [seed for seed, _, _ in calls] == [derive_seed(cfg.seed, "dropout", k) for k in range(8)]
    for k, (_, class_labels, _) in enumerate(calls):
        indices = run.stream.draw([k])[0]
        assert torch.equal(class_labels, run.dataset.get(indices)[1]), k
    total = 0.0  # float64, micro-batch by micro-batch
    for _, _, losses in calls:
        total += float(losses.sum())
    assert loss == total and loss != float(torch.tensor(total, dtype=torch.float32))
    for p, value in zip(params[:4], (0.0, 1e5, -1e5, 0.0), strict=True):
        assert torch.equal(p.grad, torch.full_like(p, value)), value
    assert frozen.grad is not None and not frozen.requires_grad


def test_with_several_processes_the_step_takes_its_loss_and_gradients_from_the_one_all_reduce(
    tiny_data, tmp_path, monkeypatch
):
    """Rank 0 of 2, the all-reduce stood in for: each parameter's gradient comes back from its slice of the
    one reduced buffer (parameters in order, then the loss), and the step returns the reduced loss."""
    from fdm.distributed import World
    from fdm.training import loop

    reduced = []

    def all_reduce_sum(flat, world):
        assert world.size == 2
        flat.copy_(torch.arange(flat.numel(), dtype=flat.dtype) / flat.numel())  # the sum, as it were
        reduced.append(flat.clone())
        return flat

    monkeypatch.setattr(loop, "all_reduce_sum", all_reduce_sum)
    run = loop.TrainingRun(tiny_config(tiny_data, tmp_path / "rank0"), World(0, 2, torch.device("cpu")))
    assert (run.per_device, run.rounds) == (4, 1)
    loss = run.optimizer_step()
    (flat,) = reduced
    assert loss == float(flat[-1]) and run.images_seen == 8
    assert torch.equal(torch.cat([p.grad.flatten() for p in run.net.parameters()]), flat[:-1])


def test_only_rank_0_touches_the_run_folder_before_the_processes_meet(tiny_data, tmp_path, monkeypatch):
    """Under torchrun every process calls train(); RANK 1 restores no snapshot from kept/ (rank 0 does,
    before `join` lets the others go on)."""
    from fdm.training import loop

    class Met(Exception):
        pass

    def join(device):
        raise Met

    monkeypatch.setattr(loop, "join", join)
    run_dir = tmp_path / "run"
    (run_dir / "kept").mkdir(parents=True)
    (run_dir / "kept" / "000000.08.safetensors").write_bytes(b"a snapshot")
    for rank, restored in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(Met):
            train(tiny_config(tiny_data, run_dir), restart_on_change=True)
        assert snapshot_path(run_dir, 0.08).is_file() == restored, rank

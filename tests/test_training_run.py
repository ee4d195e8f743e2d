"""End-to-end training runs on a tiny network and 8x8 data: determinism, resume, NaN stop, refusals,
and the equivalence of one process, gradient accumulation and two processes (gloo)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
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
from fdm.errors import FdmError
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


def test_run_writes_snapshots_state_and_log(reference_run):
    names = list(snapshot_bytes(reference_run))
    assert names == ["000000.08.safetensors", "000000.16.safetensors"]
    state_dict, config = load_snapshot(reference_run / "snapshots" / names[-1])
    assert config["kimg"] == 0.16 and config["images_seen"] == 160 and config["step"] == 20
    assert config["formulation"]["name"] == "fdm_edm" and config["network"]["augment_dim"] == 9
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


def test_resume_extends_a_run_bitwise_and_keeps_the_warmup_step(reference_run, tiny_data, tmp_path):
    run_dir = tmp_path / "extended"
    train(tiny_config(tiny_data, run_dir, duration_kimg=0.08, snapshot_kimg=()))
    assert load_state(run_dir / "state.pt")["step"] == 10  # The FDM cap (warmup 40) is still growing.
    train(tiny_config(tiny_data, run_dir))
    final = "000000.16.safetensors"
    assert snapshot_bytes(run_dir)[final] == snapshot_bytes(reference_run)[final]
    assert load_state(run_dir / "state.pt")["step"] == 20
    kimgs = [json.loads(line)["kimg"] for line in (run_dir / "train.jsonl").read_text().splitlines()]
    assert kimgs == pytest.approx([0.016 * i for i in range(1, 11)])


def test_resume_with_different_settings_is_refused(reference_run, tiny_data):
    with pytest.raises(FdmError, match="different settings.*lr"):
        train(tiny_config(tiny_data, reference_run, lr=1e-3, duration_kimg=0.32))


def test_restart_on_change_starts_over_like_a_fresh_run(reference_run, tiny_data, tmp_path):
    run_dir = tmp_path / "edited"
    train(tiny_config(tiny_data, run_dir, lr=1e-3, duration_kimg=0.08, snapshot_kimg=()))
    train(tiny_config(tiny_data, run_dir), restart_on_change=True)
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


def test_record_lists_every_snapshot_digest_once_training_is_complete(reference_run, tiny_data, tmp_path):
    record = tmp_path / "trained.json"
    run_dir = train(tiny_config(tiny_data, tmp_path / "recorded"), record=record)
    digests = json.loads(record.read_text())["snapshots"]
    assert list(digests) == ["000000.08.safetensors", "000000.16.safetensors"]
    for name, digest in digests.items():
        assert digest == hashlib.sha256((run_dir / "snapshots" / name).read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".trained.json.*"))


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


def test_bf16_autocast_trains_on_the_cpu(tiny_data, tmp_path):
    run_dir = train(
        tiny_config(tiny_data, tmp_path / "bf16", precision="bf16", duration_kimg=0.016, snapshot_kimg=())
    )
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

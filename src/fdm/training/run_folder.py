"""The run folder of ``fdm train``: what it holds, and whether a saved run in it can continue.

A run folder (``fdm.paths.RUN``) holds ``snapshots/<kimg>.safetensors`` (one per milestone),
``state.pt`` (the resume state, ``fdm.training.state``), ``train.jsonl`` (one line per tick) and, once
training is complete, ``trained.json`` (``snapshot_record``). The workflows declare the record and the
snapshots folder as the job's outputs (so that DVC caches and pushes the snapshots), and may delete
them before a rerun; ``state.pt`` and ``kept/``, a hard link of every snapshot, are not declared, so a
killed job's rerun restores the snapshots from ``kept/`` (``restore_kept``) and resumes from state.pt. The record names the code that trained the
run (``fdm.provenance.code_version``); a saved run that other training code started is started over by
the pipeline (``--restart-on-change``), as one with other settings is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fdm import paths
from fdm.digest import file_sha256
from fdm.provenance import source_digest
from fdm.training.config import TrainConfig
from fdm.training.state import load_state

SNAPSHOT_DIR, KEPT_DIR, STATE_FILE, LOG_FILE = (
    paths.SNAPSHOT_DIR,
    paths.KEPT_DIR,
    paths.STATE_FILE,
    paths.LOG_FILE,
)


def snapshot_path(run_dir, kimg: float) -> Path:
    """Where ``fdm train`` writes the snapshot of milestone ``kimg`` in ``run_dir`` (``fdm.paths.snapshot``)."""
    return Path(paths.snapshot(str(run_dir), kimg))


def keep(snapshot: Path) -> None:
    """Hard-link a written snapshot into the run's ``kept/`` (a copy where the file system cannot link)."""
    kept = snapshot.parent.parent / KEPT_DIR / snapshot.name
    kept.parent.mkdir(exist_ok=True)
    kept.unlink(missing_ok=True)
    try:
        os.link(snapshot, kept)
    except OSError:
        shutil.copyfile(snapshot, kept)


def restore_kept(run_dir) -> list[str]:
    """Put back the snapshots a workflow deleted from ``snapshots/`` (its declared output) while ``kept/``
    still holds them; returns their names."""
    kept = Path(run_dir) / KEPT_DIR
    restored = []
    for source in sorted(kept.glob("*.safetensors")):
        target = Path(run_dir) / SNAPSHOT_DIR / source.name
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            os.link(source, target)
            restored.append(source.name)
    return restored


def passed_milestones_missing(cfg: TrainConfig, images_seen: int) -> list[float]:
    """Milestones at or before ``images_seen`` whose snapshot file is not in the run folder (e.g. added to
    ``snapshot_kimg`` after training went past them)."""
    return [
        kimg
        for kimg in cfg.milestones_kimg()
        if kimg * 1000 <= images_seen and not snapshot_path(cfg.outdir, kimg).is_file()
    ]


def discard_stale_run(cfg: TrainConfig) -> list[str]:
    """Delete the run in ``cfg.outdir`` if it cannot continue as ``cfg`` asks; returns why.

    A pipeline reruns a training job both after a kill (same settings: resume) and after its settings
    were edited: it starts over where the saved state.pt was written with other settings (settings that
    may change on resume, ``RESUMABLE_CHANGES`` such as a longer ``duration_kimg``, do not count), or
    where a snapshot milestone was added that the state is already past, or where other training code
    wrote it (``fdm.provenance``: the pipeline reruns a training job when its code changes). On the CPU
    the new run reproduces the old snapshots bit for bit.
    """
    run_dir = Path(cfg.outdir)
    state_path = run_dir / STATE_FILE
    if not state_path.is_file():
        return []
    state = load_state(state_path)
    missing = passed_milestones_missing(cfg, int(state["images_seen"]))
    reasons = cfg.resume_mismatch(state["config"])
    code = state.get("code") or [{}]
    if code[-1].get("source_sha256") not in (None, source_digest("train")):
        reasons.append(
            f"training code (source {code[-1]['source_sha256'][:12]} -> {source_digest('train')[:12]})"
        )
    if missing:
        reasons.append(f"snapshot_kimg ({', '.join(f'{m:g}' for m in missing)} kimg already passed)")
    if reasons:
        shutil.rmtree(run_dir / SNAPSHOT_DIR, ignore_errors=True)
        shutil.rmtree(run_dir / KEPT_DIR, ignore_errors=True)
        (run_dir / LOG_FILE).unlink(missing_ok=True)
        state_path.unlink()
    return reasons


def snapshot_record(cfg: TrainConfig, code: list[dict]) -> dict:
    """A finished run's record: the file name and SHA-256 of the snapshot of every milestone (by name),
    the settings that describe the model (``TrainConfig.model_settings``) and the code that trained it (``code``: every version, oldest first; ``code_history`` only when a run
    was resumed by hand across a code change)."""
    run_dir = Path(cfg.outdir)
    record = {
        "run": str(run_dir),
        "snapshots": {
            paths.snapshot_name(kimg): file_sha256(snapshot_path(run_dir, kimg))
            for kimg in cfg.milestones_kimg()
        },
        "settings": cfg.model_settings(),
        "code": code[-1],
    }
    if len(code) > 1:
        record["code_history"] = code
    return record

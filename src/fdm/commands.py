"""The `fdm` stage commands: name -> where its click command lives, and its one-line summary.

Commands are imported only when invoked, so `fdm prepare` does not pay for torch or clean-fid and
every Snakemake or DVC job starts quickly; `fdm --help` lists the summaries below without importing
any stage (tests/test_cli.py checks that each summary is its command's first help line).
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    target: str  # "module:attribute" of the click command
    summary: str  # the first line of its help


COMMANDS: dict[str, Command] = {
    "prepare": Command(
        "fdm.data.cli:prepare", "Convert a dataset to a zip of PNGs plus dataset.json (EDM's format)."
    ),
    "train": Command(
        "fdm.training.cli:train_command",
        "Train one model (or resume it from OUTDIR/state.pt); snapshots go to OUTDIR/snapshots/.",
    ),
    "fetch-inception": Command(
        "fdm.metrics.cli:fetch_inception_command",
        "Download clean-fid's TorchScript Inception (the only stage that downloads), size-checked.",
    ),
    "featnet": Command(
        "fdm.metrics.cli:featnet_command",
        "Train the digits feature network on the CPU; write it only if its held-out accuracy is high enough.",
    ),
    "ref-stats": Command(
        "fdm.metrics.cli:ref_stats_command",
        "Reference statistics of a whole prepared dataset (no flips), for FID and KID.",
    ),
    "fid": Command(
        "fdm.metrics.cli:fid_command",
        "FID and KID of a sample file against reference statistics, into metrics.json.",
    ),
    "sample": Command(
        "fdm.generation.cli:sample_command",
        "Generate images of a snapshot, one per seed, into one uint8 .npz file.",
    ),
    "evaluate": Command(
        "fdm.generation.cli:evaluate_command",
        "Sample once and score in every feature space of the --stats files: FID and KID into metrics.json.",
    ),
    "report": Command(
        "fdm.report.cli:report",
        "Tables and plots (curves, paired comparisons, the claims, speedups) from every evaluation under RUNS.",
    ),
    "compare": Command(
        "fdm.report.compare:compare_command",
        "Two variants of a report paired by training seed (VARIANT less OTHER), from its PER_SEED csv.",
    ),
    "import-checkpoint": Command(
        "fdm.checkpoints.cli:import_checkpoint_command",
        "Convert an EDM or FDM training pickle (its EMA network) into a snapshot, running none of its code.",
    ),
    "train-config": Command(
        "fdm.jobs.cli:train_config_command",
        "Write the resolved training settings of one job, for `fdm train --config`.",
    ),
    "prepare-dataset": Command(
        "fdm.jobs.cli:prepare_dataset_command",
        "Prepare a dataset of the profile with the `fdm prepare` preset its entry names (source, raw, size).",
    ),
    "eval-config": Command(
        "fdm.jobs.cli:eval_config_command",
        "Write the evaluation plan of one snapshot milestone (points, seeds, scoring), for `fdm evaluate --config`.",
    ),
    "feature-net": Command(
        "fdm.jobs.cli:feature_net_command",
        "Make a feature extractor's network: train the digits network, or download Inception's weights.",
    ),
    "code-digest": Command(
        "fdm.jobs.cli:code_digest_command",
        "Write the digest of a stage's source code, which the stage's jobs depend on (rerun when it changes).",
    ),
    "track": Command(
        "fdm.tracking.cli:track_command",
        "Log every model, evaluation and report under RUNS and REPORTS to MLflow, idempotently.",
    ),
}

"""The `fdm` stage commands: name -> "module:attribute" of its click command.

Commands are imported only when invoked, so `fdm prepare` does not pay for torch or clean-fid
and every Snakemake or DVC job starts quickly.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "prepare": "fdm.data.cli:prepare",
    "train": "fdm.training.cli:train_command",
    "fetch-inception": "fdm.metrics.cli:fetch_inception_command",
    "featnet": "fdm.metrics.cli:featnet_command",
    "ref-stats": "fdm.metrics.cli:ref_stats_command",
    "fid": "fdm.metrics.cli:fid_command",
    "sample": "fdm.generate:sample_command",
    "evaluate": "fdm.generate:evaluate_command",
    "report": "fdm.report:report",
    "train-config": "fdm.jobs:train_config_command",
    "prepare-dataset": "fdm.jobs:prepare_dataset_command",
    "grid": "fdm.jobs:grid_command",
    "track": "fdm.track_cli:track_command",
}

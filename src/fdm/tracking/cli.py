"""`fdm track`: log the pipeline's files to MLflow (``fdm.tracking.sync``) and write the marker JSON."""

from __future__ import annotations

import json
import os

import click

from fdm.atomic import atomic_write_text


def write_json(path: str | os.PathLike, record: dict) -> None:
    """Write ``record`` to ``path`` atomically."""
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


@click.command("track")
@click.option(
    "--params", "params_path", default="params.yaml", show_default=True, type=click.Path(dir_okay=False)
)
@click.option(
    "--runs", default="runs", show_default=True, type=click.Path(file_okay=False), help="Run folders."
)
@click.option(
    "--reports",
    default="reports",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Report folders.",
)
@click.option(
    "--dest",
    default="mlflow_runs.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Marker JSON to write: run ids, or logged: false and the reason.",
)
def track_command(params_path: str, runs: str, reports: str, dest: str) -> None:
    """Log every model, evaluation and report under RUNS and REPORTS to MLflow, idempotently.

    The store is MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here. Runs whose files did not change
    are kept; changed ones are replaced. If MLflow cannot be reached, prints one warning, writes the
    marker with "logged": false and exits 0; run it again later to log everything.

    \b
    fdm track --params params.yaml --runs runs --reports reports --dest mlflow_runs.json
    """
    from fdm.config import load_params
    from fdm.tracking import sync

    record = sync(load_params(params_path), runs, reports)
    write_json(dest, record)
    if record["logged"]:
        counts = record["runs"]
        click.echo(
            f"{record['tracking_uri']}: {counts['logged']} runs logged, {counts['replaced']} replaced, "
            f"{counts['unchanged']} unchanged; wrote {dest}"
        )
    else:
        click.echo(f"nothing logged ({record['reason']}); wrote {dest}")

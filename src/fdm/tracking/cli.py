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
    "--runs", type=click.Path(file_okay=False), help="Run folders [default: out/<profile name>/runs]."
)
@click.option(
    "--reports",
    type=click.Path(file_okay=False),
    help="Report folders [default: out/<profile name>/reports].",
)
@click.option(
    "--dest",
    type=click.Path(dir_okay=False),
    help="Marker JSON to write: run ids, or logged: false and the reason [default: out/<profile name>/mlflow_runs.json].",
)
def track_command(params_path: str, runs: str | None, reports: str | None, dest: str | None) -> None:
    """Log every model, evaluation and report under RUNS and REPORTS to MLflow, idempotently.

    The store is MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here. Runs whose files did not change
    are kept; changed ones are replaced. If MLflow cannot be reached, prints one warning, writes the
    marker with "logged": false and exits 0; run it again later to log everything.

    \b
    fdm track --params params.yaml --runs out/smoke/runs --reports out/smoke/reports --dest out/smoke/mlflow_runs.json
    """
    from fdm import paths
    from fdm.jobs import open_profile
    from fdm.tracking import sync

    params = open_profile(params_path)
    runs, reports = runs or paths.runs(params.name), reports or paths.reports(params.name)
    dest = dest or paths.tracked(params.name)
    record = sync(params, runs, reports)
    write_json(dest, record)
    if record["logged"]:
        counts = record["runs"]
        click.echo(
            f"{record['tracking_uri']}: {counts['logged']} runs logged, {counts['replaced']} replaced, "
            f"{counts['unchanged']} unchanged; wrote {dest}"
        )
    else:
        click.echo(f"nothing logged ({record['reason']}); wrote {dest}")

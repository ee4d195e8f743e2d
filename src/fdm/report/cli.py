"""`fdm report`: the click command; the report itself is `fdm.report.write.write_report`."""

from __future__ import annotations

import click

from fdm.config import load_params
from fdm.report.write import write_report


@click.command("report")
@click.option(
    "--params", "params_path", default="params.yaml", show_default=True, type=click.Path(dir_okay=False)
)
@click.option(
    "--runs", default="runs", show_default=True, type=click.Path(file_okay=False), help="Run folders."
)
@click.option(
    "--out", default="reports", show_default=True, type=click.Path(file_okay=False), help="Output folder."
)
def report(params_path: str, runs: str, out: str) -> None:
    """Tables and plots (curves, paired comparisons, the claims, speedups) from every metrics.json under RUNS.

    The pre-registered statistic (report.confirm) is printed first.
    """
    for path in write_report(load_params(params_path), runs, out, echo=click.echo):
        click.echo(f"wrote {path}")

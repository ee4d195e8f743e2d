"""`fdm report`: the click command; the report itself is `fdm.report.write.write_report`."""

from __future__ import annotations

import click

from fdm import paths
from fdm.jobs import open_profile
from fdm.report.write import write_report


@click.command("report")
@click.option(
    "--params", "params_path", default="params.yaml", show_default=True, type=click.Path(dir_okay=False)
)
@click.option(
    "--runs", type=click.Path(file_okay=False), help="Run folders [default: out/<profile name>/runs]."
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Output folder [default: out/<profile name>/reports]."
)
@click.option(
    "--summary",
    type=click.Path(dir_okay=False),
    help="The summary DVC compares [default: out/<profile name>/summary.json].",
)
@click.option(
    "--plots",
    type=click.Path(file_okay=False),
    help="The curves DVC plots [default: out/<profile name>/plots].",
)
def report(
    params_path: str, runs: str | None, out: str | None, summary: str | None, plots: str | None
) -> None:
    """Tables and plots (curves, paired comparisons, the claims, speedups) from every evaluation under RUNS.

    Also the profile's summary and curves for DVC (SUMMARY, PLOTS).

    The pre-registered statistic (report.confirm) is printed first.
    """
    params = open_profile(params_path)
    runs, out = runs or paths.runs(params.name), out or paths.reports(params.name)
    summary, plots = summary or paths.summary(params.name), plots or paths.plots(params.name)
    for path in write_report(params, runs, out, echo=click.echo, summary=summary, plots=plots):
        click.echo(f"wrote {path}")

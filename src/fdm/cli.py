"""`fdm <stage>`: thin command-line entry points over the library.

Each stage lives in its own module and registers a click command here; this file only
assembles the group and turns library errors into one clear line and a non-zero exit.
"""

from __future__ import annotations

import sys

import click

from fdm.errors import FdmError


class _Group(click.Group):
    """Click group that reports `FdmError` as a single line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FdmError as err:
            click.echo(f"fdm: error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fdm-pipeline")
def main() -> None:
    """Fast Diffusion Model reproduction pipeline: prepare, train, sample, score, report."""


def _register() -> None:
    """Attach every stage command. Imports are local so `fdm --help` stays fast."""
    from fdm.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register()

"""`fdm <stage>`: thin command-line entry points over the library.

Each stage module defines its click command; ``fdm.commands.COMMANDS`` names them and this group
imports one only when it runs. Library errors (``FdmError``) become one line and exit status 2, and so
does a full disk.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

import click

from fdm.commands import COMMANDS
from fdm.errors import FdmError
from fdm.provenance import COMMAND_STAGES, check_loaded_modules


class _StageGroup(click.Group):
    """Click group with lazily imported subcommands that reports `FdmError` as a single line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``fdm --help`` from the summaries, importing no stage (and no torch)."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name].summary) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            if os.environ.get("FDM_CHECK_SOURCES") and ctx.invoked_subcommand in COMMAND_STAGES:
                check_loaded_modules(COMMAND_STAGES[ctx.invoked_subcommand])
            return result
        except FdmError as err:
            click.echo(f"fdm: error: {err}", err=True)
            sys.exit(2)
        except OSError as err:  # a full disk outside the atomic writes (which say so themselves)
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            click.echo(f"fdm: error: {err.filename or 'a file'}: no space left on device", err=True)
            sys.exit(2)


@click.group(cls=_StageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fdm-pipeline")
def main() -> None:
    """Fast Diffusion Model reproduction pipeline: prepare, train, sample, score, report."""

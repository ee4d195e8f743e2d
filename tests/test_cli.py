"""The `fdm` command group: lazy stages, a help that imports none of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fdm.cli import main
from fdm.commands import COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_summary_is_its_commands_first_help_line(name):
    command = main.get_command(None, name)  # the group's own lazy import
    assert command.help.strip().splitlines()[0] == COMMANDS[name].summary


def test_help_lists_every_stage_without_importing_torch():
    probe = (
        "import sys; from fdm.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "print(sorted(m for m in ('torch', 'cleanfid', 'mlflow', 'fdm.generation') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    *help_lines, imported = result.stdout.strip().splitlines()
    assert imported == "[]"
    listed = {line.split()[0] for line in help_lines if line.startswith("  ") and not line.startswith("   ")}
    assert set(COMMANDS) <= listed

"""The list of `fdm` stage commands. Each stage module defines its click command."""

from __future__ import annotations

COMMANDS: list = []

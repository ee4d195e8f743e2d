"""The one exception type the command line turns into a clear one-line error, and how values from files
the user did not write appear in such a line."""

from __future__ import annotations

import re
import reprlib


class FdmError(Exception):
    """A user-facing error: bad input, missing file, failed check. The message is one line."""


class _Shown(reprlib.Repr):
    def repr1(self, x, level):
        if type(x).__name__ == "Tensor":  # without importing torch: its shape, not its values
            return f"tensor{list(x.shape)}"
        return super().repr1(x, level)

    def repr_int(self, x, level):  # str() of a huge int is slow, and refused past 4300 digits
        return (
            super().repr_int(x, level) if x.bit_length() <= 128 else f"<an integer of {x.bit_length()} bits>"
        )


_SHOWN = _Shown()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlong, _SHOWN.maxlevel = 40, 3
_PLAIN = re.compile(r"[A-Za-z0-9_.:/\-]{1,200}")


def shown(value) -> str:
    """``value`` (from a file or a server) for a one-line message: its ``repr``, with control characters
    escaped, shortened (``reprlib``) so that neither a newline nor a megabyte reaches the terminal."""
    return _SHOWN.repr(value)


def named(text) -> str:
    """A name from a file for a message: as it is when it is plainly printable, else ``shown``."""
    return text if isinstance(text, str) and _PLAIN.fullmatch(text) else shown(text)

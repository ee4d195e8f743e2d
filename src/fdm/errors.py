"""The one exception type the command line turns into a clear one-line error."""


class FdmError(Exception):
    """A user-facing error: bad input, missing file, failed check. The message is one line."""

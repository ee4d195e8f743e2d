"""The backstop: run a conversion in a child process with a memory limit and a time limit.

The importer's checks refuse every attack the tests know, each with its own message. This module is for the
ones nobody has thought of yet: the work runs in a child process (``multiprocessing``'s forkserver, whose
server has imported the conversion's modules once, so that each child starts in milliseconds; the parent
needs no torch) that first limits itself, with ``resource.setrlimit``, to

- ``memory`` bytes of address space beyond what it holds when it starts (``RLIMIT_AS``, Linux), and
- ``seconds`` of CPU time (``RLIMIT_CPU``); the parent also kills it after ``wall_seconds``.

Whatever happens in the child ends in one line in the parent: the function's result, an ``FdmError`` it
raised (passed on as it is), or a ``BackstopError`` saying which limit was reached, which signal ended it,
or that an unexpected exception occurred (an internal error: its traceback is kept in a log file the
message names). The child's standard output and error go to that log, so nothing it prints reaches the
terminal; the log is deleted when there was nothing to keep. Results come back as JSON, never pickled.

As with any ``multiprocessing`` program, a script that calls the importer at its top level needs the
``if __name__ == "__main__":`` guard (the child imports the script's main module).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import multiprocessing
import os
import resource
import signal
import tempfile
import time
import traceback
from pathlib import Path

from fdm.errors import FdmError

MAX_RESULT = 1 << 20  # bytes of JSON a child may send back
_LOG = logging.getLogger(__name__)


class BackstopError(FdmError):
    """The child ended without an answer of its own: a limit, a signal, or an internal error."""


def _context(preload: list[str]):
    """The forkserver (its server imports the main module and ``preload`` once; each child is a fork of it),
    or spawn where there is none."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["__main__", *preload])
        return context
    return multiprocessing.get_context("spawn")


def _memory() -> tuple[int, int] | None:
    """(Bytes of address space mapped, bytes resident) of this process (Linux's /proc), or None."""
    try:
        with open("/proc/self/statm") as f:
            size, resident = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    return int(size) * page, int(resident) * page


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB: Linux's VmHWM (``ru_maxrss`` would carry, across exec, the
    peak of the process that started it), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, hard))


def _is_out_of_memory(err: BaseException) -> bool:
    # Python's MemoryError, or torch's CPU allocator refusing ("DefaultCPUAllocator: can't allocate memory").
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )


def _child(connection, log: str, target: str, args: tuple, memory: int, seconds: float) -> None:
    with open(log, "ab", buffering=0) as out:  # whatever the work or a library prints goes to the log
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    start = _memory()
    if start is not None:
        _limit(resource.RLIMIT_AS, start[0] + memory)
    _limit(resource.RLIMIT_CPU, max(1, math.ceil(seconds)))
    try:
        module, name = target.split(":")
        answer = {"result": getattr(importlib.import_module(module), name)(*args)}
    except FdmError as err:
        answer = {"refused": str(err), "kind": type(err).__name__}
    except BaseException as err:  # noqa: BLE001 (the backstop: whatever escaped the explicit checks)
        answer = {"memory": True} if _is_out_of_memory(err) else {"internal": type(err).__name__}
        traceback.print_exc()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    answer["usage"] = {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": peak_rss_mib(),
        "start_rss_mib": start[1] / 2**20 if start else None,  # the forkserver's pages it began with
    }
    connection.send_bytes(json.dumps(answer).encode())
    connection.close()


def run(
    target: str,
    args: tuple,
    *,
    what: str,
    memory: int,
    seconds: float,
    wall_seconds: float,
    preload: tuple[str, ...] = (),
) -> object:
    """Call the function ``target`` ("module:name") with ``args`` in a limited child process; return its
    JSON-able result.

    ``what`` names the work in messages ("importing X"); ``preload`` names the modules the forkserver imports
    once for all children (so the parent need not import them). Raises the ``FdmError`` the function raised
    (its ``kind`` attribute is the class name in the child) or a ``BackstopError``. The child's resource
    usage is logged (``logging``, level DEBUG, the record's ``usage``).
    """
    context = _context(list(preload))
    fd, log = tempfile.mkstemp(prefix="fdm-backstop-", suffix=".log")
    os.close(fd)
    keep_log = False
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, log, target, args, memory, seconds), daemon=True)
    try:
        process.start()
        sender.close()
        began = time.monotonic()
        answer = None
        if receiver.poll(wall_seconds):
            try:
                answer = json.loads(receiver.recv_bytes(MAX_RESULT))
            except (EOFError, OSError, ValueError):  # the child died before answering, or sent nonsense
                answer = None
        process.join(max(0.0, wall_seconds - (time.monotonic() - began)))
        if process.is_alive():
            process.kill()
            process.join()
            if answer is None:
                raise BackstopError(
                    f"{what} took more than {wall_seconds:g} s; stopped (nothing was written)"
                )
        if answer is None:
            code = process.exitcode
            if code == -signal.SIGXCPU:
                raise BackstopError(
                    f"{what} took more than {seconds:g} s of CPU time; stopped (nothing was written)"
                )
            keep_log = True
            ended = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
            raise BackstopError(
                f"internal error: {what} ended with {ended} before answering (nothing was written); its output "
                f"is in {log}"
            )
        _LOG.debug("%s: %s", what, answer["usage"], extra={"usage": answer["usage"]})
        if "result" in answer:
            return answer["result"]
        if "refused" in answer:
            error = FdmError(answer["refused"])
            error.kind = answer["kind"]
            raise error
        if answer.get("memory"):
            raise BackstopError(
                f"{what} needed more than its memory limit of {memory / 2**20:,.0f} MiB; stopped (nothing was "
                "written)"
            )
        keep_log = True
        raise BackstopError(
            f"internal error: {what} failed with {answer['internal']} (a bug in fdm, not a refusal of the file; "
            f"nothing was written); the traceback is in {log}"
        )
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        receiver.close()
        if not keep_log:
            Path(log).unlink(missing_ok=True)

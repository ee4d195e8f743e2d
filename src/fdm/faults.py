"""Fault injection for the fault drill (tests/test_fault_drill.py): a stage kills itself at a named point.

The stages call ``fault_point(name, where)`` at a few points where a kill matters. Nothing happens there
unless the environment asks for it; nothing in the pipeline sets these variables, a test does:

- ``FDM_FAULT=<point>`` or ``FDM_FAULT=<point>@<path>``: at that point the process ends itself with
  SIGKILL, as the out-of-memory killer or a lost node would end it: no handler, no ``finally`` block
  runs. With ``@<path>`` only where ``where`` (the file or folder the stage is writing) is that path or
  inside it, so that ``train:after_state@runs/digits/edm/s0`` kills one training job and no other.
  A name not in ``POINTS`` is an error at the first point reached, not a drill that never kills.
- ``FDM_FAULT_ONCE=<marker file>``: kill only if the marker does not exist yet, creating it first (with
  ``O_EXCL``: of several processes reaching the point at once, one dies). The marker holds the point and
  ``where``. The first process to reach the point is killed; every later one, the rerun with the same
  environment included, runs through.
- ``FDM_FAULT_KILL=group``: SIGKILL the process's whole process group instead of the process. Under a
  ``snakemake`` started as the leader of its own group (``setsid``), Snakemake and its jobs die together,
  as when the machine or the session goes away: its lock and incomplete markers stay behind.

Before the kill the process prints ``fdm: FDM_FAULT: SIGKILL at <point> (<where>)`` to stderr.
Torch-free: the light commands and ``fdm.atomic`` import it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from fdm.errors import FdmError

FAULT_ENV, ONCE_ENV, KILL_ENV = "FDM_FAULT", "FDM_FAULT_ONCE", "FDM_FAULT_KILL"
VICTIMS = ("process", "group")  # what FDM_FAULT_KILL may name; process is the default

POINTS = {
    "train:before_state": "training is about to save its state.pt (a tick is logged; a snapshot may be written)",
    "train:after_state": "training has just saved its state.pt",
    "evaluate:scoring": "an evaluation point is sampled; nothing of it is scored or written",
    "evaluate:after_point": "an evaluation point is complete (metrics.json written); the next is not begun",
    "atomic:before_rename": "an atomic write's temporary file is complete and not yet renamed onto its path",
}


def fault_point(name: str, where: str | os.PathLike) -> None:
    """SIGKILL this process (or its group) here if ``FDM_FAULT`` names point ``name`` and, with a path,
    ``where`` is in it."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, target = spec.partition("@")
    if point not in POINTS:
        raise FdmError(f"{FAULT_ENV}={spec}: no fault point {point!r}; the points are {', '.join(POINTS)}")
    victim = os.environ.get(KILL_ENV) or "process"
    if victim not in VICTIMS:
        raise FdmError(f"{KILL_ENV}={victim}: expected {' or '.join(VICTIMS)}")
    if point != name or (target and not _inside(where, target)):
        return
    marker = os.environ.get(ONCE_ENV)
    if marker:
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        os.write(fd, f"{name} {where}\n".encode())
        os.close(fd)
    print(f"fdm: {FAULT_ENV}: SIGKILL at {name} ({where})", file=sys.stderr, flush=True)
    if victim == "group":
        os.killpg(0, signal.SIGKILL)  # this process is in the group
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def _inside(where: str | os.PathLike, target: str) -> bool:
    """Whether ``where`` is ``target`` or a path inside it (both resolved from the working directory)."""
    path, folder = Path(where).resolve(), Path(target).resolve()
    return path == folder or folder in path.parents

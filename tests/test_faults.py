"""Fault injection (src/fdm/faults.py): the FDM_FAULT protocol, and what a write killed before its rename leaves.

The points that kill run in a subprocess; the pipeline drill that uses them: tests/test_fault_drill.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fdm.atomic import atomic_write_text
from fdm.errors import FdmError
from fdm.faults import fault_point


def reach(point: str, where: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A Python process that reaches ``fault_point(point, where)`` in ``cwd`` with ``env`` added."""
    code = f"from fdm.faults import fault_point; fault_point({point!r}, {where!r})"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FDM_FAULT")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env={**environment, **env}, capture_output=True, text=True
    )


def test_a_point_does_nothing_unless_named(tmp_path):
    """One process passes the points FDM_FAULT does not name (another point; the named point elsewhere)
    and then dies at the one it names: the same call is a no-op or a kill by the name alone."""
    code = (
        "from fdm.faults import fault_point\n"
        "fault_point('train:after_state', 'runs/a'); print('other point', flush=True)\n"
        "fault_point('train:before_state', 'runs/b'); print('other path', flush=True)\n"
        "fault_point('train:before_state', 'runs/a'); print('named point', flush=True)\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FDM_FAULT")}
    environment["FDM_FAULT"] = "train:before_state@runs/a"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert result.stdout == "other point\nother path\n"
    assert result.returncode == -signal.SIGKILL
    del environment["FDM_FAULT"]  # unset: every point is a no-op
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert (result.returncode, result.stdout) == (0, "other point\nother path\nnamed point\n")


def test_the_named_point_kills_its_process(tmp_path):
    result = reach("train:after_state", "runs/a", tmp_path, FDM_FAULT="train:after_state")
    assert result.returncode == -signal.SIGKILL
    assert result.stderr == "fdm: FDM_FAULT: SIGKILL at train:after_state (runs/a)\n"


@pytest.mark.parametrize(
    "where, killed",
    [("runs/a", True), ("runs/a/eval/2/heun-7/metrics.json", True), (Path.cwd() / "runs/a", False),
     ("runs/ab", False), ("runs", False)],
)  # fmt: skip
def test_a_path_limits_the_point_to_that_path_and_inside_it(tmp_path, where, killed):
    result = reach("evaluate:after_point", str(where), tmp_path, FDM_FAULT="evaluate:after_point@runs/a")
    assert result.returncode == (-signal.SIGKILL if killed else 0)


def test_once_kills_the_first_process_only(tmp_path):
    marker = tmp_path / "fault.once"
    env = {"FDM_FAULT": "evaluate:scoring", "FDM_FAULT_ONCE": str(marker)}
    assert reach("evaluate:scoring", "x", tmp_path, **env).returncode == -signal.SIGKILL
    assert marker.read_text() == "evaluate:scoring x\n"
    assert reach("evaluate:scoring", "x", tmp_path, **env).returncode == 0


def test_group_kills_the_process_group(tmp_path):
    # The child holds the output pipe open: capturing it returns only once both are dead.
    code = (
        "import subprocess; subprocess.Popen(['sleep', '60'])\n"
        "from fdm.faults import fault_point; fault_point('evaluate:scoring', 'x')"
    )
    environment = {**os.environ, "FDM_FAULT": "evaluate:scoring", "FDM_FAULT_KILL": "group"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, timeout=30,
        start_new_session=True,  # its own group, without this test's process
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    "variable, value, message",
    [("FDM_FAULT", "train:after_stat@runs/a", "FDM_FAULT=train:after_stat@runs/a: no fault point 'train:after_stat'"),
     ("FDM_FAULT_KILL", "all", "FDM_FAULT_KILL=all: expected process or group")],
)  # fmt: skip
def test_a_misspelt_setting_is_an_error(monkeypatch, variable, value, message):
    monkeypatch.setenv("FDM_FAULT", "train:after_state@runs/a")
    monkeypatch.setenv(variable, value)
    with pytest.raises(FdmError, match=message):
        fault_point("evaluate:scoring", "runs/a")


def test_the_next_write_removes_what_a_killed_write_left(tmp_path):
    code = "from fdm.atomic import atomic_write_text; atomic_write_text('out/metrics.json', 'new')"
    environment = {**os.environ, "FDM_FAULT": "atomic:before_rename@out/metrics.json"}
    killed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment)
    assert killed.returncode == -signal.SIGKILL
    [left] = [p.name for p in (tmp_path / "out").iterdir()]
    assert left.startswith(".metrics.json.") and left.endswith(".tmp")
    other = tmp_path / "out" / ".timing.json.abcdefgh.tmp"  # another file's: not this write's to remove
    other.touch()
    atomic_write_text(tmp_path / "out" / "metrics.json", "new")
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == [".timing.json.abcdefgh.tmp", "metrics.json"]

"""Atomic writes (``fdm.atomic``): nothing half-written under the final name, and the mode a plain ``open``
would give (0666 less the umask), not mkstemp's 0600. The pipeline's outputs are checked under umask 027
and 022 in tests/test_workflow_run.py."""

import os
import stat
import subprocess
import sys

import pytest

from fdm.atomic import atomic_write, atomic_write_text

WRITER = """
import os, sys
from pathlib import Path
from fdm.atomic import atomic_write, atomic_write_text
from fdm.data.archive import atomic_output
os.umask(int(sys.argv[2], 8))
root = Path(sys.argv[1])
atomic_write_text(root / "a" / "text.json", "{}")
atomic_write(root / "a" / "bytes.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
with atomic_output(root / "a" / "data.zip") as tmp:
    tmp.write_bytes(b"zip")
"""


@pytest.mark.parametrize(("umask", "mode"), [("022", 0o644), ("027", 0o640), ("077", 0o600)])
def test_outputs_get_the_mode_of_the_umask(tmp_path, umask, mode):
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), umask], check=True)
    for name in ("text.json", "bytes.bin", "data.zip"):
        assert stat.S_IMODE(os.stat(tmp_path / "a" / name).st_mode) == mode, name
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o777 & ~int(umask, 8)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["bytes.bin", "data.zip", "text.json"]


def test_a_failed_write_leaves_nothing(tmp_path):
    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed")

    atomic_write_text(tmp_path / "old.txt", "old")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "old.txt", fail)
    assert (tmp_path / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]

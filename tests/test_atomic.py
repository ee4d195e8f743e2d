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


def test_a_full_disk_is_one_error_line_and_the_old_file_stays(tmp_path):
    """ENOSPC in the middle of a write (faked: the machine may not let a test mount a small file system;
    tests/test_training_run.py fills a real tmpfs where it can): one FdmError naming the file, the old
    contents kept, no temporary file left. Torch's writer reports it as a RuntimeError raised while
    handling the OSError, which counts too."""
    import errno

    from fdm.errors import FdmError

    target = tmp_path / "state.pt"
    target.write_text("the last good state")

    def disk_full(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    def torch_like(tmp):
        try:
            disk_full(tmp)
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 769088") from None

    for write in (disk_full, torch_like):
        with pytest.raises(FdmError) as err:
            atomic_write(target, write)
        assert str(err.value) == f"{target}: no space left on device"
        assert target.read_text() == "the last good state"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]

    def unrelated(tmp):
        raise RuntimeError("a bug, not a full disk")

    with pytest.raises(RuntimeError, match="a bug"):
        atomic_write(target, unrelated)

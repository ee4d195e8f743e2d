"""A profile's folder, out/<name>/: the jobs of one run claim it together, safely; a second profile file
with the same name is told, in one line, that it writes into the first's folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLAIM = "import sys; from fdm.jobs import open_profile; open_profile(sys.argv[1])"
AT_ONCE = """
import os, sys, time
from fdm.jobs import open_profile
open(f"ready.{os.getpid()}", "w").close()
while not os.path.exists("go"):
    time.sleep(0.001)
open_profile(sys.argv[1])
"""


def test_jobs_claim_the_profiles_folder_at_once_without_tripping_over_each_other(tmp_path):
    """Sixteen jobs of one profile start together (as Snakemake's train_config jobs do): one mark, whole
    and valid, no temporary file left, no error (an atomic write's cleanup of other writers' temporary
    files once made concurrent claims fail)."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    jobs = [
        subprocess.Popen([sys.executable, "-c", AT_ONCE, "params.yaml"], cwd=tmp_path, stderr=subprocess.PIPE)
        for _ in range(16)
    ]
    while len(list(tmp_path.glob("ready.*"))) < len(jobs):  # every job imported, waiting for the start
        time.sleep(0.01)
    (tmp_path / "go").touch()
    errors = [job.communicate()[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 16, errors
    folder = tmp_path / "out" / "smoke"
    assert sorted(p.name for p in folder.iterdir()) == ["profile.json"]
    assert json.loads((folder / "profile.json").read_text())["params_file"] == "params.yaml"


def test_a_second_profile_of_the_same_name_warns_in_one_line(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    other = tmp_path / "mine.yaml"
    other.write_text((ROOT / "params.yaml").read_text().replace("seed: 0 ", "seed: 7 "))
    for name in ("params.yaml", "params.yaml", "mine.yaml"):
        result = subprocess.run(
            [sys.executable, "-c", CLAIM, name], cwd=tmp_path, capture_output=True, text=True, check=True
        )
    assert result.stderr == (
        "fdm: warning: mine.yaml writes into out/smoke/, which params.yaml (another profile named 'smoke') "
        "wrote first; give one of them another name\n"
    )
    same = subprocess.run([sys.executable, "-c", CLAIM, "params.yaml"], cwd=tmp_path, capture_output=True)
    assert same.stderr == b""

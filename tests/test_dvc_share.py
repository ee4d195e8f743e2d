"""DVC users compare and share results in DVC: two experiments of the tiny profile, their summaries in
``dvc exp show`` and ``dvc metrics diff``, their curves in ``dvc plots diff``, ``dvc exp apply``; then a
local-directory remote that brings every result to a fresh clone, where nothing reruns and ``fdm report``
works without training, and a remote missing an object, which ``dvc pull`` names and ``dvc repro``
recomputes alone.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from test_workflow_equivalence import BIN, run
from test_workflow_run import project_copy

SUMMARY = "out/tiny/summary.json"


def flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """A nested summary as DVC names its values: ``digits.paired.fdm_edm.2``. DVC leaves out the nulls (a
    speedup whose target is not reached), and so does this."""
    found = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found |= flat(value, name + ".")
        elif value is not None:
            found[name] = value
    return found


def experiments(workdir: Path) -> dict[str, dict]:
    """Experiment name -> the summary's values that `dvc exp show --json` reports for it."""
    shown = json.loads(run([BIN / "dvc", "exp", "show", "--json"], workdir).stdout)
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                metrics = data.get("metrics", {}).get(SUMMARY, {}).get("data")
                if rev.get("name") and metrics is not None:
                    found[rev["name"]] = flat(metrics)
    return found


def git(workdir: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=workdir, check=True, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_two_experiments_compare_apply_and_travel_through_a_remote(tmp_path):
    work = project_copy(tmp_path / "work")
    remote = tmp_path / "remote"
    run([BIN / "dvc", "config", "core.analytics", "false"], work)
    run([BIN / "dvc", "remote", "add", "-d", "store", str(remote)], work)
    git(work, "commit", "-qam", "a DVC remote")

    # Two experiments: the profile, and FDM-EDM with twice the learning rate.
    run([BIN / "dvc", "exp", "run", "-n", "base"], work, timeout=900)
    base = json.loads((work / SUMMARY).read_text())
    run(
        [BIN / "dvc", "exp", "run", "-n", "lr2", "-S", "+train.variants.fdm_edm.lr=2.0e-3"], work, timeout=900
    )
    lr2 = json.loads((work / SUMMARY).read_text())

    shown = experiments(work)
    assert shown["base"] == flat(base) and shown["lr2"] == flat(lr2)
    names = set(shown["base"])
    # One column per (variant, snapshot), paired difference, speedup: tens, not hundreds.
    assert {
        "digits.fid_digitsnet.edm.1",
        "digits.fid_digitsnet.fdm_edm.2",
        "digits.paired.fdm_edm.2",
    } <= names
    assert len(names) < 20
    # EDM is untouched by FDM-EDM's learning rate (same seed, same bytes); FDM-EDM is not.
    assert shown["lr2"]["digits.fid_digitsnet.edm.2"] == shown["base"]["digits.fid_digitsnet.edm.2"]
    assert shown["lr2"]["digits.fid_digitsnet.fdm_edm.2"] != shown["base"]["digits.fid_digitsnet.fdm_edm.2"]

    diff = json.loads(run([BIN / "dvc", "metrics", "diff", "base", "lr2", "--json"], work).stdout)[SUMMARY]
    changed = diff["digits.fid_digitsnet.fdm_edm.2"]
    assert (changed["old"], changed["new"]) == (
        shown["base"]["digits.fid_digitsnet.fdm_edm.2"],
        shown["lr2"]["digits.fid_digitsnet.fdm_edm.2"],
    )
    assert changed["diff"] == pytest.approx(changed["new"] - changed["old"])
    assert "digits.fid_digitsnet.edm.2" not in diff  # unchanged values are not listed

    plots = json.loads(run([BIN / "dvc", "plots", "diff", "base", "lr2", "--json"], work).stdout)["data"]
    assert sorted(plots) == ["out/tiny/plots/fid_vs_mimg/digits.csv", "out/tiny/plots/fid_vs_nfe/digits.csv"]
    points = [
        p
        for entry in plots["out/tiny/plots/fid_vs_mimg/digits.csv"]
        for p in entry["content"]["data"]["values"]
    ]
    drawn = {(p["rev"], p["series"], p["kimg"]): float(p["fid"]) for p in points}
    assert drawn == {
        (name, variant, kimg): pytest.approx(summary["digits"]["fid_digitsnet"][variant][kimg], abs=1e-6)
        for name, summary in (("base", base), ("lr2", lr2))
        for variant in ("edm", "fdm_edm")
        for kimg in ("1", "2")
    }

    # `dvc exp apply` brings back an experiment's summary and report.
    run([BIN / "dvc", "exp", "apply", "base"], work)
    assert json.loads((work / SUMMARY).read_text()) == base
    assert (work / "out/tiny/reports/digits/fid_vs_mimg.png").is_file()

    # Share: commit the experiment, push every output, clone, pull.
    git(work, "add", "dvc.lock", "params.yaml")
    git(work, "commit", "-qm", "experiment base")
    run([BIN / "dvc", "push"], work)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(work), str(clone))
    run([BIN / "dvc", "config", "core.analytics", "false"], clone)
    run([BIN / "dvc", "pull"], clone)
    assert "Data and pipelines are up to date." in run([BIN / "dvc", "status"], clone).stdout
    repro = run([BIN / "dvc", "repro"], clone).stdout
    assert "Running stage" not in repro, repro[-2000:]
    snapshots = sorted(p.name for p in (clone / "out/tiny/runs/digits/fdm_edm/s0/snapshots").iterdir())
    assert snapshots == ["000001.safetensors", "000002.safetensors"]
    # The report again from what was pulled (the records, not the point folders): the same summary.
    (clone / SUMMARY).unlink()
    run([BIN / "fdm", "report"], clone)
    assert json.loads((clone / SUMMARY).read_text()) == base

    # A remote missing an object: `dvc pull` names the file; `dvc repro` recomputes only its stage.
    stages = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    [md5] = [o["md5"] for o in stages["report"]["outs"] if o["path"] == SUMMARY]
    [obj] = list(remote.rglob(md5[2:]))
    obj.unlink()
    partial = tmp_path / "partial"
    git(tmp_path, "clone", "-q", str(work), str(partial))
    run([BIN / "dvc", "config", "core.analytics", "false"], partial)
    pulled = run([BIN / "dvc", "pull"], partial, check=False)
    assert pulled.returncode != 0 and SUMMARY in pulled.stdout + pulled.stderr
    repro = run([BIN / "dvc", "repro"], partial).stdout
    assert repro.count("Running stage") == 1 and "Running stage 'report'" in repro, repro[-2000:]
    assert json.loads((partial / SUMMARY).read_text()) == base

    # No remote configured: DVC's own message (docs/pipeline.md says how to set one).
    bare = tmp_path / "bare"
    git(tmp_path, "clone", "-q", str(work), str(bare))
    run([BIN / "dvc", "remote", "default", "--unset"], bare)
    result = run([BIN / "dvc", "pull"], bare, check=False)
    assert result.returncode != 0
    assert "no remote provided and no default remote set" in (result.stdout + result.stderr).lower()

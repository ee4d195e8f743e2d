"""End to end: a reduced smoke profile (tests/workflow_tiny.yaml) through Snakemake and through DVC.

Two temporary copies of the project run the whole pipeline side by side, one with Snakemake on one
core and one with ``dvc repro``; they must write byte-identical metrics. Then, in each copy, a second
run finds nothing to do; `dvc exp run -S` adding an NFE point to the study (and the same edit of the
file for Snakemake) computes that point only, to the same bytes; and editing one variant's learning rate
reruns that variant's chain only. More edits, with a stand-in `fdm`: tests/test_workflow_edits.py.
"""

from __future__ import annotations

import csv
import json
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_workflow_equivalence import BIN, ROOT, run, tool_env

TINY = ROOT / "tests" / "workflow_tiny.yaml"


def project_copy(dest: Path) -> Path:
    """The project's files as a fresh clone has them (tracked and not ignored), plus a new Git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    (dest / "params.yaml").write_bytes(TINY.read_bytes())
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"], ["add", "-A"],
                 ["commit", "-qm", "copy"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest


def start(args, cwd: Path, umask: int) -> subprocess.Popen:
    log = open(cwd / "run.log", "w")  # noqa: SIM115 -- closed by finish()
    return subprocess.Popen(
        [str(a) for a in args], cwd=cwd, env=tool_env(), stdout=log, stderr=subprocess.STDOUT, umask=umask
    )


def modes(workdir: Path) -> dict[int, list[str]]:
    """Every pipeline output (data/, out/) by its permission bits."""
    found: dict[int, list[str]] = {}
    for folder in ("data", "out"):
        for path in sorted((workdir / folder).rglob("*")):
            if (
                path.is_file() and path.name != ".gitignore" and "logs" not in path.parts
            ):  # not the runners' own
                found.setdefault(stat.S_IMODE(path.stat().st_mode), []).append(str(path.relative_to(workdir)))
    return found


def finish(process: subprocess.Popen, cwd: Path, timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    finally:
        process.kill()
        process.stdout and process.stdout.close()
    log = (cwd / "run.log").read_text()
    assert process.returncode == 0, log[-4000:]


RUNS = "out/tiny/runs"


def metrics_files(workdir: Path) -> dict[str, bytes]:
    """The bytes of every metrics.json of the profile's runs, by path."""
    return {
        str(path.relative_to(workdir)): path.read_bytes()
        for path in sorted((workdir / RUNS).glob("*/*/s*/eval/*/*/metrics.json"))
    }


def set_lr(workdir: Path, variant: str, lr: float) -> None:
    path = workdir / "params.yaml"
    data = yaml.safe_load(path.read_text())
    data["train"]["variants"][variant]["lr"] = lr
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def planned_jobs(workdir: Path) -> list[str]:
    """Rule and wildcards (but the profile's) of every job `snakemake --dry-run` would run, e.g.
    'train digits fdm_edm 0'."""
    out = run([BIN / "snakemake", "--dry-run", "--cores", "1"], workdir).stdout
    jobs, rule = [], None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            jobs.append(rule)
        elif line.startswith("wildcards: ") and rule is not None:
            values = [
                part.split("=")[1]
                for part in line.removeprefix("wildcards: ").split(", ")
                if not part.startswith("profile=")  # one value per profile
            ]
            jobs[-1] = " ".join([jobs[-1], *values])
    return sorted(jobs)


@pytest.mark.slow
def test_snakemake_and_dvc_run_the_same_pipeline(tmp_path):
    smk, dvc = project_copy(tmp_path / "snakemake"), project_copy(tmp_path / "dvc")
    run([BIN / "dvc", "config", "core.analytics", "false"], dvc)
    jobs = [  # a lab's shared folder (umask 027) and a personal one (022)
        (start([BIN / "snakemake", "--cores", "1", "--profile", "workflow/profiles/local"], smk, 0o027), smk),
        (start([BIN / "dvc", "repro"], dvc, 0o022), dvc),
    ]
    for process, cwd in jobs:
        finish(process, cwd, timeout=600)

    # Both produce the same metrics, byte for byte, and the report.
    ours = metrics_files(smk)
    assert len(ours) == 2 * 4 and ours == metrics_files(dvc)
    for raw in ours.values():
        record = json.loads(raw)
        assert record["fid_digitsnet"] > 0 and record["num_samples"] == 64
    for workdir in (smk, dvc):
        assert (workdir / "out/tiny/reports/digits/fid_vs_mimg.csv").is_file()
        assert (workdir / "out/tiny/reports/digits/fid_vs_nfe.png").is_file()
    assert (smk / "out/tiny/logs/train/digits-fdm_edm-s0.log").is_file()
    # The summary DVC compares: the same in both, and the report's own numbers.
    summary = json.loads((smk / "out/tiny/summary.json").read_text())
    assert summary == json.loads((dvc / "out/tiny/summary.json").read_text())
    mimg = {(r["variant"], r["kimg"]): float(r["mean"]) for r in csv.DictReader(
        (smk / "out/tiny/reports/digits/fid_vs_mimg.csv").open())}  # fmt: skip
    assert {(v, k): x for v, by_kimg in summary["digits"]["fid_digitsnet"].items()
            for k, x in by_kimg.items()} == pytest.approx(mimg)  # fmt: skip
    # Snakemake's report holds the figures and tables, with their captions.
    run([BIN / "snakemake", "--report", "report.html", "--cores", "1"], smk)
    html = (smk / "report.html").read_text()
    for name in ("fid_vs_mimg.png", "fid_vs_nfe.png", "speedup.png", "claims.csv", "summary.json"):
        assert name in html, name
    assert "arXiv 2306.06991" in html  # the captions (workflow/report/)
    # Every output honours the umask: snapshots, state.pt, metrics, grids, records, statistics, networks.
    for workdir, mode in ((smk, 0o640), (dvc, 0o644)):
        found = modes(workdir)
        assert list(found) == [mode], {oct(m): files[:5] for m, files in found.items()}
        names = {Path(f).name for f in found[mode]}
        assert {"state.pt", "000002.safetensors", "metrics.json", "grid.png", "digitsnet.pt", "native.npz",
                "trained.json", "evaluated.json", "timing.json", "train.jsonl", "digits.zip"} <= names  # fmt: skip

    # A second run has nothing to do and says so quickly.
    began = time.monotonic()
    again = run([BIN / "snakemake", "--cores", "1"], smk)
    assert "Nothing to be done" in again.stdout + again.stderr
    assert time.monotonic() - began < 30
    assert "Data and pipelines are up to date." in run([BIN / "dvc", "status"], dvc).stdout

    # An NFE point added to the study: `dvc exp run -S`, no other step; only the new point is computed.
    before = metrics_files(smk)
    run([BIN / "dvc", "exp", "run", "-S", "eval.nfe_study.heun=[3,5,7]"], dvc)
    data = yaml.safe_load((smk / "params.yaml").read_text())
    data["eval"]["nfe_study"]["heun"] = [3, 5, 7]
    (smk / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert planned_jobs(smk) == sorted(
        [
            "all",
            "eval_config digits 2",
            "evaluate digits edm 0 2",
            "evaluate digits fdm_edm 0 2",
            "report",
            "track",
        ]
    )
    run([BIN / "snakemake", "--cores", "1"], smk)
    after = metrics_files(smk)
    assert after == metrics_files(dvc)
    assert sorted(set(after) - set(before)) == [
        f"{RUNS}/digits/{v}/s0/eval/2/heun-5/metrics.json" for v in ("edm", "fdm_edm")
    ]
    assert {
        k: v for k, v in after.items() if k in before
    } == before  # the other points were kept as they were
    log = (smk / "out/tiny/logs/evaluate/digits-edm-s0-2.log").read_text()
    assert "evaluated heun-5; 3 point(s) already done" in log

    # Editing one variant's learning rate reruns that variant's chain only.
    set_lr(smk, "fdm_edm", 2.0e-3)
    evals = [f"evaluate digits fdm_edm 0 {kimg}" for kimg in (1, 2)]
    assert planned_jobs(smk) == sorted(
        ["all", "report", "track", "train_config digits fdm_edm 0", "train digits fdm_edm 0", *evals]
    )
    set_lr(dvc, "fdm_edm", 2.0e-3)
    run(
        [BIN / "dvc", "repro", "--single-item", "train_config@digits-edm-0", "train_config@digits-fdm_edm-0"],
        dvc,
    )
    status = json.loads(run([BIN / "dvc", "status", "--json"], dvc).stdout)
    assert "train@digits-fdm_edm-0" in status
    assert not [name for name in status if "edm-0" in name and "fdm_edm" not in name]
    assert (dvc / RUNS / "digits/edm/s0/train.json").read_bytes() == (
        smk / RUNS / "digits/edm/s0/train.json"
    ).read_bytes()

"""The cluster path: the pipeline through workflow/profiles/slurm on a real single-node Slurm.

tests/slurm_cluster.py brings up munged, slurmctld and slurmd on 127.0.0.1. A reduced smoke profile
(tests/workflow_tiny.yaml with one variant, two evaluations and training on "2 GPUs", that is two
torchrun processes on the CPU) runs in two copies of the project:
locally (``--profile workflow/profiles/local``, in the background) and through ``snakemake --profile
workflow/profiles/slurm``. On Slurm the evaluations first fail (an ``fdm`` first on PATH refuses
``fdm evaluate`` while a marker file exists): the workflow fails naming the job's log. Removing the
marker and running again finishes the workflow without redoing the jobs that had finished. Every
job snakemake reports as submitted is a job slurmctld ran, in the partition and with the GPUs the
profile asks for, and both copies write the same metrics, byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from slurm_cluster import missing, slurm_cluster
from test_workflow_equivalence import BIN, tool_env
from test_workflow_run import metrics_files, project_copy

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]

# Python, not sh: `fdm train --gpus 2` starts itself again under torchrun, which runs it as a Python script.
BROKEN_FDM = """#!{python}
import os, sys
if sys.argv[1:2] == ["evaluate"] and os.path.exists("{marker}"):
    sys.exit("fdm evaluate: broken on purpose")
os.execv("{fdm}", ["{fdm}", *sys.argv[1:]])
"""


def reduce_profile(workdir: Path) -> None:
    """One variant, two evaluations (heun, 7 NFE, at 1 and 2 kimg), training under torchrun."""
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["variants"] = ["edm"]
    params["eval"]["nfe_study"] = {"heun": [7]}
    params["gpus"]["train"] = 2  # --gpus=2 on Slurm, torchrun with two (CPU) processes in both copies
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@contextlib.contextmanager
def snakemake_in_background(args: list, cwd: Path, env: dict):
    """A snakemake run in its own process group, killed with its jobs if the test ends before it."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [str(a) for a in args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process, log
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_snakemake(args: list, cwd: Path, env: dict, timeout: float = 900) -> tuple[int, str]:
    """Exit status and output of a snakemake run; on a timeout, it and its local jobs are killed."""
    with snakemake_in_background(args, cwd, env) as (process, log):
        try:
            process.wait(timeout=timeout)
        finally:
            log.seek(0)
            output = log.read()
        return process.returncode, output


def job_stats(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table of the jobs it is about to run: rule -> count."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_workflow_on_slurm_fails_resumes_and_matches_the_local_run(tmp_path):
    local, cluster_copy = project_copy(tmp_path / "local"), project_copy(tmp_path / "slurm")
    for workdir in (local, cluster_copy):
        reduce_profile(workdir)
    local_args = [BIN / "snakemake", "--cores", "1", "--profile", "workflow/profiles/local"]
    with snakemake_in_background(local_args, local, tool_env()) as (local_run, local_log):
        run_on_slurm(tmp_path, cluster_copy)
        local_run.wait(timeout=900)
        local_log.seek(0)
        assert local_run.returncode == 0, local_log.read()[-4000:]
    ours = metrics_files(cluster_copy)
    assert len(ours) == 2 and ours == metrics_files(local)


def run_on_slurm(tmp_path: Path, cluster_copy: Path) -> None:
    """The failing run, the fix and the rerun, on the test's cluster; checks what Slurm ran."""
    broken, marker = tmp_path / "broken", tmp_path / "break-evaluate"
    broken.mkdir()
    (broken / "fdm").write_text(BROKEN_FDM.format(python=BIN / "python", marker=marker, fdm=BIN / "fdm"))
    (broken / "fdm").chmod(0o755)
    marker.touch()
    snakemake = [
        str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm", "--latency-wait", "5",
        "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs",
    ]  # fmt: skip
    with slurm_cluster() as cluster:
        env = {**tool_env(), "SLURM_CONF": cluster.env["SLURM_CONF"]}
        env["PATH"] = f"{broken}:{cluster.root / 'bin'}:{env['PATH']}"
        code, failed = run_snakemake(snakemake, cluster_copy, env)
        assert code != 0, failed[-4000:]
        assert "SLURM status is: 'FAILED'" in failed, failed[-4000:]
        assert re.search(r"logs/evaluate/digits-edm-s0-\d+\.log", failed), failed[-4000:]

        marker.unlink()
        code, resumed = run_snakemake(snakemake, cluster_copy, env)
        assert code == 0, resumed[-4000:]
        assert job_stats(resumed) == {"all": 1, "evaluate": 2, "report": 1, "track": 1}

        # Every submission is a job slurmctld knows, completed or failed, under the rule it ran.
        submitted = [int(i) for i in re.findall(r"submitted with SLURM jobid (\d+)", failed + resumed)]
        listed = cluster.run("squeue", "-h", "--states=all", "-o", "%i %T %P %k").split("\n")
        jobs = {int(i): fields for i, *fields in (line.split() for line in listed if line)}
        assert sorted(submitted) == sorted(jobs) and len(submitted) == 7  # feature_net runs locally
        states = sorted(
            (comment.split("_wildcards_")[0], part, state) for state, part, comment in jobs.values()
        )
        assert states == sorted(
            [("rule_prepare", "cpu", "COMPLETED"), ("rule_ref_stats", "cpu", "COMPLETED"),
             ("rule_train", "gpu", "COMPLETED"),
             *[("rule_evaluate", "gpu", "FAILED")] * 2, *[("rule_evaluate", "gpu", "COMPLETED")] * 2]
        )  # fmt: skip
        train = next(i for i, (*_, comment) in jobs.items() if comment.startswith("rule_train_"))
        assert "gres:gpu:2" in cluster.run("scontrol", "show", "job", str(train))
        assert (
            "fdm: starting 2 processes under torchrun"
            in (cluster_copy / "out/tiny/logs/train/digits-edm-s0.log").read_text()
        )
        assert sorted(p.name for p in (cluster_copy / ".snakemake" / "slurm_logs").rglob("*.log")) == sorted(
            f"{i}.log" for i in submitted
        )

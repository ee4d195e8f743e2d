"""The fault drill: a pipeline job kills itself at a named point, and the rerun must finish as if it had not.

Opt-in, since it runs the pipeline twelve times (about 12 minutes on two cores):
``FDM_FAULT_DRILL=1 pytest -m fault_drill`` (``make fault-drill``); skipped otherwise, with the reason.

Each case runs a reduced smoke profile (tests/workflow_tiny.yaml with one variant, edm: 11 jobs) in a
temporary copy of the project through ``snakemake --cores 1`` (one case through ``dvc repro``), with
``FDM_FAULT`` naming a fault point in one job and ``FDM_FAULT_ONCE`` a marker file (src/fdm/faults.py):
that job SIGKILLs itself at the point, as the out-of-memory killer would end it, and the run fails (in
one case ``FDM_FAULT_KILL=group`` kills Snakemake with it, which then needs ``snakemake --unlock``). The
same command in the same environment runs again (the marker exists, so nothing is killed) and must
finish with:

- every snapshot, ``trained.json``, ``metrics.json`` and ``evaluated.json``, the dataset and the reference
  statistics byte-identical to an uninterrupted run of the profile (made once per session), and the same
  set of files under data/ and out/ (Snakemake's directory markers and job logs aside);
- no temporary file of an atomic write (``.<name>.*.tmp``) anywhere in the project;
- nothing left to do: ``snakemake --dry-run`` (``dvc status`` for the DVC case);

and, per case, evidence that the rerun did only what the kill left undone: a training killed after
writing its state.pt resumes there (its log says "resuming at 1.024 kimg", train.jsonl keeps the killed
run's lines) and one killed before starts over; an evaluation killed after a point keeps that point (its
log says "1 point(s) already done", and the point's timing.json is the killed run's). A kill in the
middle of an atomic write (the temporary file complete, not yet renamed) leaves that temporary file,
which the rerun must remove. The per-case checks are what fails if resume broke: a training that started
over would not print the resume line and would rewrite train.jsonl; an evaluation that recomputed its
finished points would list them and rewrite their timing.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from test_workflow_equivalence import BIN, run, tool_env
from test_workflow_run import project_copy

from fdm.training.state import load_state

OPT_IN = "FDM_FAULT_DRILL"
if os.environ.get(OPT_IN) != "1":
    pytest.skip(
        f"the fault drill runs the pipeline 12 times (~12 min): set {OPT_IN}=1 (make fault-drill)",
        allow_module_level=True,
    )
pytestmark = [pytest.mark.slow, pytest.mark.fault_drill]

SNAKEMAKE = [BIN / "snakemake", "--cores", "1", "--profile", "workflow/profiles/local"]
OUT = "out/tiny"  # the profile's folder
RUN = f"{OUT}/runs/digits/edm/s0"  # the one model of the profile
FINAL = f"{RUN}/eval/2"  # its final snapshot's evaluation: points dpmpp_3s-3, heun-3, heun-7, in this order
TRAIN_LOG, EVALUATE_LOG = f"{OUT}/logs/train/digits-edm-s0.log", f"{OUT}/logs/evaluate/digits-edm-s0-2.log"
OUTPUT_DIRS = ("data", "out")
SNAKEMAKE_MARKER = ".snakemake_timestamp"  # in directory outputs; DVC writes none
BYTE_IDENTICAL = (  # relative to the project; the other outputs hold timings or random ids
    f"{OUT}/data/digits.zip",
    f"{OUT}/data/stats/*/*/*.npz",
    "data/store/*/*",
    f"{OUT}/runs/*/*/s*/trained.json",
    f"{OUT}/runs/*/*/s*/snapshots/*.safetensors",
    f"{OUT}/runs/*/*/s*/eval/*/evaluated.json",
    f"{OUT}/runs/*/*/s*/eval/*/*/metrics.json",
)


def drill_project(dest: Path) -> Path:
    """A copy of the project running tests/workflow_tiny.yaml with one variant (edm)."""
    workdir = project_copy(dest)
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["variants"] = ["edm"]
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return workdir


def output_files(workdir: Path) -> list[str]:
    """Every file under data/ and out/ (Snakemake's markers and logs left out), relative to ``workdir``."""
    return sorted(
        str(path.relative_to(workdir))
        for folder in OUTPUT_DIRS
        for path in (workdir / folder).rglob("*")
        if path.is_file() and path.name != SNAKEMAKE_MARKER and "logs" not in path.relative_to(workdir).parts
    )


def key_artifacts(workdir: Path) -> dict[str, bytes]:
    """The bytes of the outputs that must not depend on a kill (``BYTE_IDENTICAL``), by path."""
    return {
        str(path.relative_to(workdir)): path.read_bytes()
        for pattern in BYTE_IDENTICAL
        for path in sorted(workdir.glob(pattern))
    }


def temp_files(workdir: Path) -> list[str]:
    """Temporary files of atomic writes (``.<name>.<random>.tmp``) anywhere in the project but .git."""
    return sorted(
        str(path.relative_to(workdir))
        for path in workdir.rglob(".*.tmp")
        if ".git" not in path.relative_to(workdir).parts
    )


def tick_kimgs(workdir: Path) -> list[float]:
    """The kimg of every line of the model's train.jsonl."""
    return [json.loads(line)["kimg"] for line in (workdir / RUN / "train.jsonl").read_text().splitlines()]


def pipeline(command: list, workdir: Path, env: dict, timeout: float = 900) -> tuple[int, str]:
    """Run ``command`` as the leader of a new process group (what ``FDM_FAULT_KILL=group`` kills); its
    exit status and output. Whatever of the group is left at the end, on a timeout too, is killed."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [str(a) for a in command], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            process.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.seek(0)
        return process.returncode, log.read()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted Snakemake run of the drill's profile."""
    workdir = drill_project(tmp_path_factory.mktemp("reference"))
    run(SNAKEMAKE, workdir, timeout=900)
    assert len(key_artifacts(workdir)) == 1 + 1 + 4 + 1 + 2 + 2 + 4  # store: a zip, an npz, their keys
    return workdir


class Drill:
    """One case: ``Drill(tmp_path, fault)`` runs the pipeline until the fault kills its job (or, with
    ``kill="group"``, Snakemake and its job); the test may look at what the kill left, then
    ``finish(reference)`` reruns it to the end and makes the common checks."""

    def __init__(self, tmp_path: Path, fault: str, runner: str = "snakemake", kill: str = "process"):
        self.workdir = drill_project(tmp_path / "project")
        self.command = SNAKEMAKE if runner == "snakemake" else [BIN / "dvc", "repro"]
        self.runner = runner
        if runner == "dvc":
            run([BIN / "dvc", "config", "core.analytics", "false"], self.workdir)
        marker = tmp_path / "fault.once"
        self.env = {
            **tool_env(), "FDM_FAULT": fault, "FDM_FAULT_ONCE": str(marker), "FDM_FAULT_KILL": kill
        }  # fmt: skip
        code, output = pipeline(self.command, self.workdir, self.env)
        assert code != 0 and marker.is_file(), output[-4000:]
        self.killed_at = marker.read_text().strip()  # "<point> <where>"
        self.left = temp_files(self.workdir)
        self.rerun = ""

    def finish(self, reference: Path) -> None:
        """Rerun with the same environment (the fault is spent) and compare with ``reference``."""
        code, self.rerun = pipeline(self.command, self.workdir, self.env)
        assert code == 0, self.rerun[-4000:]
        assert "FDM_FAULT" not in self.rerun
        assert temp_files(self.workdir) == []
        assert output_files(self.workdir) == output_files(reference)
        ours, theirs = key_artifacts(self.workdir), key_artifacts(reference)
        assert sorted(ours) == sorted(theirs)
        assert [name for name in ours if ours[name] != theirs[name]] == []
        if self.runner == "snakemake":
            dry = run([BIN / "snakemake", "--dry-run", "--cores", "1"], self.workdir)
            assert "Nothing to be done" in dry.stdout + dry.stderr
        else:
            assert "Data and pipelines are up to date." in run([BIN / "dvc", "status"], self.workdir).stdout

    def log(self, name: str) -> str:
        """A job's log (Snakemake) or the rerun's output (DVC, which prints the jobs' output)."""
        return (self.workdir / name).read_text() if self.runner == "snakemake" else self.rerun


@pytest.mark.parametrize("runner", ["snakemake", "dvc"])
def test_training_killed_after_its_state_resumes_there(reference, tmp_path, runner):
    """Killed right after its first state.pt (1,024 images), the training resumes there: under both runners."""
    drill = Drill(tmp_path, f"train:after_state@{RUN}", runner)
    assert drill.killed_at == f"train:after_state {RUN}" and drill.left == []
    assert load_state(drill.workdir / RUN / "state.pt")["images_seen"] == 1024
    logged = (drill.workdir / RUN / "train.jsonl").read_bytes()
    drill.finish(reference)
    assert f"{RUN}: resuming at 1.024 kimg from state.pt" in drill.log(TRAIN_LOG)
    assert (drill.workdir / RUN / "train.jsonl").read_bytes().startswith(logged)  # the killed run's ticks
    assert tick_kimgs(drill.workdir) == tick_kimgs(reference)


def test_snakemake_killed_with_its_training_resumes_after_unlock(reference, tmp_path):
    """Snakemake dies with the training (lock and incomplete marker left): unlock, rerun, resume."""
    drill = Drill(tmp_path, f"train:after_state@{RUN}", kill="group")
    assert drill.killed_at == f"train:after_state {RUN}" and drill.left == []
    for folder in ("locks", "incomplete"):  # Snakemake died with its job: no cleanup
        assert list((drill.workdir / ".snakemake" / folder).iterdir())
    run([BIN / "snakemake", "--unlock", "--cores", "1"], drill.workdir)
    drill.finish(reference)
    assert f"{RUN}: resuming at 1.024 kimg from state.pt" in drill.log(TRAIN_LOG)


def test_training_killed_before_its_first_state_starts_over(reference, tmp_path):
    """Killed before any state.pt (two ticks logged, the first snapshot written), the training starts over."""
    drill = Drill(tmp_path, f"train:before_state@{RUN}")
    assert not (drill.workdir / RUN / "state.pt").exists() and drill.left == []
    logged = (drill.workdir / RUN / "train.jsonl").read_text().splitlines()
    assert [json.loads(line)["kimg"] for line in logged] == [0.512, 1.024]
    drill.finish(reference)
    assert "resuming" not in drill.log(TRAIN_LOG)
    assert tick_kimgs(drill.workdir) == tick_kimgs(reference)  # cut back, not appended to
    assert (drill.workdir / RUN / "train.jsonl").read_text().splitlines()[0] != logged[0]


def test_training_killed_while_writing_its_state_starts_over(reference, tmp_path):
    """Killed with its first state.pt written but not renamed: the rerun starts over and removes the file."""
    drill = Drill(tmp_path, f"atomic:before_rename@{RUN}/state.pt")
    assert len(drill.left) == 1 and drill.left[0].startswith(f"{RUN}/.state.pt.")
    assert not (drill.workdir / RUN / "state.pt").exists()
    drill.finish(reference)
    assert "resuming" not in drill.log(TRAIN_LOG)


def test_evaluation_killed_while_scoring_computes_that_point_again(reference, tmp_path):
    """Killed after sampling its first point, before scoring it: the rerun computes every point."""
    drill = Drill(tmp_path, f"evaluate:scoring@{FINAL}")
    assert drill.killed_at == f"evaluate:scoring {FINAL}/dpmpp_3s-3/metrics.json" and drill.left == []
    assert not list((drill.workdir / FINAL).glob("*/metrics.json"))
    drill.finish(reference)
    assert "evaluated dpmpp_3s-3, heun-3, heun-7\n" in drill.log(EVALUATE_LOG)


def test_evaluation_killed_after_a_point_keeps_it(reference, tmp_path):
    """Killed after its first point is complete: the rerun keeps that point and computes the other two."""
    drill = Drill(tmp_path, f"evaluate:after_point@{FINAL}")
    assert drill.killed_at == f"evaluate:after_point {FINAL}/dpmpp_3s-3/metrics.json" and drill.left == []
    assert not (drill.workdir / FINAL / "evaluated.json").exists()
    timing = drill.workdir / FINAL / "dpmpp_3s-3" / "timing.json"
    kept = timing.read_bytes()
    drill.finish(reference)
    assert "evaluated heun-3, heun-7; 1 point(s) already done" in drill.log(EVALUATE_LOG)
    assert timing.read_bytes() == kept  # not computed again


def test_evaluation_killed_while_writing_metrics_computes_that_point_again(reference, tmp_path):
    """Killed writing its second point's metrics.json: that point is computed again, its temporary file removed."""
    drill = Drill(tmp_path, f"atomic:before_rename@{FINAL}/heun-3/metrics.json")
    assert len(drill.left) == 1 and drill.left[0].startswith(f"{FINAL}/heun-3/.metrics.json.")
    drill.finish(reference)
    assert "evaluated heun-3, heun-7; 1 point(s) already done" in drill.log(EVALUATE_LOG)


def test_reference_statistics_killed_while_writing(reference, tmp_path):
    """Killed copying the statistics file from the store: Snakemake removes the job's folder and the rerun
    makes it again."""
    drill = Drill(tmp_path, f"atomic:before_rename@{OUT}/data/stats")
    assert drill.killed_at == f"atomic:before_rename {OUT}/data/stats/digits/digitsnet/native.npz"
    # Snakemake removes the output folder of a failed job, and the temporary file with it.
    assert not (drill.workdir / f"{OUT}/data/stats/digits/digitsnet").exists()
    drill.finish(reference)


def test_dataset_killed_while_writing_into_the_store(reference, tmp_path):
    """Killed writing the dataset zip into the shared store: the rerun writes it and removes the temporary
    file the kill left."""
    drill = Drill(tmp_path, "atomic:before_rename@data/store/datasets")
    assert len(drill.left) == 1 and drill.left[0].startswith("data/store/datasets/.")
    assert not list((drill.workdir / "data/store/datasets").glob("*.zip"))
    drill.finish(reference)


def test_dataset_killed_while_copying_from_the_store(reference, tmp_path):
    """Killed copying the dataset from the store to the profile's folder: the rerun takes it from the store."""
    drill = Drill(tmp_path, f"atomic:before_rename@{OUT}/data/digits.zip")
    assert len(drill.left) == 1 and drill.left[0].startswith(f"{OUT}/data/.digits.zip.")
    assert not (drill.workdir / f"{OUT}/data/digits.zip").exists()
    drill.finish(reference)
    assert "from the store" in drill.log(f"{OUT}/logs/prepare/digits.log")

"""Fault drill: SIGKILL a running Snakemake of the pipeline at several points, rerun it, and compare.

For each kill point the drill makes a fresh clone of the project (``git clone`` of the repository's
HEAD), starts ``snakemake --cores 2 --profile workflow/profiles/local`` in it (in its own process
group), waits until the point is reached, SIGKILLs the whole group (Snakemake and every job), records
what was running and what the kill left behind, unlocks, reruns Snakemake until it finishes (the
local profile has ``rerun-incomplete``) and compares the results with an uninterrupted reference run
(made by the drill in another clone, or a finished folder given with ``--reference``).

Kill points (each is detected from the jobs' shell commands in the process table and their logs):

- ``ref_stats``: a ``ref_stats`` job (FID reference statistics) is running;
- ``train``: a ``train`` job is running and has written its first tick to ``train.jsonl``;
- ``train_resume``: a ``train`` job is running and has saved its first ``state.pt``: the rerun must
  resume it from there (its log's bar reads "resumed"), not start over;
- ``evaluate_sampling``: an ``evaluate`` job's progress bar has started and is below 100%;
- ``evaluate_scoring``: an ``evaluate`` job's sampling bar reached 100% and the job is still running
  (embedding, FID/KID, writing): a short window, recorded as "missed" when the job ends first.

Checks after each rerun, with the reference (the "identical" column is the first one):

1. every ``metrics.json`` and every ``snapshots/*.safetensors`` is byte-identical to the reference's;
2. the files under data/, runs/ and reports/ are the same set as the reference's (no stray or missing
   file; Snakemake's ``.snakemake_timestamp`` markers are left out, so that a DVC-made reference
   compares), and any other file whose bytes differ is listed (some hold a random id or timings);
3. no ``.*.tmp`` file of ``fdm.atomic`` is left anywhere in the project, and ``.snakemake/incomplete``
   is empty;
4. ``snakemake --dry-run`` has nothing left to do.

Run from the project root, under ``nice`` on a shared machine:

    .venv/bin/python bench/fault_drill.py --configfile tests/workflow_tiny.yaml --out drill.md
    .venv/bin/python bench/fault_drill.py --reference /path/to/finished/run --points train
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_DIRS = ("data", "runs", "reports")
TOOL_MARKERS = {".snakemake_timestamp"}  # Snakemake's mark in a directory output; DVC makes none
JOB_LOG = re.compile(r"> (logs/(\S+?)\.log) 2>&1")
POLL_S = 0.1


# Jobs of a running Snakemake --------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A running Snakemake job, identified by its log: ``logs/train/digits-edm-s0.log`` -> train."""

    rule: str
    name: str  # the log's stem: digits-edm-s0, or the rule for jobs with one log (featnet.log)
    log: str


def process_tree(root_pid: int) -> dict[int, str]:
    """pid -> command line of ``root_pid`` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        try:
            tree[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return tree


def running_jobs(root_pid: int) -> list[Job]:
    """The jobs whose shell commands are among the descendants of ``root_pid``."""
    jobs = {}
    for command in process_tree(root_pid).values():
        match = JOB_LOG.search(command)
        if match:
            log, stem = match[1], match[2]
            rule, _, name = stem.partition("/")
            jobs[log] = Job(rule, name or rule, log)
    return sorted(jobs.values(), key=lambda job: job.log)


# Kill points ----------------------------------------------------------------------------------------


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _run_dir(job: Job, workdir: Path) -> Path:
    """A train job's run folder: ``digits-edm-s0`` -> ``runs/digits/edm/s0``."""
    dataset, variant, seed = job.name.split("-")
    return workdir / "runs" / dataset / variant / seed


def _train_ticked(job: Job, workdir: Path) -> bool:
    """A train job's run has logged its first tick (``train.jsonl``)."""
    jsonl = _run_dir(job, workdir) / "train.jsonl"
    return jsonl.is_file() and jsonl.stat().st_size > 0


def _train_saved_state(job: Job, workdir: Path) -> bool:
    """A train job's run has saved its training state (``state.pt``), so a rerun can resume it."""
    return (_run_dir(job, workdir) / "state.pt").is_file()


def _sampling(job: Job, workdir: Path, done: bool) -> bool:
    """An evaluate job's sampling bar ("heun x4: 40%|...") has started, and is (not) at 100%."""
    sampler = job.name.split("-")[4]
    log = _text(workdir / job.log)
    return f"{sampler} x" in log and ("100%" in log) == done


POINTS = {
    "ref_stats": lambda job, workdir: job.rule == "ref_stats",
    "train": lambda job, workdir: job.rule == "train" and _train_ticked(job, workdir),
    "train_resume": lambda job, workdir: job.rule == "train" and _train_saved_state(job, workdir),
    "evaluate_sampling": lambda job, workdir: job.rule == "evaluate" and _sampling(job, workdir, False),
    "evaluate_scoring": lambda job, workdir: job.rule == "evaluate" and _sampling(job, workdir, True),
}


# Running Snakemake in a clone -------------------------------------------------------------------------


@dataclass
class Clone:
    path: Path
    env: dict
    snakemake: list[str]  # the command line

    def run(self, *extra: str, log_name: str) -> tuple[int, float]:
        """Run Snakemake to the end; (exit status, seconds). Output goes to ``<clone>/<log_name>``."""
        start = time.perf_counter()
        with open(self.path / log_name, "w") as log:
            status = subprocess.run(
                [*self.snakemake, *extra], cwd=self.path, env=self.env, stdout=log, stderr=subprocess.STDOUT
            ).returncode
        return status, time.perf_counter() - start

    def start(self, log_name: str) -> subprocess.Popen:
        log = open(self.path / log_name, "w")  # noqa: SIM115 -- the child holds it; closed on kill
        process = subprocess.Popen(
            self.snakemake, cwd=self.path, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches Snakemake and every job
        )  # fmt: skip
        log.close()
        return process


def make_clone(repo: Path, dest: Path, venv: Path, configfile: Path | None, cores: int) -> Clone:
    """A fresh ``git clone`` of ``repo``'s HEAD at ``dest``, run with ``venv`` and the clone's own src/.

    ``configfile`` (a profile) is copied over the clone's params.yaml, as for DVC, so that the finished
    clone is a plain project: ``snakemake`` and ``dvc`` both see that profile without options.
    """
    subprocess.run(["git", "clone", "--quiet", str(repo), str(dest)], check=True)
    if configfile is not None:
        shutil.copyfile(configfile, dest / "params.yaml")
    args = [str(venv / "bin" / "snakemake"), "--cores", str(cores), "--profile", "workflow/profiles/local"]
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(dest / "src"),  # the clone's code, not the editable install's
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "DVC_NO_ANALYTICS": "1",
    }
    return Clone(dest, env, args)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL Snakemake's process group and any descendant that left it, then reap Snakemake."""
    stragglers = process_tree(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in stragglers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def wait_for_point(process: subprocess.Popen, workdir: Path, point: str, timeout: float) -> list[Job] | None:
    """Poll until ``point`` is reached (the running jobs then) or Snakemake exits / times out (None)."""
    condition = POINTS[point]
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        jobs = running_jobs(process.pid)
        if any(condition(job, workdir) for job in jobs):
            return jobs
        time.sleep(POLL_S)
    return None


# Checks ------------------------------------------------------------------------------------------------


def temp_files(workdir: Path) -> list[str]:
    """``fdm.atomic`` temporaries (``.<name>.<random>.tmp``) anywhere in the project but .git."""
    return sorted(
        str(path.relative_to(workdir))
        for path in workdir.rglob(".*.tmp")
        if ".git" not in path.relative_to(workdir).parts
    )


def incomplete_markers(workdir: Path) -> int:
    folder = workdir / ".snakemake" / "incomplete"
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


def locked(workdir: Path) -> bool:
    folder = workdir / ".snakemake" / "locks"
    return folder.is_dir() and any(folder.iterdir())


def output_files(workdir: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(workdir)): path
        for name in OUTPUT_DIRS
        for path in sorted((workdir / name).rglob("*"))
        if path.is_file() and path.name not in TOOL_MARKERS
    }


def is_key_artifact(name: str) -> bool:
    """The files that must be byte-identical: every metrics.json and every snapshot."""
    return name.endswith("/metrics.json") or ("/snapshots/" in name and name.endswith(".safetensors"))


@dataclass
class Comparison:
    key_files: int = 0
    key_differ: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    other_differ: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.key_files > 0 and not (self.key_differ or self.missing or self.extra)


def compare(workdir: Path, reference: Path) -> Comparison:
    ours, theirs = output_files(workdir), output_files(reference)
    result = Comparison(missing=sorted(set(theirs) - set(ours)), extra=sorted(set(ours) - set(theirs)))
    for name in sorted(set(ours) & set(theirs)):
        same = ours[name].read_bytes() == theirs[name].read_bytes()
        if is_key_artifact(name):
            result.key_files += 1
            if not same:
                result.key_differ.append(name)
        elif not same:
            result.other_differ.append(name)
    return result


RESUMED_BAR = re.compile(r"resumed:\s+\d+%\|[^|]*\|\s*([\d.]+k?)/")


def resumed_from(job: Job, workdir: Path) -> str | None:
    """Where a rerun train job resumed (its bar's first count, e.g. "5.00k" images), None if it started over."""
    match = RESUMED_BAR.search(_text(workdir / job.log))
    return match[1] if match else None


def nothing_to_do(clone: Clone) -> bool:
    status, _ = clone.run("--dry-run", log_name="drill-dryrun.log")
    return status == 0 and "Nothing to be done" in _text(clone.path / "drill-dryrun.log")


# The drill -----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    point: str
    running: str = "-"
    left: str = "-"
    had_state: dict[Job, bool] = field(default_factory=dict)  # killed train job -> state.pt at the kill
    resumed: dict[str, str | None] = field(default_factory=dict)  # train job -> resumed at (images)
    unlock: bool = False
    attempts: int = 0
    rerun_s: float = float("nan")
    finished: bool = False
    comparison: Comparison | None = None
    temp_after: list[str] = field(default_factory=list)
    incomplete_after: int = 0
    clean_dry_run: bool = False

    @property
    def passed(self) -> bool:
        return bool(
            self.finished
            and self.comparison
            and self.comparison.identical
            and not self.temp_after
            and not self.incomplete_after
            and self.clean_dry_run
            and self.resumed_where_it_could
        )

    @property
    def resumed_where_it_could(self) -> bool:
        """Every killed training that had saved a state.pt resumed from it (train_resume: at least one)."""
        saved = [job.name for job, state in self.had_state.items() if state]
        if self.point == "train_resume" and not saved:
            return False
        return all(self.resumed.get(name) for name in saved)


def drill(clone: Clone, point: str, reference: Path, timeout: float, max_reruns: int) -> Outcome:
    outcome = Outcome(point)
    process = clone.start("drill-run1.log")
    jobs = wait_for_point(process, clone.path, point, timeout)
    if jobs is None:
        if process.poll() is None:
            kill_group(process)
        outcome.running = "missed: the point was not reached (run ended or timed out)"
    else:
        kill_group(process)
        outcome.running = ", ".join(
            f"{job.rule} {job.name}" if job.name != job.rule else job.rule for job in jobs
        )
        left = temp_files(clone.path)
        outcome.left = f"{len(left)} tmp, {incomplete_markers(clone.path)} incomplete"
        outcome.had_state = {job: _train_saved_state(job, clone.path) for job in jobs if job.rule == "train"}
    outcome.unlock = locked(clone.path)
    start = time.perf_counter()
    if outcome.unlock:
        clone.run("--unlock", log_name="drill-unlock.log")
    for attempt in range(1, max_reruns + 1):
        status, _ = clone.run(log_name=f"drill-rerun{attempt}.log")
        outcome.attempts = attempt
        if status == 0:
            outcome.finished = True
            break
    outcome.rerun_s = time.perf_counter() - start
    outcome.resumed = {job.name: resumed_from(job, clone.path) for job in outcome.had_state}
    outcome.temp_after = temp_files(clone.path)
    outcome.incomplete_after = incomplete_markers(clone.path)
    outcome.clean_dry_run = nothing_to_do(clone)
    outcome.comparison = compare(clone.path, reference)
    return outcome


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| kill point | running at the kill | left by the kill | rerun s | reruns | killed trainings resumed at | "
        "identical | clean after | other files that differ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        c = o.comparison or Comparison()
        identical = "yes" if c.identical else "NO"
        identical += f" ({c.key_files} files)" if c.identical else _problems(c)
        clean = "yes" if not o.temp_after and not o.incomplete_after and o.clean_dry_run else (
            f"NO: {len(o.temp_after)} tmp, {o.incomplete_after} incomplete, dry run clean {o.clean_dry_run}"
        )  # fmt: skip
        reruns = f"{o.attempts}" + (" + unlock" if o.unlock else "") + ("" if o.finished else " FAILED")
        others = ", ".join(c.other_differ) or "none"
        resumed = (
            ", ".join(_resumption(job, state, o.resumed[job.name]) for job, state in o.had_state.items())
            or "-"
        )
        lines.append(
            f"| {o.point} | {o.running} | {o.left} | {o.rerun_s:.0f} | {reruns} | {resumed} | {identical} | "
            f"{clean} | {others} |"
        )
    return "\n".join(lines)


def _resumption(job: Job, had_state: bool, resumed_at: str | None) -> str:
    if resumed_at:
        return f"{job.name}: resumed at {resumed_at} images"
    return (
        f"{job.name}: {'STARTED OVER despite its state.pt' if had_state else 'no state.pt yet, started over'}"
    )


def _problems(c: Comparison) -> str:
    parts = []
    if c.key_differ:
        parts.append(f"differ: {', '.join(c.key_differ)}")
    if c.missing:
        parts.append(f"missing: {', '.join(c.missing)}")
    if c.extra:
        parts.append(f"extra: {', '.join(c.extra)}")
    return f" ({'; '.join(parts) or 'no metrics or snapshots found'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="Git repository to clone (its HEAD)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="virtual environment with fdm")
    parser.add_argument(
        "--configfile", type=Path, help="a params profile, copied over the clones' params.yaml"
    )
    parser.add_argument("--reference", type=Path, help="a finished, uninterrupted run of the same commit")
    parser.add_argument("--points", default=",".join(POINTS), help=f"comma-separated, of {', '.join(POINTS)}")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="where the clones go (default: a new temporary folder)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a kill point")
    parser.add_argument("--max-reruns", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--keep", action="store_true", help="keep the clones")
    args = parser.parse_args()

    points = args.points.split(",")
    unknown = [p for p in points if p not in POINTS]
    if unknown:
        parser.error(f"unknown kill point(s) {', '.join(unknown)}; expected {', '.join(POINTS)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fdm-drill-"))
    workdir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(args.repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"fault drill of {args.repo} at {commit} in {workdir}, load average {os.getloadavg()[0]:.2f}")

    def clone(name: str) -> Clone:
        return make_clone(args.repo, workdir / name, args.venv, args.configfile, args.cores)

    try:
        reference = args.reference
        if reference is None:
            ref = clone("reference")
            status, seconds = ref.run(log_name="drill-reference.log")
            if status != 0:
                print(f"the reference run failed (exit {status}); see {ref.path / 'drill-reference.log'}")
                return 1
            print(f"uninterrupted reference run: {seconds:.0f} s", flush=True)
            reference = ref.path
        outcomes = []
        for point in points:
            outcome = drill(clone(point), point, reference, args.timeout, args.max_reruns)
            outcomes.append(outcome)
            print(
                f"{point}: killed during [{outcome.running}], rerun {outcome.rerun_s:.0f} s, "
                f"{'PASS' if outcome.passed else 'FAIL'}",
                flush=True,
            )
        report = table(outcomes)
        print(f"load average {os.getloadavg()[0]:.2f}\n\n{report}")
        if args.out:
            args.out.write_text(report + "\n")
        return 0 if all(o.passed for o in outcomes) else 1
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""No-op overhead: the seconds a finished project takes to find that there is nothing to do.

Times, ``--repeats`` times each, in the project folder given:

- ``snakemake --cores 2 --profile workflow/profiles/local`` (plus ``--configfile`` if given), which must
  print "Nothing to be done";
- ``dvc status`` and ``dvc repro``, when ``dvc status`` finds the pipeline up to date (a folder
  finished by ``dvc repro``, or one finished by Snakemake whose outputs ``--dvc-commit`` records in
  dvc.lock first with ``dvc commit --force``); otherwise ``dvc status`` alone, and says why.

It refuses, in one line and with exit status 2, a folder where Snakemake would run jobs (checked
with ``--dry-run`` first), so it never starts real work. Prints the median and the range.

    .venv/bin/python bench/noop.py /path/to/finished/project [--repeats 5]
    .venv/bin/python bench/noop.py /work/study --configfile config/study.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool_env(venv: Path, project: Path) -> dict:
    return {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(project / "src"),  # the project's own code, as its jobs would run it
        "DVC_NO_ANALYTICS": "1",
    }


def run(command: list[str], project: Path, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, result


def planned_rules(output: str) -> list[str]:
    """The rules of the jobs a Snakemake dry run lists."""
    return [
        line.split()[1].rstrip(":")
        for line in output.splitlines()
        if line.startswith(("rule ", "localrule ", "checkpoint "))
    ]


def refuse(message: str) -> None:
    """One line on stderr and exit status 2, as the fdm command's errors."""
    print(f"noop: {message}", file=sys.stderr)
    sys.exit(2)


def time_command(label: str, command: list[str], project: Path, env: dict, repeats: int, expect: str) -> None:
    """Run ``command`` ``repeats`` times; each output must contain ``expect``; print the median."""
    seconds = []
    for _ in range(repeats):
        elapsed, result = run(command, project, env)
        if result.returncode != 0 or expect not in result.stdout + result.stderr:
            refuse(f"`{' '.join(command)}` did not report {expect!r} (exit {result.returncode})")
        seconds.append(elapsed)
    print(
        f"| `{label}` | {statistics.median(seconds):.2f} | {min(seconds):.2f}-{max(seconds):.2f} | {repeats} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="a finished project folder")
    parser.add_argument("--configfile", help="the profile the folder was run with (Snakemake only)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument(
        "--dvc-commit", action="store_true", help="record the outputs in dvc.lock first (dvc commit --force)"
    )
    args = parser.parse_args()

    project = args.project.resolve()
    if not (project / "Snakefile").is_file():
        refuse(f"{project} is not a project folder (no Snakefile)")
    env = tool_env(args.venv, project)
    bin_ = args.venv / "bin"
    snakemake = [str(bin_ / "snakemake"), "--cores", str(args.cores), "--profile", "workflow/profiles/local"]
    if args.configfile:
        snakemake += ["--configfile", args.configfile]

    _, dry = run([*snakemake, "--dry-run"], project, env)
    if dry.returncode != 0:
        refuse(f"snakemake --dry-run failed in {project} (exit {dry.returncode})")
    if "Nothing to be done" not in dry.stdout + dry.stderr:
        rules = planned_rules(dry.stdout)
        refuse(
            f"refusing {project}: snakemake would run {len(rules)} jobs "
            f"({', '.join(sorted(set(rules)))}); give a finished project (and its --configfile)"
        )

    print(f"{project}, load average {os.getloadavg()[0]:.2f}\n")
    print("| command | median s | range s | runs |\n|---|---|---|---|")
    time_command(
        " ".join(["snakemake", *snakemake[1:]]), snakemake, project, env, args.repeats, "Nothing to be done"
    )

    dvc = str(bin_ / "dvc")
    notes = []
    if args.dvc_commit:
        _, committed = run([dvc, "commit", "--force", "--quiet"], project, env)
        if committed.returncode != 0:
            notes.append(f"dvc commit --force failed: {(committed.stderr or committed.stdout).strip()[:200]}")
    _, status = run([dvc, "status", "--json"], project, env)
    changed = json.loads(status.stdout or "{}") if status.returncode == 0 else None
    if changed == {}:
        time_command("dvc status", [dvc, "status"], project, env, args.repeats, "up to date")
        time_command("dvc repro", [dvc, "repro"], project, env, args.repeats, "up to date")
    else:
        seconds = [run([dvc, "status"], project, env)[0] for _ in range(args.repeats)]
        print(
            f"| `dvc status` (not clean) | {statistics.median(seconds):.2f} | "
            f"{min(seconds):.2f}-{max(seconds):.2f} | {args.repeats} |"
        )
        why = (
            f"{len(changed)} stages changed"
            if changed
            else f"dvc status failed ({status.stderr.strip()[:200]})"
        )
        notes.append(f"dvc repro not timed: {why}; run the folder with dvc repro, or pass --dvc-commit")
    for note in notes:
        print(f"\n{note}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Mutation testing of the core packages with mutmut 3 (https://mutmut.readthedocs.io), not a test.

A mutant is the source with one small change (an operator, a constant, a keyword argument); the suite
should fail on it. The score of a package is the share of its mutants that a test detected (killed,
or ran into the time limit). Survivors are either gaps in the suite or equivalent mutants (nothing
observable changes); docs/benchmarks.md, "Mutation score", lists the reviewed ones.

Test selection, so that the whole run fits in an hour on two cores:

1. per module: ``PACKAGES`` maps each mutated file to the test files that exercise it; only those run;
2. fast tests only: ``-m "not slow and not fault_drill"``;
3. per function: mutmut first runs the selected tests once with every function instrumented and records
   which tests call which function; a mutant of a function runs only those tests, stopping at the first
   failure (``-x``). A function no selected test calls gets "no tests" (counted as not detected).

The run happens in a copy of the working tree (``--workdir``, default ``.mutation/``: src, tests and the
files the tests read), so the checkout itself is never mutated; mutmut writes its mutants and results
under ``<workdir>/mutants/``. Subprocesses the tests start import the mutated copy too (PYTHONPATH).

Usage: python bench/mutation.py [--only src/fdm/metrics/scores.py ...] [--max-children N]
[--workdir DIR] [--resume] [--rerun-survivors] [--mutants-from FILE] [--report-only] [--survivors FILE]
[--diffs FILE].
Prints the score per package as a Markdown table, and the wall time of the run. After new tests,
``--rerun-survivors`` runs only the earlier run's survivors again (mutmut collects the coverage of the
new tests first), so a review round costs minutes, not the hour of a full run; ``--mutants-from FILE``
runs the mutants a ``--survivors`` list names in a fresh workdir (a review round after a source edit).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Mutated file patterns (relative to the project root) -> the test files that exercise them.
PACKAGES: dict[str, dict] = {
    "diffusion": {
        "files": ["src/fdm/diffusion/*.py"],
        "tests": ["tests/test_diffusion.py", "tests/test_official_equivalence.py", "tests/test_snapshot.py"],
    },
    "sampling": {
        "files": ["src/fdm/sampling.py"],
        "tests": ["tests/test_sampling.py", "tests/test_diffusion.py", "tests/test_official_equivalence.py"],
    },
    "training": {
        "files": ["src/fdm/training/*.py"],
        "tests": [
            "tests/test_training_units.py",
            "tests/test_training_run.py",
            "tests/test_pairing.py",
            "tests/test_official_equivalence.py",
            # the one tracking test that trains: MLflow's run name, tags, params and metrics of a training
            "tests/test_tracking.py::test_training_with_tracking_logs_params_and_tick_metrics",
        ],
        "fraction": 0.2,
    },
    "report": {
        "files": ["src/fdm/report/*.py"],
        "tests": ["tests/test_report.py", "tests/test_report_speedup.py"],
        "fraction": 0.1,
    },
    "checkpoints/unpickle": {
        "files": ["src/fdm/checkpoints/unpickle.py"],
        "tests": [
            "tests/test_import_checkpoint.py",
            "tests/test_import_redteam.py",
            "tests/test_unpickle_contracts.py",
        ],
    },
    "metrics/scores+stats": {
        "files": ["src/fdm/metrics/scores.py", "src/fdm/metrics/stats.py"],
        "tests": [
            "tests/test_metrics_scores.py",
            "tests/test_metrics_floor.py",
            "tests/test_metrics_digits.py",
        ],
    },
}
FAST_ONLY = "not slow and not fault_drill"
# Tests that measure a resource of the run rather than a behaviour: mutmut's instrumented source (a
# trampoline around every function) inflates them, so the clean run would fail and mutmut stop.
DESELECT = [
    "tests/test_import_redteam.py::test_the_harness_stayed_small",  # the red-team process's peak RSS < 1 GiB
]
# What the selected tests read besides src/ and tests/ (mutmut copies tests/ and pyproject.toml itself).
ALSO_COPY = ["params.yaml", "Snakefile", "dvc.yaml", "config", "workflow"]
# mutmut's exit-code classes that count as detected; "no tests" and "survived" do not.
DETECTED = {"killed", "timeout", "segfault"}
NOT_COUNTED = {"skipped", "not checked", "check was interrupted by user"}


def package_of(path: str) -> str | None:
    for name, spec in PACKAGES.items():
        if any(fnmatch.fnmatch(path, pattern) for pattern in spec["files"]):
            return name
    return None


def selection(only: list[str]) -> tuple[list[str], list[str]]:
    """The file patterns to mutate and the test files to run, for all packages or the ``only`` files."""
    if not only:
        files = [p for spec in PACKAGES.values() for p in spec["files"]]
        tests = [t for spec in PACKAGES.values() for t in spec["tests"]]
        return files, sorted(set(tests))
    tests = []
    for path in only:
        package = package_of(path)
        if package is None:
            sys.exit(f"mutation: {path} is in no package of PACKAGES ({', '.join(PACKAGES)})")
        tests += PACKAGES[package]["tests"]
    return list(only), sorted(set(tests))


def toml_value(value) -> str:
    return json.dumps(value)  # strings, lists of strings, numbers: JSON spells them as TOML does


def prepare(workdir: Path, files: list[str], tests: list[str], isolation: str, resume: bool) -> None:
    """Copy the working tree's src, tests and the files the tests read into ``workdir``; configure mutmut."""
    if workdir.exists() and not resume:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ["src", "tests", *ALSO_COPY]:
        source, target = ROOT / name, workdir / name
        if source.is_dir():
            shutil.copytree(
                source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        elif source.is_file():
            shutil.copy2(source, target)
    settings = {
        "source_paths": ["src"],
        "only_mutate": files,
        "also_copy": ALSO_COPY,
        "pytest_add_cli_args_test_selection": [
            *tests,
            "-m",
            FAST_ONLY,
            *(arg for node in DESELECT for arg in ("--deselect", node)),
        ],
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        "process_isolation": isolation,
        "use_git_change_detection": False,
    }
    text = (ROOT / "pyproject.toml").read_text()
    if "[tool.mutmut]" in text:
        sys.exit("mutation: pyproject.toml has a [tool.mutmut] section; this script writes its own")
    lines = ["", "[tool.mutmut]", *(f"{k} = {toml_value(v)}" for k, v in settings.items())]
    (workdir / "pyproject.toml").write_text(text + "\n".join(lines) + "\n")


def listed_mutants(path: Path) -> list[str]:
    """The mutant names in ``path``: the backquoted name of each line of a ``--survivors`` list
    (``- package: `name` (status)``), or each non-empty line as it stands."""
    if not path.is_file():
        sys.exit(f"mutation: {path}: no such file")
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            names.append(line.split("`")[1] if line.count("`") >= 2 else line)
    return names


def changed_sources(workdir: Path, files: list[str]) -> list[str]:
    """The mutated source files whose text differs from the copy an earlier run left in ``workdir``."""
    return [
        relative
        for path in sorted(ROOT.glob("src/**/*.py"))
        if any(fnmatch.fnmatch(relative := path.relative_to(ROOT).as_posix(), pattern) for pattern in files)
        and (workdir / relative).is_file()
        and (workdir / relative).read_bytes() != path.read_bytes()
    ]


def in_sample(name: str, share: float) -> bool:
    """Whether mutant ``name`` is in a ``share`` sample: the SHA-256 of its name, read as a number in
    [0, 1), is below ``share``. A mutant's membership depends on its name alone, so a smaller share is a
    subset of a larger one and editing one file leaves the other files' samples as they were."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64 < share


def sample_mutants(files: list[str], fraction: float | None) -> list[str]:
    """mutmut's names of a seeded share of each file's mutants (``in_sample``): ``fraction``, or the
    package's own (``PACKAGES[...]["fraction"]``, default all). Empty when that is every mutant of every file."""
    from mutmut.mutation.file_mutation import mutate_file_contents

    names, every = [], True
    for path in sorted(ROOT.glob("src/**/*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if not any(fnmatch.fnmatch(relative, pattern) for pattern in files):
            continue
        share = fraction if fraction is not None else PACKAGES[package_of(relative)].get("fraction", 1.0)
        # mutmut names a package's __init__.py mutants after the package (fdm.diffusion.x_formulation__mutmut_1)
        module = relative.removeprefix("src/").removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        found = [
            f"{module}.{name}"
            for name in sorted(mutate_file_contents(relative, path.read_text()).mutant_names)
        ]
        chosen = [name for name in found if in_sample(name, share)] if share < 1 else found
        every = every and len(chosen) == len(found)
        names += chosen
    return [] if every else names


def run_mutmut(workdir: Path, max_children: int, mutants: list[str]) -> int:
    # It must exist before Python starts: a missing path entry is cached as "nothing to import there".
    (workdir / "mutants" / "src").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # The tests' subprocesses (`fdm ...`) import the mutated copy; mutmut's mutant choice is in the environment.
    env["PYTHONPATH"] = os.pathsep.join([str(workdir / "mutants" / "src"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    # One thread per test process: max_children of them share the cores. And a forked worker of a
    # process with a multi-thread OpenMP pool hangs in its first parallel region (libgomp is not
    # fork-safe), so the tests' own thread count (tests/conftest.py) is 1 too.
    env.setdefault("OMP_NUM_THREADS", "1")
    env["FDM_TEST_THREADS"] = "1"
    # And tqdm's write lock is not shared across the forked workers (tests/conftest.py).
    env["FDM_TEST_FORKED"] = "1"
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *mutants]
    return subprocess.run(command, cwd=workdir, env=env).returncode


def results(workdir: Path) -> dict[str, dict[str, list[str]]]:
    """package -> status -> mutant names, from mutmut's per-file ``.meta`` files."""
    from mutmut.stats import status_by_exit_code

    found: dict[str, dict[str, list[str]]] = {}
    for meta in sorted((workdir / "mutants" / "src").rglob("*.py.meta")):
        source = meta.relative_to(workdir / "mutants").as_posix().removesuffix(".meta")
        package = package_of(source)
        if package is None:
            continue
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        for mutant, code in exit_codes.items():
            status = status_by_exit_code[code]
            found.setdefault(package, {}).setdefault(status, []).append(mutant)
    return found


def wilson(detected: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion detected / n (for a sampled package's score)."""
    p = detected / n
    centre, half = p + z * z / (2 * n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def table(found: dict[str, dict[str, list[str]]]) -> str:
    """Per package: mutants run (of all it has), their outcomes, and the score, with its 95% interval
    where only a sample of the package's mutants ran."""
    rows = [
        "| package | mutants run (of) | killed | timeout | survived | no tests | other | score (95% interval) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for package in PACKAGES:
        if package not in found:
            continue
        by_status = {status: len(names) for status, names in found[package].items()}
        counted = sum(n for s, n in by_status.items() if s not in NOT_COUNTED)
        total = counted + by_status.get("not checked", 0)
        detected = sum(n for s, n in by_status.items() if s in DETECTED)
        other = counted - detected - by_status.get("survived", 0) - by_status.get("no tests", 0)
        score = f"{detected / counted:.1%}" if counted else "-"
        if counted and counted < total:
            low, high = wilson(detected, counted)
            score += f" ({low:.1%} to {high:.1%})"
        rows.append(
            f"| {package} | {counted} ({total}) | {by_status.get('killed', 0)} | {by_status.get('timeout', 0)} | "
            f"{by_status.get('survived', 0)} | {by_status.get('no tests', 0)} | {other} | {score} |"
        )
    return "\n".join(rows)


def survivors(found: dict[str, dict[str, list[str]]]) -> str:
    lines = []
    for package, by_status in found.items():
        for status in ("survived", "no tests", "suspicious"):
            for name in sorted(by_status.get(status, [])):
                lines.append(f"- {package}: `{name}` ({status})")
    return "\n".join(lines)


def diffs(workdir: Path, names: list[str]) -> str:
    """Each named mutant's change as a unified diff of its function (mutmut's own rendering), for review."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    def one(name: str) -> str:
        try:
            return f"```diff\n{get_diff_for_mutant(name)}\n```"
        except (FileNotFoundError, ValueError) as error:  # its function left the source since the run
            return f"(no diff: {error}; run `make mutation` again for a current one)"

    here = Path.cwd()
    os.chdir(workdir)  # mutmut finds a mutant's file under ./mutants
    try:
        return "\n\n".join(f"## {name}\n\n{one(name)}" for name in names)
    finally:
        os.chdir(here)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", default=[], help="a source file to mutate (repeatable)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".mutation")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--fraction",
        type=float,
        help="run this share of each file's mutants (by a hash of its name, see in_sample); default: each package's own share in PACKAGES",
    )
    parser.add_argument("--full", action="store_true", help="run every mutant (hours on 2 cores)")
    parser.add_argument(
        "--isolation",
        choices=("fork", "forkserver"),
        default="fork",
        help="mutmut's process_isolation: fork (3x faster here) or forkserver (if a run ever hangs in torch)",
    )
    parser.add_argument("--resume", action="store_true", help="keep the workdir's mutants and results")
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="run an earlier run's survivors and 'no tests' mutants again against the current tests",
    )
    parser.add_argument(
        "--mutants-from",
        type=Path,
        help="run exactly the mutants named in this file (a --survivors list of an earlier run, or one name a line)",
    )
    parser.add_argument("--report-only", action="store_true", help="print the table of an earlier run")
    parser.add_argument("--survivors", type=Path, help="also write the surviving mutants' names here")
    parser.add_argument("--diffs", type=Path, help="also write each surviving mutant's diff here (Markdown)")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    elapsed = None
    if not args.report_only:
        files, tests = selection(args.only)
        if args.rerun_survivors:
            changed = changed_sources(workdir, files)
            if changed:
                sys.exit(
                    f"mutation: {changed[0]} changed since the earlier run, so mutmut would make its mutants "
                    "anew and drop their results; run `make mutation` again"
                )
            packages = {package_of(pattern) for pattern in files}
            earlier = {k: v for k, v in results(workdir).items() if k in packages}  # before prepare
            again = ("survived", "no tests", "timeout")  # a timeout too: a hang is not a kill
            mutants = [n for by in earlier.values() for s in again for n in by.get(s, [])]
            sampled = set(sample_mutants(files, args.fraction))  # and any of the sample not run yet
            mutants += [n for by in earlier.values() for n in by.get("not checked", []) if n in sampled]
            if not mutants:
                sys.exit(f"mutation: no survivors under {workdir / 'mutants'} to run again")
        elif args.mutants_from is not None:
            mutants = listed_mutants(args.mutants_from)
            if not mutants:
                sys.exit(f"mutation: {args.mutants_from} names no mutant")
        prepare(workdir, files, tests, args.isolation, args.resume or args.rerun_survivors)
        start = time.perf_counter()
        if not (args.rerun_survivors or args.mutants_from):
            mutants = [] if args.full else sample_mutants(files, args.fraction)
        code = run_mutmut(workdir, args.max_children, mutants)
        elapsed = time.perf_counter() - start
        if code != 0:
            sys.exit(f"mutation: mutmut exited with status {code}")
    found = results(workdir)
    if not found:
        sys.exit(f"mutation: no mutmut results under {workdir / 'mutants'}")
    print(table(found))
    if elapsed is not None:
        print(f"\nmutmut run: {elapsed / 60:.1f} min with {args.max_children} worker(s)")
    listed = survivors(found)
    if args.survivors is not None:
        args.survivors.write_text(listed + "\n")
    if args.diffs is not None:
        names = [
            n for by_status in found.values() for s in ("survived", "no tests") for n in by_status.get(s, [])
        ]
        args.diffs.write_text(diffs(workdir, sorted(names)) + "\n")
    print(f"\nNot detected (inspect one with `cd {workdir} && mutmut show NAME`):\n{listed or '(none)'}")


if __name__ == "__main__":
    main()

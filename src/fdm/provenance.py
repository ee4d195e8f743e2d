"""Which code made a result: each stage's source files, their digest, and the version block of records.

A stage (a kind of pipeline job) is computed by a known set of the package's modules, ``SOURCES``. Their
*source digest* is a SHA-256 over each file's syntax tree with docstrings removed (``ast.dump`` keeps
neither comments, line numbers nor layout), so an edit of the docs or the formatting leaves it unchanged
and any change of what the code does changes it. Both workflow runners rerun a stage's jobs exactly when
its digest changes: ``fdm code-digest`` writes it to ``data/code/<stage>.json``, which the stage's jobs
depend on (docs/pipeline.md, "Code changes").

Every record a job writes carries ``code_version(stage)``: the package version, the git commit of the
checkout the package runs from, whether its source (``src/fdm``) differs from that commit, and the
source digest. Outside a git checkout (an unpacked release, a wheel) the commit is ``"unknown"`` and
nothing fails. The modules that only name, place or check things (``HELPERS``) belong to no stage: their
changes do not rerun jobs (an edit of them that changes results is a change of the profile's meaning, or
wants ``--forcerun``).

Torch-free and standard library only: the Snakefile computes the digests when it loads.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
"""The ``fdm`` package these modules run from."""

SOURCES: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),
    "feature_net": ("metrics/__init__.py", "metrics/featnet.py", "metrics/features.py", "data", "distributed.py"),
    "ref_stats": ("metrics", "data", "distributed.py"),
    "train": ("training", "diffusion", "nets", "data", "snapshot.py", "distributed.py", "seeding.py"),
    "evaluate": (
        "generation", "sampling.py", "samples.py", "metrics", "snapshot.py", "diffusion", "nets",
        "distributed.py",
    ),
    "import_checkpoint": ("checkpoints", "diffusion", "nets", "snapshot.py", "data/download.py"),
    "report": ("report", "paper_results.py", "metrics"),  # metrics: the floor (FID of real images)
    "track": ("tracking",),
}  # fmt: skip
"""Each stage's source: files and packages (folders) relative to the ``fdm`` package."""

STAGES = tuple(SOURCES)

COMMAND_STAGES = {
    "prepare-dataset": "prepare", "feature-net": "feature_net", "ref-stats": "ref_stats", "train": "train",
    "evaluate": "evaluate", "import-checkpoint": "import_checkpoint", "report": "report", "track": "track",
}  # fmt: skip
"""The `fdm` command of each stage's jobs."""

HELPERS = (
    "__init__.py", "names.py", "paths.py", "errors.py", "atomic.py", "digest.py", "faults.py",
    "params_file.py", "config.py", "store.py", "provenance.py", "cli.py", "commands.py", "jobs", "tracking",
    "anatomy.py",
)  # fmt: skip
"""Modules in no stage's digest (but ``tracking``, ``track``'s own): they name, place, check or log results,
or compute only the docs' tables (``anatomy``), never a pipeline record."""

UNKNOWN = "unknown"


def check_stage(stage: str) -> None:
    if stage not in SOURCES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")


def source_files(stage: str, package: Path = PACKAGE) -> list[Path]:
    """The ``.py`` files of ``stage``'s source, sorted."""
    check_stage(stage)
    files = set()
    for entry in SOURCES[stage]:
        path = package / entry
        files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return sorted(files)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of its module, classes and functions removed (a body left empty keeps a
    ``pass``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


def code_sha256(text: str) -> str:
    """SHA-256 of Python source as its syntax tree without docstrings: comments, docstrings, blank lines
    and formatting do not change it."""
    tree = _without_docstrings(ast.parse(text))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


@functools.cache
def source_digest(stage: str, package: Path = PACKAGE) -> str:
    """The source digest of ``stage``: SHA-256 over (relative path, ``code_sha256``) of its files."""
    entries = [
        (path.relative_to(package).as_posix(), code_sha256(path.read_text(encoding="utf-8")))
        for path in source_files(stage, package)
    ]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def digest_record(stage: str) -> dict:
    """What ``fdm code-digest`` writes for ``stage``: its modules and their source digest (no commit, so
    that a commit touching other files leaves the file, and the stage's jobs, as they are)."""
    return {
        "stage": stage,
        "modules": [f"fdm/{p.relative_to(PACKAGE).as_posix()}" for p in source_files(stage)],
        "source_sha256": source_digest(stage),
    }


def _git(*args: str, cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@functools.cache
def git_state(package: Path = PACKAGE) -> tuple[str, bool | None]:
    """(commit, dirty) of the git checkout ``package`` lies in as ``<checkout>/src/fdm``; (``"unknown"``,
    None) when it lies in none (an installed wheel, an unpacked archive). Dirty: source files under src/fdm
    (``.py``, and the schema) differ from the commit, or are not in it."""
    root = package.parent.parent
    top = _git("rev-parse", "--show-toplevel", cwd=package)
    if top is None or Path(top).resolve() != root.resolve():
        return UNKNOWN, None
    commit = _git("rev-parse", "HEAD", cwd=root)
    if commit is None:  # a repository without commits
        return UNKNOWN, None
    status = _git(
        "status", "--porcelain", "--untracked-files=all", "--", str(package.relative_to(root)), cwd=root
    )
    if status is None:
        return commit, None
    changed = [line[3:] for line in status.splitlines()]
    return commit, any(path.endswith((".py", ".yaml")) for path in changed)


def package_version() -> str:
    try:
        return metadata.version("fdm-pipeline")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def code_version(stage: str) -> dict:
    """The version block of a record made by ``stage``: package version, commit, dirty, source digest."""
    commit, dirty = git_state()
    return {
        "stage": stage,
        "package": package_version(),
        "commit": commit,
        "dirty": dirty,
        "source_sha256": source_digest(stage),
    }


def uncovered_modules(stage: str) -> list[str]:
    """Modules of the package loaded in this process that neither ``stage``'s source nor ``HELPERS``
    cover: code that computed part of the result but is not in the digest."""
    covered = set(source_files(stage))
    helpers = [PACKAGE / h for h in HELPERS if not (stage == "track" and h == "tracking")]
    missing = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not name.startswith("fdm") or file is None:
            continue
        path = Path(file).resolve()
        if path in covered or any(path == h or h in path.parents for h in helpers):
            continue
        if PACKAGE in path.parents:
            missing.append(path.relative_to(PACKAGE).as_posix())
    return sorted(missing)


def check_loaded_modules(stage: str) -> None:
    """Raise if this process loaded a module that ``stage``'s digest does not cover. With
    ``FDM_CHECK_SOURCES=1`` (the tests' pipeline runs) every stage command checks this when it ends, so that
    ``SOURCES`` cannot fall behind the code."""
    missing = uncovered_modules(stage)
    if missing:
        raise RuntimeError(f"stage {stage} ran {', '.join(missing)}, which provenance.SOURCES does not list")

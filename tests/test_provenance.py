"""Which code made a record: source digests that see code but not comments, and the version block.

The digest of a stage changes when what its code does changes, and only then; the version block names the
commit of a git checkout and says "unknown" elsewhere without failing. Which files each stage's digest
covers is checked where the jobs really run: the pipeline tests set ``FDM_CHECK_SOURCES=1``, under which a
job that loaded a module its stage does not list fails (tests/test_workflow_run.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fdm import provenance
from fdm.provenance import code_sha256, source_digest

ROOT = Path(__file__).resolve().parents[1]

BASE = '''"""A module."""

def sigma_of(t):
    """EDM's sigma(t) = t."""
    return t  # the identity
'''


@pytest.mark.parametrize(
    "edited, same",
    [
        (BASE.replace("# the identity", "# another comment"), True),
        (BASE.replace('"""EDM\'s sigma(t) = t."""', '"""Rewritten docs."""'), True),
        (BASE.replace("    return t", "\n\n    return (t)"), True),  # layout and redundant parentheses
        (BASE.replace('"""A module."""\n', ""), True),  # the module docstring removed
        (BASE.replace("return t", "return 2 * t"), False),
        (BASE.replace("sigma_of", "sigma_at"), False),
        (BASE + "\nSCALE = 1\n", False),
    ],
)
def test_the_source_digest_sees_code_not_comments_docstrings_or_layout(edited, same):
    assert (code_sha256(edited) == code_sha256(BASE)) is same


def test_a_function_that_is_only_a_docstring_still_parses_the_same_as_pass():
    assert code_sha256('def f():\n    """Only docs."""\n') == code_sha256("def f():\n    pass\n")


def package_copy(tmp_path: Path) -> Path:
    """The fdm package alone in a folder that is no git checkout (an unpacked release)."""
    target = tmp_path / "release" / "src" / "fdm"
    shutil.copytree(provenance.PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_each_stage_digest_changes_with_its_own_sources_only(tmp_path):
    package = package_copy(tmp_path)
    before = {stage: source_digest(stage, package) for stage in provenance.STAGES}
    sampling = package / "sampling.py"
    sampling.write_text(sampling.read_text() + "\n# a comment changes nothing\n")
    source_digest.cache_clear()
    assert {stage: source_digest(stage, package) for stage in provenance.STAGES} == before
    sampling.write_text(sampling.read_text() + "\n_CHANGED = True\n")
    source_digest.cache_clear()
    after = {stage: source_digest(stage, package) for stage in provenance.STAGES}
    assert {s for s in provenance.STAGES if after[s] != before[s]} == {"evaluate"}
    loop = package / "training" / "loop.py"
    loop.write_text(loop.read_text() + "\n_CHANGED = True\n")
    source_digest.cache_clear()
    again = {stage: source_digest(stage, package) for stage in provenance.STAGES}
    assert {s for s in provenance.STAGES if again[s] != after[s]} == {"train"}
    source_digest.cache_clear()


def test_every_module_of_the_package_is_a_stage_source_or_a_helper():
    stages = set().union(*(provenance.source_files(stage) for stage in provenance.STAGES))
    helpers = [provenance.PACKAGE / h for h in provenance.HELPERS]
    loose = [
        path.relative_to(provenance.PACKAGE).as_posix()
        for path in provenance.PACKAGE.rglob("*.py")
        if path not in stages and not any(path == h or h in path.parents for h in helpers)
    ]
    assert loose == []


def version_in(package: Path) -> dict:
    """``code_version("evaluate")`` as a process importing ``package`` computes it."""
    code = "import json; from fdm.provenance import code_version; print(json.dumps(code_version('evaluate')))"
    result = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(package.parent), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_outside_a_git_checkout_the_commit_is_unknown_and_nothing_fails(tmp_path):
    version = version_in(package_copy(tmp_path))
    assert version["commit"] == "unknown" and version["dirty"] is None
    assert version["source_sha256"] == source_digest("evaluate")


def test_in_a_git_checkout_the_commit_and_local_changes_are_recorded(tmp_path):
    package = package_copy(tmp_path)
    checkout = package.parent.parent
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "release"]):
        subprocess.run([*git, *args], cwd=checkout, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout
    clean = version_in(package)
    assert clean["commit"] == head.strip() and clean["dirty"] is False
    (checkout / "README").write_text("outside the package: still clean\n")
    assert version_in(package)["dirty"] is False
    (package / "sampling.py").write_text((package / "sampling.py").read_text() + "\n# edited\n")
    assert version_in(package)["dirty"] is True


def test_a_module_outside_the_stage_is_caught():
    import fdm.report.tables  # noqa: F401 -- loaded, as a training job must never load it

    assert "report/tables.py" in provenance.uncovered_modules("train")
    assert "report/tables.py" not in provenance.uncovered_modules("report")
    with pytest.raises(RuntimeError, match="report/tables.py"):
        provenance.check_loaded_modules("train")


def test_code_digest_command_writes_the_stage_record(tmp_path):
    from click.testing import CliRunner

    from fdm.cli import main

    dest = tmp_path / "evaluate.json"
    result = CliRunner().invoke(main, ["code-digest", "--stage", "evaluate", "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    record = json.loads(dest.read_text())
    assert record["source_sha256"] == source_digest("evaluate") and "fdm/sampling.py" in record["modules"]
    assert "commit" not in record  # a commit of other files must not rerun the stage
    bad = CliRunner().invoke(main, ["code-digest", "--stage", "sampling", "--dest", str(dest)])
    assert bad.exit_code == 2 and "unknown stage 'sampling'" in bad.output

"""The mutation run's own bookkeeping (bench/mutation.py): its sample and its guard against stale results.

Neither needs mutmut: the sample is a hash of the mutant's name, the guard a comparison of files.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("bench_mutation", ROOT / "bench" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_smaller_sample_is_part_of_a_larger_one(mutation):
    """Membership depends on the name alone, so the 10% sample is inside the 20% one, and the share of
    names drawn is near the share asked for (10,000 names: a binomial standard deviation of 0.4%)."""
    names = [f"fdm.report.tables.x_rows__mutmut_{i}" for i in range(10_000)]
    small = {n for n in names if mutation.in_sample(n, 0.1)}
    large = {n for n in names if mutation.in_sample(n, 0.2)}
    assert small <= large
    assert abs(len(small) / len(names) - 0.1) < 0.015
    assert abs(len(large) / len(names) - 0.2) < 0.02
    assert not any(mutation.in_sample(n, 0.0) for n in names)


def test_a_rerun_refuses_a_source_changed_since_the_run(mutation, tmp_path):
    """mutmut makes a changed file's mutants anew and drops their results, so a rerun of survivors over
    a changed source would report a partial package as if it were whole: the guard names the file."""
    relative = "src/fdm/report/tables.py"
    copy = tmp_path / relative
    copy.parent.mkdir(parents=True)
    shutil.copy2(ROOT / relative, copy)
    assert mutation.changed_sources(tmp_path, ["src/fdm/report/*.py"]) == []
    copy.write_text(copy.read_text() + "\n# edited\n")
    assert mutation.changed_sources(tmp_path, ["src/fdm/report/*.py"]) == [relative]
    assert mutation.changed_sources(tmp_path, ["src/fdm/sampling.py"]) == []


def test_a_survivors_list_names_its_mutants(mutation, tmp_path):
    """``--mutants-from`` reads back what ``--survivors`` writes, and plain names one a line."""
    listed = tmp_path / "survivors.md"
    listed.write_text(
        "- training: `fdm.training.loop.x_train__mutmut_8` (survived)\n\nfdm.report.tables.x_rows__mutmut_3\n"
    )
    assert mutation.listed_mutants(listed) == [
        "fdm.training.loop.x_train__mutmut_8",
        "fdm.report.tables.x_rows__mutmut_3",
    ]

"""Editing a profile takes effect in both runners with no other step, and reruns exactly the jobs that read
the edited entry: `dvc exp run -S key=value` and Snakemake (after the same edit of the file) run the same
jobs, and leave the same files.

The runners are real; the `fdm` they call is a stand-in (tests/stand_in_fdm.py) whose outputs are digests
of what the real command's outputs depend on, so a whole pipeline runs in seconds and each job's command
line is logged. The light jobs (train-config, eval-config) are the real commands. A real run with a real
`dvc exp run -S` edit is in tests/test_workflow_run.py.

What "the same jobs" means: the jobs that compute (train, evaluate, ref-stats, feature-net) are the same
set in both; a configuration job (prepare-dataset, train-config, eval-config) that DVC reruns because its
params section changed, where Snakemake's per-job params did not, rewrites the same bytes (so nothing
downstream of it runs in either).
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow_equivalence import BIN, ROOT, tool_env, workflow_copy

HEAVY = ("train", "evaluate", "ref-stats", "feature-net")
LIGHT = ("prepare-dataset", "train-config", "eval-config")


@pytest.fixture
def stand_in(tmp_path) -> Path:
    """A folder with an executable `fdm` that runs tests/stand_in_fdm.py with this interpreter."""
    folder = tmp_path / "stand-in"
    folder.mkdir()
    script = folder / "fdm"
    script.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                      "runpy.run_module('stand_in_fdm', run_name='__main__')\n")  # fmt: skip
    script.chmod(0o755)
    return folder


class Copy:
    """One project copy driven by one runner, its stand-in's command log, and its files' digests."""

    def __init__(self, root: Path, profile: dict, stand_in: Path):
        self.root = root
        root.mkdir(parents=True)
        (root / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
        workflow_copy(root, root / "profile.yaml")
        for args in (["config", "user.email", "t@t"], ["config", "user.name", "t"], ["add", "-A"],
                     ["commit", "-qm", "profile"]):  # fmt: skip
            subprocess.run(["git", *args], cwd=root, check=True)
        self.log = root / "invocations.log"
        self.env = {**tool_env(), "PATH": f"{stand_in}{os.pathsep}{tool_env()['PATH']}",
                    "FDM_STAND_IN_LOG": str(self.log), "PYTHONPATH": str(root / "src")}  # fmt: skip

    def run(self, *args) -> list[str]:
        """Run a command in the copy; returns the fdm jobs it ran (their command lines, without `fdm`)."""
        before = self.log.read_text().splitlines() if self.log.exists() else []
        result = subprocess.run(
            [str(a) for a in args], cwd=self.root, env=self.env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return sorted(self.log.read_text().splitlines()[len(before) :])

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def files(self) -> dict[str, str]:
        """SHA-256 of every pipeline file (data/, out/), not the runners' own (.gitignore,
        .snakemake_timestamp, Snakemake's logs)."""
        return {
            str(path.relative_to(self.root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in ("data", "out")
            for path in sorted((self.root / folder).rglob("*"))
            if path.is_file()
            and not path.name.startswith(".")
            and "logs" not in path.relative_to(self.root).parts
        }


def jobs(commands: list[str], names: tuple[str, ...]) -> list[str]:
    return [c for c in commands if c.split()[0] in names]


def dvc_edit(copy_: Copy, overrides: list[str]) -> list[str]:
    return copy_.run(BIN / "dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)])


def snakemake_edit(copy_: Copy, edit) -> tuple[dict[str, int], list[str]]:
    """Apply ``edit`` to params.yaml, then the dry run's job count per rule and the jobs of the real run."""
    params = copy_.params()
    edit(params)
    (copy_.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return snakemake_plan_and_run(copy_)


def snakemake_plan_and_run(copy_: Copy, *args) -> tuple[dict[str, int], list[str]]:
    """The dry run's job count per rule, then the jobs of the real run."""
    out = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--cores", "1", "--quiet", "rules", *args], cwd=copy_.root,
        env=copy_.env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    counts = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit() and words[0] != "total":
            counts[words[0]] = int(words[1])
    return counts, copy_.run(BIN / "snakemake", "--cores", "1", *args)


def models(params: dict) -> list[tuple[str, str, int]]:
    return [(d, v, s) for d in params["datasets"] for v in params["variants"] for s in params["train_seeds"]]


def train(ms, profile="tiny") -> list[str]:
    r = f"out/{profile}/runs"
    return sorted(
        f"train --config {r}/{d}/{v}/s{s}/train.json --data out/{profile}/data/{d}.zip --outdir {r}/{d}/{v}/s{s}"
        f" --gpus 0 --restart-on-change --record {r}/{d}/{v}/s{s}/trained.json"
        for d, v, s in ms
    )


def evaluate(ms, kimgs, profile="tiny") -> list[str]:
    r = f"out/{profile}/runs"
    return sorted(
        f"evaluate --config {r}/{d}/eval/{k}.json --run {r}/{d}/{v}/s{s} --gpus 0"
        f" --record {r}/{d}/{v}/s{s}/eval/{k}/evaluated.json"
        for d, v, s in ms
        for k in kimgs
    )


def ref_stats(dataset: str, profile="tiny") -> str:
    return (
        f"ref-stats --params params.yaml --dataset {dataset} --extractor digitsnet"
        f" --dest out/{profile}/data/stats/{dataset}/digitsnet"
    )


def set_key(path: str, value):
    def edit(params: dict) -> None:
        *parents, last = path.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = copy.deepcopy(value)

    return edit


def both(*edits):
    def edit(params: dict) -> None:
        for one in edits:
            one(params)

    return edit


@pytest.mark.slow
def test_edits_rerun_the_same_jobs_in_both_runners(tmp_path, stand_in):
    profile = yaml.safe_load((ROOT / "tests" / "workflow_tiny.yaml").read_text())
    profile["snapshot_kimg"] = [2]
    smk = Copy(tmp_path / "snakemake", profile, stand_in)
    dvc = Copy(tmp_path / "dvc", profile, stand_in)
    first = smk.run(BIN / "snakemake", "--cores", "1")
    assert first == dvc.run(BIN / "dvc", "repro")
    assert jobs(first, HEAVY) == sorted(
        train(models(profile))
        + evaluate(models(profile), [2])
        + [ref_stats("digits"), "feature-net --extractor digitsnet --dest data/networks/digitsnet"]
    )  # fmt: skip
    assert smk.files() == dvc.files()

    seeds_01 = models({**profile, "train_seeds": [0, 1]})
    vp = [("digits", "vp", s) for s in (0, 1)]
    digits2 = [("digits2", v, s) for v in ("edm", "fdm_edm", "vp") for s in (0, 1)]
    all_digits = models({**profile, "train_seeds": [0, 1], "variants": ["edm", "fdm_edm", "vp"]})
    new_dataset = {"source": "digits", "raw": None, "resolution": 16, "channels": 1, "cond": True}
    cases = [
        # A snapshot milestone: every model retrains (bit for bit, plus the new snapshot) and is evaluated.
        (["snapshot_kimg=[1,2]"], set_key("snapshot_kimg", [1, 2]),
         train(models(profile)) + evaluate(models(profile), [1, 2])),
        # An NFE point of the study: the final snapshot's evaluations only.
        (["eval.nfe_study.heun=[3,5,7]"], set_key("eval.nfe_study.heun", [3, 5, 7]),
         evaluate(models(profile), [2])),
        # A training seed: the new models only.
        (["train_seeds=[0,1]"], set_key("train_seeds", [0, 1]),
         train(seeds_01[1::2]) + evaluate(seeds_01[1::2], [1, 2])),
        # A variant: its models only.
        (["variants=[edm,fdm_edm,vp]"], set_key("variants", ["edm", "fdm_edm", "vp"]),
         train(vp) + evaluate(vp, [1, 2])),
        # A dataset: its statistics and models only.
        (["+datasets.digits2={source:digits,raw:null,resolution:16,channels:1,cond:true}",
          "+eval.main.digits2={sampler:heun,nfe:7}"],
         both(set_key("datasets.digits2", new_dataset), set_key("eval.main.digits2", {"sampler": "heun", "nfe": 7})),
         [ref_stats("digits2")] + train(digits2) + evaluate(digits2, [1, 2])),
        # A dataset's entry: its models retrain; the zip, which cond does not change for digits, does not.
        (["datasets.digits.cond=false"], set_key("datasets.digits.cond", False),
         train(all_digits) + evaluate(all_digits, [1, 2])),
    ]  # fmt: skip
    for overrides, edit, expected in cases:
        files_before = dvc.files()
        ran_dvc = dvc_edit(dvc, overrides)
        plan, ran_smk = snakemake_edit(smk, edit)
        assert smk.params() == dvc.params(), overrides
        assert jobs(ran_smk, HEAVY) == jobs(ran_dvc, HEAVY) == sorted(expected), overrides
        assert set(jobs(ran_smk, LIGHT)) <= set(jobs(ran_dvc, LIGHT)), overrides
        for rule in (
            "train",
            "evaluate",
            "ref_stats",
            "train_config",
            "eval_config",
        ):  # the dry run announced it
            assert plan.get(rule, 0) == sum(c.startswith(f"{rule.replace('_', '-')} ") for c in ran_smk), rule
        files_after = dvc.files()
        assert smk.files() == files_after, overrides
        for command in set(jobs(ran_dvc, LIGHT)) - set(jobs(ran_smk, LIGHT)):  # DVC's extra reruns: no-ops
            dest = command.split("--dest ")[1].split()[0]
            assert files_before.get(dest) == files_after[dest], command


def tiny_profile(**changes) -> dict:
    profile = yaml.safe_load((ROOT / "tests" / "workflow_tiny.yaml").read_text())
    profile["snapshot_kimg"] = [1, 2]
    return {**profile, **changes}


@pytest.mark.slow
def test_a_profile_plans_and_touches_nothing_of_another(tmp_path, stand_in):
    """Two profiles in one checkout (the README runs `make run`, then the study): the second plans none of
    the first's jobs and leaves its files as they were, in both runners; a second profile file with the
    first's name is warned about in one line."""
    first = tiny_profile()
    second = tiny_profile(name="tiny2", train_seeds=[0, 1], train={**first["train"], "defaults": {
        **first["train"]["defaults"], "lr": 2.0e-3}})  # fmt: skip
    for runner in ("snakemake", "dvc"):
        copy_ = Copy(tmp_path / runner, first, stand_in)
        (copy_.root / "config").mkdir()
        (copy_.root / "config" / "tiny2.yaml").write_text(yaml.safe_dump(second, sort_keys=False))
        copy_.run(BIN / "snakemake", "--cores", "1") if runner == "snakemake" else copy_.run(
            BIN / "dvc", "repro"
        )
        mine = {k: v for k, v in copy_.files().items() if k.startswith("out/tiny/")}
        assert mine
        if runner == "snakemake":
            plan = subprocess.run(
                [str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", "config/tiny2.yaml"],
                cwd=copy_.root, env=copy_.env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            outputs = [
                line.split(": ", 1)[1] for line in plan.splitlines() if line.strip().startswith("output: ")
            ]
            assert outputs and all(o.startswith("out/tiny2/") for out in outputs for o in out.split(", "))
            ran = copy_.run(BIN / "snakemake", "--cores", "1", "--configfile", "config/tiny2.yaml")
        else:
            (copy_.root / "params.yaml").write_text((copy_.root / "config" / "tiny2.yaml").read_text())
            ran = copy_.run(BIN / "dvc", "repro")
        ran = [c.replace("--params config/tiny2.yaml", "--params params.yaml") for c in ran]
        assert jobs(ran, HEAVY) == sorted(
            train(models(second), "tiny2")
            + evaluate(models(second), [1, 2], "tiny2")
            + [ref_stats("digits", "tiny2")]
        )  # the shared feature network is not made again
        assert {k: v for k, v in copy_.files().items() if k.startswith("out/tiny/")} == mine

    # Another profile file named "tiny": Snakemake says so once, before any job.
    other = copy_.root / "config" / "other.yaml"
    other.write_text(yaml.safe_dump({**first, "seed": 5}, sort_keys=False))
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", "config/other.yaml"],
        cwd=copy_.root, env=copy_.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    warnings = [line for line in result.stderr.splitlines() if "fdm: warning:" in line]
    assert warnings == [
        "fdm: warning: config/other.yaml writes into out/tiny/, which params.yaml (another profile named "
        "'tiny') wrote first; give one of them another name"
    ]


def edit_code(copy_: Copy, module: str, text: str) -> None:
    """Append ``text`` to ``module``, or with ``text`` "docstring", reword its module docstring."""
    path = copy_.root / "src" / "fdm" / module
    source = path.read_text()
    assert source.startswith('"""')
    path.write_text('"""Reworded. ' + source[3:] if text == "docstring" else source + text)


@pytest.mark.slow
def test_code_changes_rerun_what_they_change_in_both_runners(tmp_path, stand_in):
    """An edit of a stage's code reruns that stage's jobs and what follows them, in Snakemake and in DVC
    alike: the sampler's code every evaluation and no training, the training loop's every training and
    evaluation, the report's code the report only; comments and docstrings nothing. The dry run says so
    beforehand."""
    profile = tiny_profile()
    smk = Copy(tmp_path / "snakemake", profile, stand_in)
    dvc = Copy(tmp_path / "dvc", profile, stand_in)
    assert jobs(smk.run(BIN / "snakemake", "--cores", "1"), HEAVY) == jobs(
        dvc.run(BIN / "dvc", "repro"), HEAVY
    )
    everything = models(profile)
    cases = [
        ("sampling.py", "\n# a comment, and nothing else\n", [], []),
        ("sampling.py", "docstring", [], []),
        ("sampling.py", "\n_CHANGED = 1\n", evaluate(everything, [1, 2]), ["evaluate", "report"]),
        ("training/loop.py", "\n_CHANGED = 1\n", train(everything) + evaluate(everything, [1, 2]),
         ["train", "evaluate", "report"]),
        ("report/tables.py", "\n_CHANGED = 1\n", [], ["report"]),
    ]  # fmt: skip
    for module, text, expected, rules in cases:
        for copy_ in (smk, dvc):
            edit_code(copy_, module, text)
        ran_dvc = dvc.run(BIN / "dvc", "repro")
        plan, ran_smk = snakemake_plan_and_run(smk)
        assert jobs(ran_smk, HEAVY) == jobs(ran_dvc, HEAVY) == sorted(expected), (module, text)
        for rule in ("train", "evaluate", "report"):  # the dry run announced it
            assert plan.get(rule, 0) == sum(c.startswith(f"{rule} ") for c in ran_smk), (module, rule)
            assert (rule in rules) == any(c.startswith(f"{rule} ") for c in ran_smk), (module, rule)
            assert (rule in rules) == any(c.startswith(f"{rule} ") for c in ran_dvc), (module, rule)
        if not rules:
            assert ran_smk == [], ran_smk  # Snakemake: nothing at all; DVC reran only its code digests
            assert {c.split()[0] for c in ran_dvc} <= {"code-digest"}, ran_dvc
        assert smk.files() == dvc.files(), module

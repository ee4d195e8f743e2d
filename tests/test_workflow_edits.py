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
from test_workflow_equivalence import BIN, ROOT, run, tool_env, workflow_copy

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
                    "FDM_STAND_IN_LOG": str(self.log)}  # fmt: skip

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
        """SHA-256 of every pipeline file (data, runs, reports), not the runners' own (.gitignore,
        .snakemake_timestamp)."""
        return {
            str(path.relative_to(self.root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in ("data", "runs", "reports")
            for path in sorted((self.root / folder).rglob("*"))
            if path.is_file() and not path.name.startswith(".")
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
    out = run([BIN / "snakemake", "-n", "--cores", "1", "--quiet", "rules"], copy_.root).stdout
    counts = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit() and words[0] != "total":
            counts[words[0]] = int(words[1])
    return counts, copy_.run(BIN / "snakemake", "--cores", "1")


def models(params: dict) -> list[tuple[str, str, int]]:
    return [(d, v, s) for d in params["datasets"] for v in params["variants"] for s in params["train_seeds"]]


def train(ms) -> list[str]:
    return sorted(
        f"train --config runs/{d}/{v}/s{s}/train.json --data data/{d}.zip --outdir runs/{d}/{v}/s{s} --gpus 0"
        f" --restart-on-change --record runs/{d}/{v}/s{s}/trained.json"
        for d, v, s in ms
    )


def evaluate(ms, kimgs) -> list[str]:
    return sorted(
        f"evaluate --config runs/{d}/eval/{k}.json --run runs/{d}/{v}/s{s} --gpus 0"
        f" --record runs/{d}/{v}/s{s}/eval/{k}/evaluated.json"
        for d, v, s in ms
        for k in kimgs
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
        + ["ref-stats --params params.yaml --dataset digits --extractor digitsnet --dest data/stats/digits/digitsnet",
           "feature-net --extractor digitsnet --dest data/networks/digitsnet"]
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
         ["ref-stats --params params.yaml --dataset digits2 --extractor digitsnet --dest data/stats/digits2/digitsnet"]
         + train(digits2) + evaluate(digits2, [1, 2])),
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

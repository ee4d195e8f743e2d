"""The Snakefile and dvc.yaml declare the same jobs: the same `fdm` commands with the same outputs.

Snakemake's side is its dry run (``--forceall --printshellcmds``), DVC's side the stages of its own
index (``dvc.repo.Repo(...).index.stages``), for the smoke profile and the paper's grid. Neither needs
the data: the paper's datasets come from folders and downloads named in the params.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fdm.config import load_params
from fdm.jobs import check_grid, grid

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ["Snakefile", "workflow", "dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore"]


def tool_env() -> dict:
    """The environment of workflow runs: this venv's `fdm` first on PATH, one thread, no DVC analytics."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "DVC_NO_ANALYTICS": "1",
        "DVC_TEST": "1",
    }


def workflow_copy(dest: Path, profile: Path) -> Path:
    """The workflow declarations in a new Git repository ``dest``, ``profile`` as params.yaml (no data)."""
    for name in WORKFLOW_FILES:
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    shutil.copy2(profile, dest / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)  # DVC works inside a Git repository
    return dest


def run(args, cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def normalize(command: str) -> str:
    """A job command as dvc.yaml writes it: no log redirection, one params file (launchers stay)."""
    command = " ".join(command.split())
    command = re.sub(r" > logs/\S+ 2>&1$", "", command)
    return re.sub(r"--params \S+", "--params params.yaml", command)


def runs(command: str, job: str) -> bool:
    """Whether ``command`` starts ``fdm <job>``, directly or under torchrun."""
    return (
        re.match(rf'(fdm|torchrun --standalone --nproc-per-node \d+ "\$\(command -v fdm\)") {job} ', command)
        is not None
    )


def snakemake_jobs(workdir: Path, *args) -> dict[tuple[str, ...], str]:
    """(sorted outputs) -> normalized command of every job of a forced dry run."""
    out = run(
        [BIN / "snakemake", "--dry-run", "--forceall", "--printshellcmds", "--cores", "1", *args], workdir
    )
    jobs, outputs = {}, None
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("output: "):
            outputs = tuple(sorted(line.removeprefix("output: ").split(", ")))
        elif line.startswith("Shell command: ") and line != "Shell command: None":  # None: rule all
            assert outputs is not None, line
            jobs[outputs] = normalize(line.removeprefix("Shell command: "))
            outputs = None
        elif line.startswith(("rule ", "localrule ")):
            outputs = None
    return jobs


def dvc_jobs(workdir: Path) -> dict[tuple[str, ...], str]:
    """(sorted outputs, metrics included) -> command of every stage of dvc.yaml, read by DVC itself."""
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        return {
            tuple(sorted(str(out.def_path) for out in stage.outs)): " ".join(stage.cmd.split())
            for stage in repo.index.stages
        }


def assert_same_jobs(snakemake: dict, dvc: dict) -> None:
    only_snakemake = {k: v for k, v in snakemake.items() if dvc.get(k) != v}
    only_dvc = {k: v for k, v in dvc.items() if snakemake.get(k) != v}
    assert not only_snakemake and not only_dvc, (
        f"Snakemake only: {sorted(only_snakemake.items())[:5]}\nDVC only: {sorted(only_dvc.items())[:5]}"
    )


@pytest.mark.parametrize("profile", ["params.yaml", "tests/workflow_tiny.yaml"])
def test_snakemake_and_dvc_declare_the_same_jobs(tmp_path, profile):
    workdir = workflow_copy(tmp_path, ROOT / profile)
    snakemake = snakemake_jobs(workdir)
    dvc = dvc_jobs(workdir)
    assert_same_jobs(snakemake, dvc)
    params = load_params(ROOT / profile)
    evaluations = len(params.variants) * len(params.train_seeds) * len(grid(params)["evaluations"])
    assert sum(cmd.startswith("fdm evaluate ") for cmd in dvc.values()) == evaluations
    assert sum(cmd.startswith("fdm train ") for cmd in dvc.values()) == len(params.models())
    assert not any(out.endswith("/samples.npz") for outs in dvc for out in outs)  # keep_samples: false


def test_torchrun_and_kept_samples_in_both_workflows(tmp_path):
    """gpus.train: 2 trains under torchrun and eval.keep_samples adds samples.npz, in Snakemake and DVC alike."""
    data = yaml.safe_load((ROOT / "tests" / "workflow_tiny.yaml").read_text())
    data["gpus"]["train"], data["eval"]["keep_samples"] = 2, True
    profile = tmp_path / "profile.yaml"
    del data["grid"]  # stale now; written out again below
    profile.write_text(yaml.safe_dump(data))
    params = load_params(profile)
    data["grid"] = grid(params)
    profile.write_text(yaml.safe_dump(data))
    workdir = workflow_copy(tmp_path / "workflow", profile)
    snakemake, dvc = snakemake_jobs(workdir), dvc_jobs(workdir)
    assert_same_jobs(snakemake, dvc)
    train = [cmd for cmd in dvc.values() if runs(cmd, "train")]
    assert len(train) == len(params.models())
    assert all(
        cmd.startswith('torchrun --standalone --nproc-per-node 2 "$(command -v fdm)" train ') for cmd in train
    )
    evaluate = {outs: cmd for outs, cmd in dvc.items() if runs(cmd, "evaluate")}
    assert len(evaluate) == len(params.models()) * len(data["grid"]["evaluations"])
    for outs, cmd in evaluate.items():
        assert cmd.startswith("fdm evaluate ")  # gpus.evaluate: 0
        (samples,) = [out for out in outs if out.endswith("/samples.npz")]
        assert cmd.endswith(f"--samples {samples}")


@pytest.mark.slow
def test_paper_grid_without_data(tmp_path):
    """Snakemake's dry run of config/paper.yaml (as --configfile) lists the whole grid, as DVC does."""
    workdir = workflow_copy(tmp_path, ROOT / "config" / "paper.yaml")
    (workdir / "config").mkdir()
    shutil.copy2(ROOT / "config" / "paper.yaml", workdir / "config" / "paper.yaml")
    shutil.copy2(ROOT / "config" / "smoke.yaml", workdir / "params.yaml")  # --configfile replaces it
    snakemake = snakemake_jobs(workdir, "--configfile", "config/paper.yaml")
    shutil.copy2(ROOT / "config" / "paper.yaml", workdir / "params.yaml")
    dvc = dvc_jobs(workdir)
    assert_same_jobs(snakemake, dvc)
    params = load_params(ROOT / "config" / "paper.yaml")
    assert len(params.models()) == 18
    commands = list(dvc.values())
    assert len(grid(params)["evaluations"]) == 10 + 9 + 9  # 4 snapshots + 6 NFE-study points, less overlaps
    evaluate = [c for c in commands if runs(c, "evaluate")]
    assert len(evaluate) == 6 * 28
    assert sum(runs(c, "train") for c in commands) == 18
    # One sampling pass per evaluation, scored in both Inception modes; one statistics file per mode.
    for command in evaluate:
        dataset = re.search(r"--snapshot runs/(\w+)/", command)[1]
        assert (
            f"--stats data/stats/{dataset}/inception_clean.npz --stats data/stats/{dataset}/inception_legacy_tensorflow.npz"
            in command
        )
    assert sum(c.startswith("fdm ref-stats ") for c in commands) == 3 * 2
    assert "fdm fetch-inception --dir data/inception" in commands
    assert not any(c.startswith("fdm featnet") for c in commands)
    # `dvc repro --dry` stops at the first missing dataset; `dvc status` lists every stage to run.
    status = json.loads(run([BIN / "dvc", "status", "--json"], workdir).stdout)
    assert sum(name.startswith("evaluate@") for name in status) == 6 * 28
    assert len(status) == len(dvc)
    # Multi-GPU jobs go through torchrun in Snakemake as in DVC (gpus: 8 in the paper profile).
    printed = run(
        [BIN / "snakemake", "-n", "-p", "--cores", "1", "--configfile", "config/paper.yaml"], workdir
    )
    assert 'torchrun --standalone --nproc-per-node 8 "$(command -v fdm)" train --config' in printed.stdout
    assert all(
        c.startswith('torchrun --standalone --nproc-per-node 8 "$(command -v fdm)" evaluate ')
        for c in evaluate
    )


@pytest.mark.parametrize(
    "profile", ["params.yaml", "config/smoke.yaml", "config/study.yaml", "config/paper.yaml"]
)
def test_profiles_carry_their_grid(profile):
    check_grid(load_params(ROOT / profile))


def test_grid_scores_every_measure_and_names_the_launch():
    paper, smoke = grid(load_params(ROOT / "config" / "paper.yaml")), grid(load_params(ROOT / "params.yaml"))
    assert [m["name"] for m in paper["measures"]] == ["inception_clean", "inception_legacy_tensorflow"]
    assert [m["options"]["mode"] for m in paper["measures"]] == ["clean", "legacy_tensorflow"]
    assert (
        paper["launch"]["evaluate"] == 'torchrun --standalone --nproc-per-node 8 "$(command -v fdm)" evaluate'
    )
    assert [m["name"] for m in smoke["measures"]] == ["digitsnet"]
    assert smoke["launch"] == {"train": "fdm train", "evaluate": "fdm evaluate"}
    assert (smoke["keep_samples"], smoke["discard_samples"]) == ([], [True])


def test_stale_grid_is_refused(tmp_path):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["snapshot_kimg"] = [5, 20]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [BIN / "fdm", "train-config", "--params", path, "--dataset", "digits", "--variant", "edm",
         "--train-seed", "0", "--dest", tmp_path / "train.json"],
        capture_output=True, text=True, env=tool_env(),
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{path}: grid.evaluations: out of date" in result.stderr
    assert not (tmp_path / "train.json").exists()
    printed = run([BIN / "fdm", "grid", "--params", path], tmp_path).stdout
    data["grid"] = yaml.safe_load(printed)["grid"]
    path.write_text(yaml.safe_dump(data))
    run([BIN / "fdm", "train-config", "--params", path, "--dataset", "digits", "--variant", "edm",
         "--train-seed", "0", "--dest", tmp_path / "train.json"], tmp_path)  # fmt: skip
    assert (tmp_path / "train.json").exists()


def test_train_config_is_the_resolved_job(tmp_path):
    from fdm.training import TrainConfig

    dest = tmp_path / "runs" / "train.json"
    run([BIN / "fdm", "train-config", "--params", ROOT / "params.yaml", "--dataset", "digits",
         "--variant", "fdm_ve", "--train-seed", "0", "--dest", dest], tmp_path)  # fmt: skip
    text = dest.read_text()
    values = yaml.safe_load(text)
    assert list(values) == sorted(values)
    assert values == load_params(ROOT / "params.yaml").train_config("digits", "fdm_ve", 0)
    config = TrainConfig.from_dict({**values, "dataset": "d.zip", "outdir": "o"})
    assert config.formulation_options == {"multiplier": 1.0, "warmup": 50}
    assert [p.name for p in dest.parent.iterdir()] == ["train.json"]  # nothing temporary left
    bad = run([BIN / "fdm", "train-config", "--params", ROOT / "params.yaml", "--dataset", "digits",
               "--variant", "edm", "--train-seed", "3", "--dest", tmp_path / "x.json"], tmp_path, check=False)  # fmt: skip
    assert bad.returncode == 2 and "no training seed 3" in bad.stderr

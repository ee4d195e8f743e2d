"""The Snakefile and dvc.yaml declare the same jobs: the same `fdm` commands with the same outputs.

Snakemake's side is its dry run (``--forceall --printshellcmds``), DVC's side the stages of its own
index (``dvc.repo.Repo(...).index.stages``), for the smoke profile and the paper's grid. Neither needs
the data: the paper's datasets come from folders and downloads named in the params. Edited profiles:
tests/test_workflow_edits.py.
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
from fdm.provenance import STAGES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = [
    "src/fdm",  # dvc.yaml's code digests depend on it
    "Snakefile",
    "workflow",
    "dvc.yaml",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",  # the plots' template
    "environment.yml",
]


def tool_env() -> dict:
    """The environment of workflow runs: this venv's `fdm` first on PATH, one thread, no DVC analytics, and
    every job checking that its stage's code digest covers every module it ran (fdm.provenance)."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "DVC_NO_ANALYTICS": "1",
        "DVC_TEST": "1",
        "FDM_CHECK_SOURCES": "1",
    }


def workflow_copy(dest: Path, profile: Path) -> Path:
    """The workflow declarations in a new Git repository ``dest``, ``profile`` as params.yaml (no data)."""
    for name in WORKFLOW_FILES:
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
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
    command = re.sub(r" > \S+\.log 2>&1$", "", command)
    return re.sub(r"--params \S+", "--params params.yaml", command)


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
    commands = list(dvc.values())
    evaluations = len(params.models()) * len(params.snapshot_kimg)
    assert sum(c.startswith("fdm evaluate ") for c in commands) == evaluations
    assert sum(c.startswith("fdm eval-config ") for c in commands) == len(params.snapshot_kimg)
    assert sum(c.startswith("fdm train ") for c in commands) == len(params.models())
    assert [c for c in commands if c.startswith("fdm feature-net ")] == [
        "fdm feature-net --extractor digitsnet --dest data/networks/digitsnet"
    ]
    assert sorted(c for c in commands if c.startswith("fdm code-digest ")) == sorted(
        f"fdm code-digest --stage {stage} --dest data/code/{stage}.json" for stage in STAGES
    )
    # Every output of the profile lies under its own root, the shared ones under data/.
    outputs = [path for key in dvc for path in key]
    assert all(path.startswith((f"out/{params.name}/", "data/networks/", "data/code/")) for path in outputs)
    # Every output is in DVC's cache (so experiments record it and a remote shares it), snapshots and
    # evaluation records included; the summary is DVC's one metrics file.
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        outs = [out for stage in repo.index.stages for out in stage.outs]
        assert [str(o.def_path) for o in outs if not o.use_cache] == []
        assert [str(o.def_path) for o in outs if o.metric] == [f"out/{params.name}/summary.json"]
    snapshots = [path for path in outputs if path.endswith("/snapshots")]
    assert len(snapshots) == len(params.models()) + len(params.pretrained)


def test_snakemake_report_before_any_run_is_snakemakes_own_message(tmp_path):
    workdir = workflow_copy(tmp_path, ROOT / "tests" / "workflow_tiny.yaml")
    result = run([BIN / "snakemake", "--report", "report.html", "--cores", "1"], workdir, check=False)
    assert result.returncode != 0
    assert "File out/tiny/reports marked for report but does not exist." in result.stderr
    assert "Traceback" not in result.stderr and not (workdir / "report.html").exists()


def test_samples_kept_and_gpus_in_both_workflows(tmp_path):
    """gpus: 2 reaches `fdm train`/`fdm evaluate` as --gpus (they start torchrun themselves), and
    eval.keep_samples reaches the plans, in Snakemake and DVC alike; no profile key needs a derived copy."""
    data = yaml.safe_load((ROOT / "tests" / "workflow_tiny.yaml").read_text())
    data["gpus"] = {"train": 2, "evaluate": 3}
    data["eval"]["keep_samples"] = True
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(data))
    workdir = workflow_copy(tmp_path / "workflow", profile)
    snakemake, dvc = snakemake_jobs(workdir), dvc_jobs(workdir)
    assert_same_jobs(snakemake, dvc)
    params = load_params(profile)
    train = [cmd for cmd in dvc.values() if cmd.startswith("fdm train ")]
    evaluate = [cmd for cmd in dvc.values() if cmd.startswith("fdm evaluate ")]
    assert len(train) == len(params.models()) and all(" --gpus 2 " in cmd for cmd in train)
    assert len(evaluate) == len(params.models()) * 2 and all(" --gpus 3 " in cmd for cmd in evaluate)
    plan = tmp_path / "plan.json"
    run(
        [BIN / "fdm", "eval-config", "--params", profile, "--dataset", "digits", "--kimg", 2, "--dest", plan],
        tmp_path,
    )
    assert json.loads(plan.read_text())["keep_samples"] is True


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
    evaluate = [c for c in commands if c.startswith("fdm evaluate ") and "/s0 " in c]
    assert len(evaluate) == 18 * 4  # one job per model and snapshot, every point of the snapshot inside
    assert all(" --gpus 8 " in c for c in evaluate)
    # The released checkpoints: imported, then evaluated with the final snapshot's plan.
    released = [c for c in commands if c.startswith("fdm evaluate ") and "/pretrained " in c]
    assert len(released) == len(params.pretrained) == 18
    assert all(
        c.startswith("fdm evaluate --config out/paper/runs/") and "/eval/200000.json " in c for c in released
    )
    assert sum(c.startswith("fdm import-checkpoint --params params.yaml ") for c in commands) == 18
    assert sum(c.startswith("fdm eval-config ") for c in commands) == 3 * 4
    assert sum(c.startswith("fdm train ") and " --gpus 8 " in c for c in commands) == 18
    # One statistics job per dataset and feature network (both Inception modes inside), one download.
    assert sorted(c for c in commands if c.startswith("fdm ref-stats ")) == sorted(
        f"fdm ref-stats --params params.yaml --dataset {d} --extractor inception"
        f" --dest out/paper/data/stats/{d}/inception"
        for d in ("cifar10", "ffhq", "afhqv2")
    )
    assert "fdm feature-net --extractor inception --dest data/networks/inception" in commands
    # `dvc repro --dry` stops at the first missing dataset; `dvc status` lists every stage to run.
    status = json.loads(run([BIN / "dvc", "status", "--json"], workdir).stdout)
    assert sum(name.startswith("evaluate@") for name in status) == 18 * 4
    assert len(status) == len(dvc)
    # The plans: the main point at every snapshot; the NFE study only at the last (both Inception modes).
    plan = tmp_path / "plan.json"
    for kimg, points in [(50000, 1), (200000, 6)]:
        run([BIN / "fdm", "eval-config", "--params", ROOT / "config" / "paper.yaml", "--dataset", "ffhq",
             "--kimg", kimg, "--dest", plan], tmp_path)  # fmt: skip
        values = json.loads(plan.read_text())
        assert len(values["points"]) == points and {"sampler": "heun", "nfe": 79} in values["points"]
        assert values["stats"] == [
            "out/paper/data/stats/ffhq/inception/clean.npz", "out/paper/data/stats/ffhq/inception/legacy_tensorflow.npz"
        ]  # fmt: skip
        assert values["seeds"] == "0-49999"


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
    assert not {"tracking", "experiment", "gpus", "device"} & set(values)  # how it runs is the command's
    assert [p.name for p in dest.parent.iterdir()] == ["train.json"]  # nothing temporary left
    bad = run([BIN / "fdm", "train-config", "--params", ROOT / "params.yaml", "--dataset", "digits",
               "--variant", "edm", "--train-seed", "3", "--dest", tmp_path / "x.json"], tmp_path, check=False)  # fmt: skip
    assert bad.returncode == 2 and "no training seed 3" in bad.stderr


def test_eval_config_is_the_snapshot_plan(tmp_path):
    params = load_params(ROOT / "params.yaml")
    for kimg in params.snapshot_kimg:
        dest = tmp_path / f"{kimg}.json"
        run([BIN / "fdm", "eval-config", "--params", ROOT / "params.yaml", "--dataset", "digits", "--kimg", kimg,
             "--dest", dest], tmp_path)  # fmt: skip
        assert json.loads(dest.read_text()) == params.eval_plan("digits", kimg)
    main = params.eval.main["digits"]
    assert json.loads((tmp_path / "10.json").read_text())["points"] == [
        {"sampler": main.sampler, "nfe": main.nfe}
    ]
    final = json.loads((tmp_path / "20.json").read_text())["points"]
    study = {(s, n) for s, nfes in params.eval.nfe_study.items() for n in nfes} | {(main.sampler, main.nfe)}
    assert [(p["sampler"], p["nfe"]) for p in final] == sorted(study)
    bad = run([BIN / "fdm", "eval-config", "--params", ROOT / "params.yaml", "--dataset", "digits", "--kimg", 15,
               "--dest", tmp_path / "x.json"], tmp_path, check=False)  # fmt: skip
    assert bad.returncode == 2 and "no snapshot at 15 kimg (snapshot_kimg: 10, 20)" in bad.stderr
    assert not (tmp_path / "x.json").exists()

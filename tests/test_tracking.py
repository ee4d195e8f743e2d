"""MLflow tracking: `fdm track` mirrors the files on disk, idempotently; outages and parallel writers are harmless.

Stores are real: sqlite files (copied from one store initialised per session, since creating
MLflow's tables takes seconds) and, in one test, a real `mlflow server` on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fdm.cli import main as cli
from fdm.config import load_params
from fdm.tracking import CONTENT, KEY, PARENT, RUN_FILE, Tracker, open_client, sync

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"  # the smoke profile: experiment_prefix fdm-smoke
EXPERIMENT = "fdm-smoke-digits"


# A small runs/ and reports/ tree, as the pipeline writes it ------------------------------------------------


def _write_json(path: Path, record) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def _metrics(variant: str, kimg: int, sampler: str, nfe: int) -> dict:
    return {
        "fid_digitsnet": 10.0 + len(variant) + 1000 / kimg + nfe / 10,
        "kid_digitsnet": 0.01 * nfe,
        "num_samples": 200,
        "extractor": "digitsnet",
        "mode": None,
        "nfe": nfe,
        "num_steps": (nfe + 1) // 2,
        "sampler": sampler,
        "seeds": "0-199",
        "snapshot": f"runs/digits/{variant}/s0/snapshots/{kimg:06d}.safetensors",
        "reference": {"dataset": "digits", "count": 1797},
    }


EVALS = [(10, "heun", 15), (20, "heun", 15), (20, "dpmpp_3s", 5)]
T0 = 1_700_000_000.0  # the wall clock the synthetic runs started at (s)
VARIANTS = ["edm", "fdm_edm"]


def make_tree(root: Path) -> tuple[Path, Path]:
    """Two models of `digits`, each with three evaluations, and a report: 9 MLflow runs."""
    runs, reports = root / "runs", root / "reports"
    for variant in VARIANTS:
        run = runs / "digits" / variant / "s0"
        _write_json(
            run / "train.json",
            {
                "formulation": variant,
                "lr": 1e-3,
                "batch": 64,
                "channel_mult": [1, 2],
                "formulation_options": {},
            },
        )
        lines = [  # a training started at T0, killed after 10 kimg and resumed 100 s later
            {"kimg": k, "step": k * 16, "loss": 1.0 / k, "images_per_s": 100.0, "lr": 1e-3,
             "started": T0 + (100 if k > 10 else 0), "time": T0 + k * 10 + (100 if k > 10 else 0)}
            for k in (5, 10, 20)
        ]  # fmt: skip
        (run / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        for kimg in (10, 20):
            (run / "snapshots").mkdir(parents=True, exist_ok=True)
            (run / "snapshots" / f"{kimg:06d}.safetensors").write_bytes(f"{variant} {kimg}".encode())
        for kimg, sampler, nfe in EVALS:
            folder = run / "eval" / str(kimg) / f"{sampler}-{nfe}"
            _write_json(folder / "metrics.json", _metrics(variant, kimg, sampler, nfe))
            _write_json(folder / "timing.json", {"started": T0 + 1000 + nfe, "ended": T0 + 1000 + 2 * nfe})
            _png(folder / "grid.png", nfe)
    (reports / "digits").mkdir(parents=True)
    (reports / "digits" / "fid_vs_mimg.csv").write_text("variant,mimg,mean\nedm,0.02,12.0\n")
    (reports / "digits" / "fid_vs_mimg.md").write_text("| variant | 0.02 |\n|---|---|\n| edm | 12.0 |\n")
    _png(reports / "digits" / "fid_vs_mimg.png", 128)
    return runs, reports


# Stores ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """An empty sqlite store with MLflow's tables, made once."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    open_client(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def project(tmp_path, monkeypatch, store_template):
    """A project folder (the working directory) with its own copy of the empty store."""
    shutil.copy(store_template, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_tree(tmp_path)
    return tmp_path


def track(*extra: str) -> tuple[int, dict | None, str]:
    """`fdm track` in this process: (exit code, marker record, stderr)."""
    args = [
        "track",
        "--params",
        str(PARAMS),
        "--runs",
        "runs",
        "--reports",
        "reports",
        "--dest",
        "marker.json",
    ]
    result = CliRunner().invoke(cli, [*args, *extra])
    marker = Path("marker.json")
    return result.exit_code, json.loads(marker.read_text()) if marker.is_file() else None, result.stderr


def runs_by_key(client, experiment: str = EXPERIMENT) -> dict:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    found = {}
    for run in client.search_runs([experiment_id], max_results=1000):
        assert run.data.tags[KEY] not in found, f"duplicate run for {run.data.tags[KEY]}"
        found[run.data.tags[KEY]] = run
    return found


def check_store(client, marker: dict) -> None:
    """What the synthetic tree must look like in MLflow."""
    runs = runs_by_key(client)
    for run in runs.values():  # the synthetic files name no code: MLflow's source tags still say so
        assert run.data.tags["mlflow.source.git.commit"] == "unknown"
        assert run.data.tags["mlflow.source.type"] == "LOCAL"
    models = [f"digits/{v}/s0" for v in VARIANTS]
    evals = [f"{m}/eval/{k}/{s}-{n}" for m in models for k, s, n in EVALS]
    assert sorted(runs) == sorted([*models, *evals, "digits/report"])
    for model in models:
        run = runs[model]
        assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "digits"
        assert run.data.tags["variant"] == model.split("/")[1] and run.data.tags["train_seed"] == "0"
        assert run.data.params["lr"] == "0.001" and run.data.params["channel_mult"] == "[1, 2]"
        snapshot = Path("runs", model, "snapshots", "000020.safetensors")
        assert run.data.params["snapshots.000020.path"] == str(snapshot)
        assert run.data.params["snapshots.000020.sha256"] == hashlib.sha256(snapshot.read_bytes()).hexdigest()
        loss = client.get_metric_history(run.info.run_id, "loss")
        assert [(m.step, m.value) for m in loss] == [(5000, 0.2), (10000, 0.1), (20000, 0.05)]
        assert [m.timestamp for m in loss] == [int((T0 + t) * 1000) for t in (50, 100, 300)]
        assert (run.info.start_time, run.info.end_time) == (int(T0 * 1000), int((T0 + 300) * 1000))
        assert not {"started", "time", "kimg"} & set(run.data.metrics)
        # The scores as curves on the model's run: over training (step = images), and over NFE at the end.
        for metric in ("fid_digitsnet", "kid_digitsnet"):
            value = {(k, s, n): json.loads(Path("runs", model, "eval", str(k), f"{s}-{n}", "metrics.json").read_text())[metric] for k, s, n in EVALS}  # fmt: skip
            history = client.get_metric_history(run.info.run_id, f"{metric}/heun-15")
            assert [(m.step, m.value) for m in history] == [
                (10000, value[10, "heun", 15]),
                (20000, value[20, "heun", 15]),
            ]
            assert f"{metric}/dpmpp_3s-5" not in run.data.metrics  # not the main point: over NFE only
            for sampler, nfe in (("heun", 15), ("dpmpp_3s", 5)):
                history = client.get_metric_history(run.info.run_id, f"{metric}_vs_nfe/{sampler}")
                assert [(m.step, m.value) for m in history] == [(nfe, value[20, sampler, nfe])]
        assert marker["models"][model]["run_id"] == run.info.run_id
    for key in evals:
        run, model = runs[key], key.split("/eval/")[0]
        assert run.data.tags[PARENT] == runs[model].info.run_id
        kimg, point = key.split("/eval/")[1].split("/")
        sampler, nfe = point.split("-")
        record = json.loads(Path("runs", key, "metrics.json").read_text())
        assert run.data.params["kimg"] == kimg and run.data.params["sampler"] == sampler
        assert run.data.params["nfe"] == nfe and run.data.params["num_samples"] == "200"
        assert run.data.params["extractor"] == "digitsnet" and run.data.params["mode"] == "null"
        assert run.data.metrics == {
            "fid_digitsnet": record["fid_digitsnet"],
            "kid_digitsnet": record["kid_digitsnet"],
        }
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["grid.png", "metrics.json"]
        assert run.info.start_time == int((T0 + 1000 + int(nfe)) * 1000)
        assert run.info.end_time == int((T0 + 1000 + 2 * int(nfe)) * 1000)
        assert marker["models"][model]["evaluations"][f"{kimg}/{point}"] == run.info.run_id
    report = runs["digits/report"]
    names = sorted(a.path for a in client.list_artifacts(report.info.run_id))
    assert names == ["fid_vs_mimg.csv", "fid_vs_mimg.md", "fid_vs_mimg.png"]
    assert marker["reports"] == {"digits": report.info.run_id}
    assert marker["experiments"]["digits"]["name"] == EXPERIMENT


def edit_metrics_and_track_again(client, before: dict[str, str], key: str, metric: str, value: float) -> None:
    """Change one metric of one evaluation on disk, track again: exactly that run and its model's run (whose
    score curves hold the value) are replaced, the model's other evaluations follow the new model run."""
    path = Path("runs", key, "metrics.json")
    _write_json(path, {**json.loads(path.read_text()), metric: value})
    code, marker, _ = track()
    assert code == 0 and marker["runs"] == {"logged": 0, "unchanged": 7, "replaced": 2}
    after = runs_by_key(client)
    model = key.split("/eval/")[0]
    assert {k for k, r in after.items() if r.info.run_id != before[k]} == {key, model}
    assert after[key].data.metrics[metric] == value
    check_store(client, marker)


# Tests ----------------------------------------------------------------------------------------------------------


def test_track_logs_the_tree_then_reruns_change_only_what_changed(project):
    code, marker, _ = track()
    assert code == 0 and marker["logged"] is True
    assert marker["tracking_uri"] == "sqlite:///mlflow.db"
    assert marker["runs"] == {"logged": 9, "unchanged": 0, "replaced": 0}
    client = open_client("sqlite:///mlflow.db")
    check_store(client, marker)
    before = {k: r.info.run_id for k, r in runs_by_key(client).items()}

    code, again, _ = track()
    assert code == 0 and again["runs"] == {"logged": 0, "unchanged": 9, "replaced": 0}
    assert {k: r.info.run_id for k, r in runs_by_key(client).items()} == before

    changed = "digits/fdm_edm/s0/eval/20/heun-15"
    edit_metrics_and_track_again(client, before, changed, "fid_digitsnet", 3.25)
    assert client.get_run(before[changed]).info.lifecycle_stage == "deleted"


def test_a_longer_training_replaces_the_model_run_and_keeps_its_evaluations(project):
    track()
    client = open_client("sqlite:///mlflow.db")
    before = {k: r.info.run_id for k, r in runs_by_key(client).items()}
    with open("runs/digits/edm/s0/train.jsonl", "a") as f:
        f.write(json.dumps({"kimg": 25, "loss": 0.04, "started": T0 + 100, "time": T0 + 500}) + "\n")
    code, marker, _ = track()
    assert marker["runs"] == {"logged": 0, "unchanged": 8, "replaced": 1}
    after = runs_by_key(client)
    assert {k for k, r in after.items() if r.info.run_id != before[k]} == {"digits/edm/s0"}
    model = after["digits/edm/s0"]
    assert [m.step for m in client.get_metric_history(model.info.run_id, "loss")][-1] == 25000
    assert model.info.end_time == int((T0 + 500) * 1000)
    for k, s, n in EVALS:  # unchanged, and nested under the new model run
        assert after[f"digits/edm/s0/eval/{k}/{s}-{n}"].data.tags[PARENT] == model.info.run_id


def test_an_unreachable_server_warns_once_exits_0_and_a_later_track_logs_everything(project, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    start = time.perf_counter()
    code, marker, err = track()
    assert time.perf_counter() - start < 10
    assert code == 0 and marker["logged"] is False and marker["tracking_uri"] == f"http://127.0.0.1:{port}"
    assert err.count("fdm: warning: MLflow tracking failed") == 1

    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the server is back (here: the default store)
    code, marker, _ = track()
    assert code == 0 and marker["logged"] is True and marker["runs"]["logged"] == 9
    check_store(open_client("sqlite:///mlflow.db"), marker)


def test_tracking_disabled_in_params_logs_nothing(project, tmp_path):
    params = tmp_path / "off.yaml"
    params.write_text(PARAMS.read_text().replace("  enabled: true", "  enabled: false"))
    result = CliRunner().invoke(cli, ["track", "--params", str(params), "--dest", "marker.json"])
    assert result.exit_code == 0
    marker = json.loads(Path("marker.json").read_text())
    assert marker["logged"] is False and "tracking.enabled is false" in marker["reason"]
    assert open_client("sqlite:///mlflow.db").search_experiments(filter_string=f"name = '{EXPERIMENT}'") == []


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        ("runs/digits/edm/s0/eval/10/heun-15/metrics.json", "{not json", "not readable JSON"),
        ("runs/digits/edm/s0/train.jsonl", '{"loss": 1.0}\n', "line 1 is not a tick record"),
    ],
)
def test_a_malformed_file_is_one_error_line_and_no_marker(project, path, text, message):
    Path(path).write_text(text)
    code, marker, err = track()
    assert code == 2 and marker is None
    assert err.startswith(f"fdm: error: {path}: {message}")
    assert len(err.strip().splitlines()) == 1


def test_a_live_training_run_is_replaced_by_track_and_a_resume_starts_afresh(project):
    run_dir = Path("runs/digits/edm/s0")
    tracker = Tracker(True, run_dir, EXPERIMENT, "s0", {"lr": 1e-3}, {"stage": "train"})
    tracker.log_metrics({"loss": 0.5, "peak_memory_gb": None}, step=64)
    tracker.close()
    live_id = json.loads((run_dir / RUN_FILE).read_text())["run_id"]
    client = open_client("sqlite:///mlflow.db")
    assert runs_by_key(client)["digits/edm/s0"].info.run_id == live_id
    assert CONTENT not in client.get_run(live_id).data.tags

    code, marker, _ = track()
    assert marker["runs"] == {"logged": 8, "unchanged": 0, "replaced": 1}
    assert client.get_run(live_id).info.lifecycle_stage == "deleted"
    check_store(client, marker)

    resumed = Tracker(True, run_dir, EXPERIMENT, "s0", {"lr": 1e-3}, {"stage": "train"})
    resumed.close()
    assert json.loads((run_dir / RUN_FILE).read_text())["run_id"] != live_id


def test_a_released_checkpoint_is_tracked_with_the_papers_numbers(project):
    """A pretrained entry of the paper profile, imported and evaluated (synthetic files): one model run named
    after it, its FID over NFE, the paper's number of each point as a param, its importer's code as tags."""
    params = load_params(REPO / "config" / "paper.yaml")
    run = Path("runs/afhqv2/fdm_edm/pretrained")
    code = {"stage": "import_checkpoint", "commit": "c0ffee" * 6 + "c0ff", "dirty": False, "package": "0.1.0",
            "source_sha256": "ab" * 32}  # fmt: skip
    _write_json(
        run / "trained.json", {"run": str(run), "source": "https://x/y.pkl", "snapshots": {}, "code": code}
    )
    kimg = params.duration_kimg
    points = params.points("afhqv2", kimg)
    for sampler, nfe in points:
        metrics = {"fid_inception_legacy_tensorflow": 2.0 + nfe / 100, "nfe": nfe, "sampler": sampler}
        _write_json(run / "eval" / str(kimg) / f"{sampler}-{nfe}" / "metrics.json", metrics)
    result = CliRunner().invoke(
        cli, ["track", "--params", str(REPO / "config" / "paper.yaml"), "--runs", "runs", "--reports", "none",
              "--dest", "marker.json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    client = open_client("sqlite:///mlflow.db")
    found = runs_by_key(client, "fdm-paper-afhqv2")
    model = found["afhqv2/fdm_edm/pretrained"]
    assert (
        model.info.run_name == "fdm_edm-pretrained"
        and model.data.params["source_url"] == params.released("afhqv2", "fdm_edm").url
    )
    assert model.data.tags["mlflow.source.git.commit"] == code["commit"]
    assert model.data.tags["mlflow.source.name"] == "fdm import-checkpoint"
    assert model.data.tags["fdm.source_sha256"] == code["source_sha256"]
    paper = model.data.params
    assert paper["paper.fid_inception_legacy_tensorflow/heun-79"] == "1.93"  # its 200-Mimg row (section 7.1)
    assert paper["paper.fid_inception_legacy_tensorflow/dpmpp_3s-25"] == "2.09"  # the NFE table (section 7.2)
    history = client.get_metric_history(model.info.run_id, "fid_inception_legacy_tensorflow_vs_nfe/heun")
    assert [(m.step, m.value) for m in history] == [(25, 2.25), (49, 2.49), (79, 2.79)]
    assert len([k for k in found if k.startswith("afhqv2/fdm_edm/pretrained/eval/")]) == len(points)


def test_live_logging_and_track_make_one_run_with_the_same_name_and_params(small_data, project, monkeypatch):
    """`fdm train --tracking` logs a model live; `fdm track` afterwards leaves exactly one run for it, with
    the live run's name and params (and the code's source tags)."""
    from fdm.training import train

    for variant in VARIANTS:  # only the live-trained model, no synthetic ones
        shutil.rmtree(Path("runs/digits") / variant)
    outdir = Path("runs/digits/edm/s0")
    cfg = _train_config(small_data, outdir)
    train(dataclasses.replace(cfg, experiment=EXPERIMENT), record=str(outdir / "trained.json"))
    client = open_client("sqlite:///mlflow.db")
    live = runs_by_key(client)["digits/edm/s0"]
    assert live.data.tags["fdm.source"] == "live"
    assert (
        live.data.tags["mlflow.source.git.commit"]
        == json.loads((outdir / "trained.json").read_text())["code"]["commit"]
    )
    code, marker, _ = track()
    assert code == 0 and marker["logged"] is True
    tracked = runs_by_key(client)["digits/edm/s0"]  # one run for the key (runs_by_key asserts it)
    assert tracked.info.run_id != live.info.run_id
    assert tracked.info.run_name == live.info.run_name == "edm-s0"
    assert tracked.data.params == live.data.params
    assert "snapshots.000000.008.sha256" in tracked.data.params
    for tag in ("mlflow.source.git.commit", "mlflow.source.name", "fdm.source_sha256"):
        assert tracked.data.tags[tag] == live.data.tags[tag]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from fdm.data.archive import Item, write_archive

    rng = np.random.default_rng(1)
    items = [Item(f"image {i}", rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)) for i in range(16)]
    path = tmp_path_factory.mktemp("data") / "small.zip"
    write_archive(path, items)
    return path


def _train_config(data, outdir):
    from fdm.training import TrainConfig

    return TrainConfig(
        dataset=str(data), outdir=str(outdir), model_channels=8, channel_mult=(1, 2), num_blocks=1,
        attn_resolutions=(), dropout=0.0, batch=4, duration_kimg=0.008, tick_kimg=0.004, device="cpu",
        threads=1, progress=False, tracking=True, experiment="fdm-test",
    )  # fmt: skip


def test_training_with_tracking_logs_params_and_tick_metrics(
    small_data, tmp_path, monkeypatch, store_template
):
    from fdm.training import train

    shutil.copy(store_template, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from fdm.digest import file_sha256
    from fdm.training.loop import learning_rate
    from fdm.training.run_folder import snapshot_path

    cfg = _train_config(small_data, tmp_path / "runs" / "small" / "edm" / "s0")
    run_dir = train(cfg)
    run_id = json.loads((run_dir / RUN_FILE).read_text())["run_id"]
    run = open_client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[KEY] == "small/edm/s0"
    assert run.info.run_name == "edm-s0" and run.data.tags["stage"] == "train"
    assert run.data.tags["dataset"] == Path(small_data).stem and run.data.tags["formulation"] == "edm"
    assert run.data.params["batch"] == "4" and run.data.params["formulation"] == "edm"
    shot = snapshot_path(run_dir, 0.008)
    assert run.data.params[f"snapshots.{shot.stem}.sha256"] == file_sha256(shot)
    assert [m.step for m in open_client().get_metric_history(run_id, "loss")] == [4, 8]
    # Each tick's lr is the one its last optimizer step used (images seen before that step).
    lr = [m.value for m in open_client().get_metric_history(run_id, "lr")]
    assert lr == pytest.approx([learning_rate(cfg, 0), learning_rate(cfg, 4)]) and lr[0] < lr[1]


def test_a_broken_tracking_store_only_warns_and_training_completes(small_data, tmp_path, monkeypatch, capsys):
    from fdm.training import snapshot_path, train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")
    monkeypatch.chdir(tmp_path)
    run_dir = train(_train_config(small_data, tmp_path / "run"))
    assert snapshot_path(run_dir, 0.008).is_file()
    assert capsys.readouterr().err.count("fdm: warning: MLflow tracking failed") == 1
    assert not (run_dir / RUN_FILE).exists()


WRITER = textwrap.dedent(
    """
    import sys
    from fdm.tracking import Tracker
    tracker = Tracker(True, sys.argv[1], "fdm-concurrent", "writer", {"name": sys.argv[1]}, {})
    for tick in range(1, 101):
        tracker.log_metrics({"loss": 1.0 / tick, "tick": tick}, step=tick * 64)
    tracker.close()
    """
)


@pytest.mark.slow
def test_two_processes_log_to_one_fresh_sqlite_store_without_losing_records(tmp_path):
    """Parallel training jobs on a fresh store: both create the tables, experiment and runs at once."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    dirs = [tmp_path / "runs" / "digits" / v / "s0" for v in ("edm", "vp")]
    for d in dirs:
        d.mkdir(parents=True)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(d)], env=env, stderr=subprocess.PIPE, text=True)
        for d in dirs
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0]
    assert not any("warning" in e for e in errors), errors
    client = open_client(env["MLFLOW_TRACKING_URI"])
    runs = runs_by_key(client, "fdm-concurrent")
    assert sorted(runs) == ["digits/edm/s0", "digits/vp/s0"]
    for run in runs.values():
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "tick")
        assert sorted(int(m.value) for m in history) == list(range(1, 101))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with its own sqlite store and artifact folder; its URI."""
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "artifacts"),
    ]  # fmt: skip
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.slow
def test_track_against_a_real_mlflow_server(project, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    code, marker, _ = track()
    assert code == 0 and marker["logged"] is True and marker["tracking_uri"] == mlflow_server
    client = open_client(mlflow_server)
    check_store(client, marker)
    grid = [r for k, r in runs_by_key(client).items() if k.endswith("/eval/20/heun-15")][0]
    local = client.download_artifacts(grid.info.run_id, "grid.png", str(project / "download"))
    assert Path(local).read_bytes() == (project / "runs" / grid.data.tags[KEY] / "grid.png").read_bytes()
    before = {k: r.info.run_id for k, r in runs_by_key(client).items()}

    code, marker, _ = track()
    assert marker["runs"] == {"logged": 0, "unchanged": 9, "replaced": 0}
    assert {k: r.info.run_id for k, r in runs_by_key(client).items()} == before

    edit_metrics_and_track_again(client, before, "digits/edm/s0/eval/10/heun-15", "kid_digitsnet", 0.5)
    assert sync(load_params(PARAMS), "runs", "reports")["runs"]["unchanged"] == 9

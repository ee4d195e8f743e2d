"""MLflow tracking of training: metrics reach a local sqlite store; a broken store never fails training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fdm.data.archive import Item, write_archive
from fdm.training import TrainConfig, snapshot_path, train


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    rng = np.random.default_rng(1)
    items = [Item(f"image {i}", rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)) for i in range(16)]
    path = tmp_path_factory.mktemp("data") / "small.zip"
    write_archive(path, items)
    return path


def _config(data, outdir) -> TrainConfig:
    return TrainConfig(
        dataset=str(data),
        outdir=str(outdir),
        model_channels=8,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(),
        dropout=0.0,
        batch=4,
        duration_kimg=0.008,
        tick_kimg=0.004,
        device="cpu",
        threads=1,
        progress=False,
        tracking=True,
        experiment="fdm-test",
    )


@pytest.mark.slow
def test_tracking_logs_params_and_tick_metrics(small_data, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    run_dir = train(_config(small_data, tmp_path / "run"))
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["batch"] == "4" and run.data.params["formulation"] == "edm"
    losses = client.get_metric_history(run_id, "loss")
    assert [m.step for m in losses] == [4, 8]


@pytest.mark.slow
def test_a_broken_tracking_store_only_warns(small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")
    monkeypatch.chdir(tmp_path)
    run_dir = train(_config(small_data, tmp_path / "run"))
    assert snapshot_path(run_dir, 0.008).is_file()
    assert "fdm: warning: MLflow tracking failed" in capsys.readouterr().err
    assert not (run_dir / "mlflow_run.json").exists()

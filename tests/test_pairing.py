"""A variant and its baseline trained with one training seed are a paired comparison.

The report's differences are per training seed (docs/report.md, "Paired differences"). That rests on
what is checked here, from the training runs the profiles' own settings build: with the same training
seed, an FDM variant and its baseline start from the same weights, read the data in the same order
and draw the same sigma, noise and augmentation for every sample, the FDM variant's sigma coming from
its base's training distribution. With another training seed all of these change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fdm.config import load_params
from fdm.data.archive import Item, write_archive
from fdm.distributed import World
from fdm.training import TrainConfig
from fdm.training.loop import TrainingRun

ROOT = Path(__file__).resolve().parents[1]
CPU = World(rank=0, size=1, device=torch.device("cpu"))
SAMPLES = list(range(0, 70))  # crosses two epochs of the 24-image dataset below


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """24 labelled 16x16 grayscale images (the digits' shape), random pixels."""
    rng = np.random.default_rng(0)
    items = [Item(f"{i}", rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), label=i % 10) for i in range(24)]
    path = tmp_path_factory.mktemp("data") / "d.zip"
    write_archive(path, items)
    return path


def training_run(params, variant: str, train_seed: int, data: Path, tmp: Path, **changes) -> TrainingRun:
    """The training run the profile's ``train_config`` makes for (digits, variant, train_seed), on ``data``."""
    values = {**params.train_config("digits", variant, train_seed), "dataset": str(data), "outdir": str(tmp)}
    return TrainingRun(TrainConfig.from_dict({**values, **changes}), CPU)


def draws(run: TrainingRun):
    indices, sigma, noise, augment = run.stream.draw(SAMPLES)
    return indices, sigma, noise, augment


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("profile", "pairs"),
    [
        ("config/study.yaml", [("fdm_edm", "edm"), ("fdm_vp", "vp"), ("fdm_ve", "ve")]),
        ("config/ablation.yaml", [("fdm_edm_m4", "edm"), ("fdm_edm_scale", "edm"), ("fdm_vp_scale", "vp")]),
    ],
)
def test_a_variant_and_its_baseline_share_weights_data_order_and_draws(data, tmp_path, profile, pairs):
    params = load_params(ROOT / profile)
    for variant, base in pairs:
        assert params.baseline(variant) == base
        # augment_p > 0 so that the augmentation draws are compared too (the profiles train without)
        fdm, baseline = (
            training_run(params, v, 1, data, tmp_path / v, augment_p=0.5) for v in (variant, base)
        )
        assert fdm.formulation.name != baseline.formulation.name
        assert same_weights(fdm.net, baseline.net), variant
        (i_f, s_f, n_f, a_f), (i_b, s_b, n_b, a_b) = draws(fdm), draws(baseline)
        assert np.array_equal(i_f, i_b)  # data order, across epochs
        assert torch.equal(s_f, s_b) and torch.equal(n_f, n_b)  # sigma and noise
        assert all(torch.equal(x, y) for x, y in zip(a_f, a_b, strict=True))  # augmentation
        # The FDM variant's sigma is its base's training distribution, drawn with the same calls.
        g = torch.Generator().manual_seed(0)
        assert torch.equal(
            fdm.formulation.sample_sigma(8, g), baseline.formulation.sample_sigma(8, g.manual_seed(0))
        )
        # Another training seed: other weights, order and draws.
        other = training_run(params, base, 2, data, tmp_path / f"{base}-2", augment_p=0.5)
        assert not same_weights(other.net, baseline.net)
        i_o, s_o, n_o, _ = draws(other)
        assert not np.array_equal(i_o, i_b) and not torch.equal(s_o, s_b) and not torch.equal(n_o, n_b)

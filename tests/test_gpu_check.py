"""bench/gpu_check.py rehearsed on the CPU (``--tiny``): every part runs and its table has every row.

The script is for a lent GPU's few minutes, so it must work before one is at hand. The authors' side
(``--official``) runs against their checkout when ``FDM_OFFICIAL_CHECKOUT`` names one (sail-sg/FDM);
otherwise against a stand-in with the interface the script uses (their ``FDM_EDMPrecond``, ``EDMLoss``
and ``AugmentPipe`` and how they are called), written below, so that the path is exercised either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = {
    "training/__init__.py": "",
    "training/networks.py": """
import torch

class FDM_EDMPrecond(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, fdm_multiplier=1.0,
                 augment_dim=0, **model_kwargs):
        super().__init__()
        self.label_dim, self.use_fp16 = label_dim, use_fp16
        self.conv = torch.nn.Conv2d(img_channels, img_channels, 3, padding=1)

    def forward(self, x, sigma, class_labels=None, augment_labels=None):
        return x + self.conv(x / (sigma.reshape(-1, 1, 1, 1) ** 2 + 0.25).sqrt())
""",
    "training/loss.py": """
import torch

class EDMLoss:
    def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5, warmup_ite=None):
        self.warmup_ite = warmup_ite

    def __call__(self, net, images, labels=None, augment_pipe=None):
        sigma = (torch.randn([images.shape[0], 1, 1, 1], device=images.device) * 1.2 - 1.2).exp()
        y, augment_labels = augment_pipe(images)
        D = net(y + torch.randn_like(y) * sigma, sigma, labels, augment_labels=augment_labels)
        return (D - y) ** 2
""",
    "training/augment.py": """
import torch

class AugmentPipe:
    def __init__(self, p=1, **probabilities):
        self.p = p

    def __call__(self, images):
        return images, torch.zeros(images.shape[0], 9, device=images.device)
""",
}


@pytest.fixture
def official(tmp_path) -> Path:
    checkout = os.environ.get("FDM_OFFICIAL_CHECKOUT")
    if checkout:
        return Path(checkout)
    for name, text in STAND_IN.items():
        (tmp_path / "stand-in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stand-in" / name).write_text(text)
    return tmp_path / "stand-in"


@pytest.mark.slow  # two training processes and the digits: about 30 s on 2 cores
def test_gpu_check_rehearses_every_part_on_the_cpu(tmp_path, official):
    rows_file, work = tmp_path / "rows.json", tmp_path / "work"
    args = ["--tiny", "--device", "cpu", "--official", str(official), "--workdir", str(work), "--json",
            str(rows_file), "--confirm-min-s", "0", "--budget-s", "900"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), *args], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(rows_file.read_text())
    rows = report["rows"]
    assert [(r["part"], r["code"], r["precision"]) for r in rows] == [
        ("training", "ours", "fp32"),
        ("training", "ours", "bf16"),
        ("training", "authors'", "fp32"),
        ("training", "authors'", "fp16"),
        ("sampling, Heun NFE 35", "ours", "fp32"),
        ("confirm design: edm", "ours", "fp32"),
        ("confirm design: fdm_edm", "ours", "fp32"),
    ]
    assert all(r["images_per_s"] > 0 and r["seconds"] > 0 for r in rows), rows
    assert rows[3]["note"] == "their use_fp16 applies on CUDA only: ran fp32"  # on the CPU
    for variant in ("edm", "fdm_edm"):
        [row] = [r for r in rows if r["part"] == f"confirm design: {variant}"]
        assert row["note"] == "0.128 of 0.128 kimg"
        assert (work / variant / "snapshots" / "000000.128.safetensors").is_file()
    table = result.stdout.splitlines()
    assert table[0] == "device: cpu" and table[2].startswith("| part | code | precision | batch | images/s |")
    assert len(table) == 4 + len(rows)

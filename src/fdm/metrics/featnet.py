"""The digits feature network: a small CNN classifier whose penultimate layer is the feature space of
``fid_digitsnet`` and ``kid_digitsnet``.

Inception weights are not available offline and Inception features say little about 16x16 digits, so the
digits profile scores samples in the features of a classifier trained on the digits themselves (docs/design.md,
"Offline and real components"). Training is a pipeline stage: a fixed seed, a stratified held-out split,
CPU only, deterministic; the held-out accuracy is reported beside the TorchScript file and must reach a
minimum (97% by default) or nothing is written.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from fdm.atomic import atomic_write
from fdm.errors import FdmError


class DigitsNet(nn.Module):
    """Two conv-ReLU-maxpool stages, then a linear feature layer and a linear classifier head.

    ``forward`` takes images in [0, 255] ``[N, C, H, W]`` (the range clean-fid's extractors take) and
    returns the penultimate features ``[N, feature_dim]``, before the nonlinearity; ``logits`` adds the head.
    """

    def __init__(
        self, img_resolution: int = 16, img_channels: int = 1, num_classes: int = 10, feature_dim: int = 64
    ):
        super().__init__()
        if img_resolution % 4:
            raise ValueError(f"img_resolution must be a multiple of 4, got {img_resolution}")
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(img_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (img_resolution // 4) ** 2, feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x / 127.5 - 1)

    @torch.jit.export
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward(x))


def train_featnet(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    epochs: int = 12,
    batch_size: int = 32,
    lr: float = 3e-3,
    holdout: float = 0.2,
) -> tuple[DigitsNet, dict]:
    """Train a ``DigitsNet`` on uint8 images ``[N, H, W, C]`` with integer ``labels``.

    Adam with a one-cycle learning-rate schedule peaking at ``lr``, on one CPU thread. A stratified
    ``holdout`` fraction is kept out of training. Returns the network (eval mode) and a dict with the
    held-out accuracy and the split sizes. The same inputs and seed give the same network.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise FdmError(
            f"need uint8 images [N, H, W, C] and N labels, got {images.dtype} {list(images.shape)}"
        )
    num_classes = int(labels.max()) + 1
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=holdout, stratify=labels, random_state=seed
    )
    # Canonical NCHW strides: with one channel, an [N, H, W, 1] array and the transpose of an [N, 1, H, W] one
    # hold the same values with different strides, and the convolutions' results depend on the layout.
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    y = torch.from_numpy(labels)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # The network is tiny: more threads only add overhead (and contention).
    try:
        return _train(x, y, train_idx, test_idx, num_classes, seed, epochs, batch_size, lr)
    finally:
        torch.set_num_threads(threads)


def _train(x, y, train_idx, test_idx, num_classes, seed, epochs, batch_size, lr) -> tuple[DigitsNet, dict]:
    """The training loop of ``train_featnet`` on float images ``x`` [N, C, H, W] and labels ``y``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsNet(x.shape[2], x.shape[1], num_classes)
    train_idx = torch.from_numpy(train_idx)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = -(-len(train_idx) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    net.train()
    for _ in range(epochs):
        for batch in train_idx[torch.randperm(len(train_idx), generator=generator)].split(batch_size):
            loss = nn.functional.cross_entropy(net.logits(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval().requires_grad_(False)
    test_idx = torch.from_numpy(test_idx)
    accuracy = (net.logits(x[test_idx]).argmax(dim=1) == y[test_idx]).double().mean().item()
    info = {
        "held_out_accuracy": accuracy,
        "held_out_count": len(test_idx),
        "train_count": len(train_idx),
        "seed": seed,
        "epochs": epochs,
        "feature_dim": net.feature_dim,
    }
    return net, info


def info_path(path: str | os.PathLike) -> Path:
    """The JSON report written beside a feature network file: ``digitsnet.pt`` -> ``digitsnet.json``."""
    return Path(path).with_suffix(".json")


def save_featnet(path: str | os.PathLike, net: DigitsNet, info: dict) -> None:
    """Save ``net`` as TorchScript and ``info`` (plus its weights' sha256) as JSON beside it, atomically."""
    from fdm.metrics.features import quiet_torchscript, weights_sha256

    # Serialise in memory: torch.jit.save names the archive after the file it writes. The archive
    # still holds a random serialization id, so the network is identified by its weights' digest.
    buffer = io.BytesIO()
    with quiet_torchscript():
        torch.jit.save(torch.jit.script(net), buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    report = {**info, "weights_sha256": weights_sha256(net)}

    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    atomic_write(info_path(path), write)


def make_digitsnet(
    dest: str | os.PathLike, seed: int = 0, epochs: int = 12, min_accuracy: float = 0.97
) -> str:
    """Train the digits feature network on the embedded digits (``fdm.data.digits``, what every prepared
    ``digits`` dataset holds) and save it as ``save_if_accurate`` does; returns a summary line."""
    from fdm.data.digits import digits_items

    items = list(digits_items())
    images = np.stack([item.pixels for item in items])
    labels = np.array([item.label for item in items], dtype=np.int64)
    return save_if_accurate(dest, images, labels, {"dataset": "embedded digits"}, seed, epochs, min_accuracy)


def save_if_accurate(
    dest, images: np.ndarray, labels: np.ndarray, about: dict, seed: int, epochs: int, min_accuracy: float
) -> str:
    """Train on uint8 ``images`` [N, H, W, C] and ``labels``; write the network to ``dest`` (and its report,
    with ``about`` the data it learnt from) only if its held-out accuracy reaches ``min_accuracy``."""
    net, info = train_featnet(images, labels, seed=seed, epochs=epochs)
    accuracy = info["held_out_accuracy"]
    if accuracy < min_accuracy:
        raise FdmError(
            f"held-out accuracy {accuracy:.4f} is below the minimum {min_accuracy}; nothing written"
        )
    save_featnet(dest, net, {**info, **about})
    return f"held-out accuracy {accuracy:.4f} ({info['held_out_count']} images); wrote {dest} and {info_path(dest)}"

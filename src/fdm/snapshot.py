"""Inference snapshots: EMA weights as safetensors with the resolved config in the metadata.

A snapshot never holds pickled code (DESIGN.md, "Checkpoints"): it is a flat map of tensors plus
two metadata strings, ``fdm_snapshot`` (the format version) and ``config`` (JSON). The config has
at least ``network`` (keyword arguments of ``fdm.nets.build``) and ``formulation`` (the dict of
``Formulation.config()``), so ``load_denoiser`` needs nothing but the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from fdm.errors import FdmError

FORMAT_VERSION = "1"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_snapshot(path, state_dict: dict[str, torch.Tensor], config: dict) -> None:
    """Write ``state_dict`` (tensors only) and ``config`` to ``path`` atomically."""
    for key in ("network", "formulation"):
        if key not in config:
            raise ValueError(f"snapshot config needs a {key!r} entry")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    metadata = {"fdm_snapshot": FORMAT_VERSION, "config": json.dumps(config, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_snapshot(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a snapshot written by ``save_snapshot``; anything else is a clear ``FdmError``."""
    path = Path(path)
    if not path.is_file():
        raise FdmError(f"snapshot {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise FdmError(f"{path} is not an fdm snapshot (not a readable safetensors file: {err})") from None
    if metadata.get("fdm_snapshot") != FORMAT_VERSION or "config" not in metadata:
        raise FdmError(
            f"{path} is a safetensors file but not an fdm snapshot (no fdm_snapshot/config metadata)"
        )
    return state, json.loads(metadata["config"])


def load_denoiser(path, device: str | torch.device = "cpu"):
    """Rebuild the EMA denoiser of a snapshot: returns ``(Denoiser, config)`` in eval mode, without grads."""
    from fdm.diffusion import Denoiser, formulation
    from fdm.nets import build

    state, config = load_snapshot(path)
    try:
        net = build(**config["network"])
        net.load_state_dict(state, strict=True)
        denoiser = Denoiser(net, formulation(**config["formulation"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise FdmError(f"snapshot {path} does not match its own config: {err}") from None
    return denoiser.eval().requires_grad_(False).to(device), config

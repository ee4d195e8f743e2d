"""Inference snapshots: EMA weights as safetensors with the resolved config in the metadata.

A snapshot never holds pickled code (docs/design.md, "The core contracts"): it is a flat map of tensors plus
one metadata string, ``fdm_snapshot``, the JSON ``{"version": 1, "config": {...}}``. (One key, because
safetensors writes several metadata keys in an arbitrary order, which would break byte-identical
snapshots.) The config has
at least ``network`` (keyword arguments of ``fdm.nets.build``) and ``formulation`` (the dict of
``Formulation.config()``), so ``load_denoiser`` needs nothing but the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from fdm.atomic import atomic_write
from fdm.errors import FdmError

FORMAT_VERSION = 1


def save_snapshot(path, state_dict: dict[str, torch.Tensor], config: dict) -> None:
    """Write ``state_dict`` (tensors only) and ``config`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: write_snapshot(tmp, state_dict, config))


def write_snapshot(path, state_dict: dict[str, torch.Tensor], config: dict) -> None:
    """Write the snapshot file ``path`` as it is (``save_snapshot`` does it atomically; the importer's child
    process writes the temporary file its parent renames)."""
    for key in ("network", "formulation"):
        if key not in config:
            raise ValueError(f"snapshot config needs a {key!r} entry")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    metadata = {"fdm_snapshot": json.dumps({"version": FORMAT_VERSION, "config": config}, sort_keys=True)}
    save_file(tensors, str(path), metadata=metadata)


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
    try:
        header = json.loads(metadata["fdm_snapshot"])
        version, config = header["version"], header["config"]
    except (KeyError, TypeError, ValueError):
        raise FdmError(
            f"{path} is a safetensors file but not an fdm snapshot (no fdm_snapshot metadata)"
        ) from None
    if version != FORMAT_VERSION:
        raise FdmError(f"{path}: snapshot format {version} is not supported (expected {FORMAT_VERSION})")
    return state, config


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

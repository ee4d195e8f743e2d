"""Import the authors' checkpoints: EDM and FDM training pickles into this project's snapshots.

EDM (Karras et al. 2022, arXiv 2206.00364, https://github.com/NVlabs/edm) and FDM (Wu et al. 2023,
arXiv 2306.06991, https://github.com/sail-sg/FDM) save ``network-snapshot-*.pkl`` as a pickled dict
``{"ema": <preconditioned network>, "loss_fn": ..., "augment_pipe": ..., "dataset_kwargs": ...}``
whose classes carry their own source code. ``fdm.checkpoints.unpickle`` reads such a file as data
only; ``fdm.checkpoints.convert`` maps the EMA network to ``fdm.nets.build`` options and a formulation,
and ``fdm.checkpoints.mapping`` its weights to our state dict (docs/networks.md, "The authors' state
dict" and "Importing the authors' checkpoints").

    from fdm.checkpoints import import_checkpoint, load_authors_pickle
    config = import_checkpoint("network-snapshot-200000.pkl", "imported.safetensors")
    D = load_authors_pickle("network-snapshot-200000.pkl")     # the Denoiser, without a file
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fdm.checkpoints.convert import PRECONDS, formulation_config, jsonable, load_weights, network_config
from fdm.checkpoints.source import is_url, locate
from fdm.checkpoints.unpickle import Persistent, load_training_pickle
from fdm.diffusion import Denoiser, formulation
from fdm.digest import file_sha256
from fdm.errors import FdmError
from fdm.nets import build
from fdm.snapshot import save_snapshot

# Options of the preconditioner that name the image format, checked against the network's own.
_SHARED = (("img_resolution", "img_resolution"), ("img_channels", "in_channels"), ("label_dim", "label_dim"))


def _convert(path: Path, source: str, digest: str) -> tuple[torch.nn.Module, dict]:
    """The raw network with the pickle's EMA weights and the snapshot config describing it."""
    tree = load_training_pickle(path)
    ema = tree.get("ema") if isinstance(tree, dict) else None
    if not isinstance(ema, Persistent):
        raise FdmError(f"{path} holds no 'ema' network (not the dict an EDM/FDM training run pickles)")
    if ema.class_name not in PRECONDS:
        raise FdmError(
            f"unknown preconditioner class {ema.class_name!r} for 'ema'; expected one of {', '.join(PRECONDS)}"
        )
    model = (ema.state.get("_modules") or {}).get("model")
    if not isinstance(model, Persistent):
        raise FdmError(f"the {ema.class_name} in {path} holds no pickled network 'model'")
    loss = tree.get("loss_fn") if isinstance(tree.get("loss_fn"), Persistent) else None
    network = network_config(model)
    form, notes = formulation_config(ema, loss)
    for ours, theirs in _SHARED:
        value = model.init_kwargs.get(theirs, 0)
        if ema.init_kwargs.get(ours, value) != value:
            raise FdmError(f"{ema.class_name} has {ours}={ema.init_kwargs[ours]!r} but its network {value!r}")
    if ema.init_kwargs.get("use_fp16"):
        notes.append("use_fp16: the authors ran the network in float16 on GPUs; it runs in float32 here")
    try:
        net = build(**network)
    except (TypeError, ValueError) as err:
        raise FdmError(f"the pickle's SongUNet options do not build here: {err}") from None
    load_weights(net, model)
    loss_record = loss and {
        "class_name": loss.class_name,
        "init_kwargs": jsonable(loss.init_kwargs, f"{loss.class_name} option"),
    }
    imported = {
        "source": source,
        "sha256": digest,
        "class_name": ema.class_name,
        "init_kwargs": jsonable(ema.init_kwargs, f"{ema.class_name} option"),
        "network_class_name": model.class_name,
        "network_init_kwargs": jsonable(model.init_kwargs, "SongUNet option"),
        "loss": loss_record,
        "notes": notes,
    }
    return net.eval().requires_grad_(False), {"network": network, "formulation": form, "imported": imported}


def _convert_file(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    path = Path(path)
    if not path.is_file():
        raise FdmError(f"no such file: {path}")
    return _convert(path, str(path.resolve()), file_sha256(path))


def convert_pickle(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, snapshot config) of an EDM/FDM training pickle, as ``save_snapshot`` takes them."""
    net, config = _convert_file(path)
    return net.state_dict(), config


def load_authors_pickle(path: str | os.PathLike) -> Denoiser:
    """Our ``Denoiser`` (eval mode, no grads, CPU) for the EMA network of an EDM/FDM training pickle."""
    net, config = _convert_file(path)
    return Denoiser(net, formulation(**config["formulation"])).eval().requires_grad_(False)


def import_checkpoint(
    source: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Convert ``source`` (a file or an http(s) URL, downloaded once into ``cache_dir``) into the snapshot
    ``dest``; return its config. ``sha256`` is checked before the pickle is read."""
    path, digest = locate(source, sha256, cache_dir)
    net, config = _convert(path, source if is_url(source) else str(path.resolve()), digest)
    save_snapshot(dest, net.state_dict(), config)
    return config


__all__ = ["convert_pickle", "import_checkpoint", "load_authors_pickle"]

"""Import the authors' checkpoints: EDM and FDM training pickles into this project's snapshots.

EDM (Karras et al. 2022, arXiv 2206.00364, https://github.com/NVlabs/edm) and FDM (Wu et al. 2023,
arXiv 2306.06991, https://github.com/sail-sg/FDM) save ``network-snapshot-*.pkl`` as a pickled dict
``{"ema": <preconditioned network>, "loss_fn": ..., "augment_pipe": ..., "dataset_kwargs": ...}``
whose classes carry their own source code. ``fdm.checkpoints.unpickle`` reads such a file as data
only; ``fdm.checkpoints.convert`` maps the EMA network to ``fdm.nets.build`` options and a formulation,
and ``fdm.checkpoints.mapping`` its weights to our state dict. The conversion runs in a child process
with limits on memory and time (``fdm.checkpoints.backstop``); this package itself imports no torch
until a function returning tensors is called. docs/checkpoints.md has the checks and the limits.

    from fdm.checkpoints import import_checkpoint, load_authors_pickle
    config = import_checkpoint("network-snapshot-200000.pkl", "imported.safetensors")
    D = load_authors_pickle("network-snapshot-200000.pkl")     # the Denoiser, without a file
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fdm.atomic import replacing
from fdm.checkpoints import backstop
from fdm.checkpoints.source import expected_sha256, is_url, locate
from fdm.errors import FdmError

DEFAULT_MAX_BYTES = (
    2 << 30
)  # 2 GiB: the largest pickle read or downloaded (a CIFAR-10 DDPM++ one is 0.22 GiB)
DEFAULT_DOWNLOAD_SECONDS = 3600.0  # the whole download of a URL


def limits(size: int) -> dict:
    """The conversion's limits for a pickle of ``size`` bytes: memory beyond what the child starts with
    (the file, its storages, the network and the snapshot's buffers take about 6 times the file), CPU
    seconds (a 0.22 GiB pickle takes about 5), and wall-clock seconds (for a busy machine)."""
    gib = size / 2**30
    return {"memory": (1 << 30) + 8 * size, "seconds": 60 + 120 * gib, "wall_seconds": 180 + 360 * gib}


def _convert(path: Path, source: str, sha256: str | None, max_bytes: int, out: Path) -> dict:
    """Run ``fdm.checkpoints.convert.convert_file`` on ``path`` within the backstop's limits."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise FdmError(f"cannot read {path}: {err.strerror or err}") from None
    return backstop.run(
        "fdm.checkpoints.convert:convert_file",
        (str(path), source, sha256, max_bytes, str(out)),
        what=f"importing {path}",
        preload=("fdm.checkpoints.convert",),
        **limits(min(size, max_bytes)),
    )


def _new_folders(folder: Path) -> list[Path]:
    """The folders that writing into ``folder`` will create, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def import_checkpoint(
    source: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    download_seconds: float = DEFAULT_DOWNLOAD_SECONDS,
) -> dict:
    """Convert ``source`` (a file or an http(s) URL, downloaded once into ``cache_dir``) into the snapshot
    ``dest``; return its config. ``sha256`` is checked on the very bytes that are unpickled; a pickle over
    ``max_bytes`` is refused, a download is limited to ``max_bytes`` and ``download_seconds``. On any
    refusal nothing is left at ``dest`` (nor the folders made for it)."""
    expected = expected_sha256(sha256)
    path, cached = locate(source, expected, cache_dir, max_bytes=max_bytes, deadline=download_seconds)
    label = source if is_url(source) else str(path.resolve())
    dest = Path(dest)
    created = _new_folders(dest.parent)
    try:
        with replacing(dest) as tmp:
            return _convert(path, label, expected, max_bytes, tmp)
    except FdmError as err:
        if getattr(err, "kind", None) == "ChecksumMismatch" and cached:
            path.unlink(missing_ok=True)
            raise FdmError(f"{err}; the cached download was removed, run again to download it anew") from None
        raise
    except OSError as err:  # the temporary file beside dest, or its rename
        raise FdmError(f"cannot write {dest}: {err.strerror or err}") from None
    finally:
        if not dest.exists():
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:  # not empty: someone else writes there too
                    break


def _converted(path: str | os.PathLike, max_bytes: int):
    """(The snapshot file's state dict, its config) of the training pickle ``path``, through a temporary file."""
    from fdm.snapshot import load_snapshot

    path = Path(path)
    if not path.is_file():
        raise FdmError(f"no such file: {path}")
    with tempfile.TemporaryDirectory(prefix="fdm-import-") as folder:
        out = Path(folder) / "imported.safetensors"
        _convert(path, str(path.resolve()), None, max_bytes, out)
        return load_snapshot(out)


def convert_pickle(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES):
    """(state dict, snapshot config) of an EDM/FDM training pickle, as ``save_snapshot`` takes them."""
    return _converted(path, max_bytes)


def load_authors_pickle(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES):
    """Our ``Denoiser`` (eval mode, no grads, CPU) for the EMA network of an EDM/FDM training pickle."""
    from fdm.diffusion import Denoiser, formulation
    from fdm.nets import build

    state, config = _converted(path, max_bytes)
    net = build(**config["network"])
    net.load_state_dict(state, strict=True)
    return Denoiser(net, formulation(**config["formulation"])).eval().requires_grad_(False)


__all__ = ["DEFAULT_MAX_BYTES", "convert_pickle", "import_checkpoint", "load_authors_pickle"]

"""The shared store: what several profiles of one checkout would make alike, made once.

A prepared dataset depends only on its preparation settings (source, raw files, size, labels) and the
code that prepares it; reference statistics only on the dataset's bytes, the feature network's weights, the
mode and the code that computes them. Two profiles that ask for the same get the same file: it is made
once into ``data/store/<kind>/<key><suffix>``, where ``key`` is a SHA-256 of exactly those inputs (written
beside it as ``<key>.json``), and each profile's own path (``out/<profile>/data/...``) is a copy of it. The
profile's file is its jobs' declared output, so Snakemake and DVC see each profile's files only, and a
job whose key is in the store finishes in the time of a copy. (A copy, not a hard link: a link would
share its modification time with every other profile's file, and Snakemake compares those.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from fdm import paths
from fdm.atomic import atomic_write, atomic_write_text


def key_of(inputs: dict) -> str:
    """The store key of ``inputs`` (a JSON-able dict): its SHA-256, shortened to 32 hex digits."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def provide(dest: str | os.PathLike, kind: str, inputs: dict, make: Callable[[str], object]) -> bool:
    """Give ``dest`` the file that ``inputs`` determine: from the store if it holds it, else made by
    ``make(path)`` (which writes ``path`` atomically) into the store first. Returns whether it was reused."""
    dest = Path(dest)
    key = key_of(inputs)
    stored = Path(paths.STORE) / kind / f"{key}{dest.suffix}"
    reused = stored.is_file()
    if not reused:
        stored.parent.mkdir(parents=True, exist_ok=True)
        make(str(stored))
        atomic_write_text(stored.with_suffix(".json"), json.dumps(inputs, indent=2, sort_keys=True) + "\n")
    atomic_write(dest, lambda tmp: shutil.copyfile(stored, tmp))
    return reused

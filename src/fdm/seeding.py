"""Every seed of the pipeline derives from one integer and a job identity, through one function.

``derive_seed(seed, *parts)`` hashes its arguments with SHA-256 and keeps 63 bits, so seeds for
different purposes are unrelated even when their inputs differ by one (seed 1 vs 2, sample 7 vs 8),
and they do not depend on Python's per-process string hashing. Examples:

- the training seed of a job: ``derive_seed(params.seed, dataset, training_seed)``, the same for every
  variant, so that a variant and its baseline share their draws (a paired comparison);
- inside training (``fdm.training``): the network initialisation ``derive_seed(seed, "init")``, the
  data order of epoch e ``derive_seed(seed, "order", e)``, the draws of the k-th training sample
  ``derive_seed(seed, "sample", k)`` and the dropout masks of a micro-batch starting at sample k
  ``derive_seed(seed, "dropout", k)``.

Parts must be JSON-able (ints, floats, strings, lists of them); their order matters. Importing this
module does not import torch.
"""

from __future__ import annotations

import hashlib
import json

SEED_BITS = 63


def derive_seed(seed: int, *parts) -> int:
    """A seed in [0, 2^63) from ``seed`` and ``parts``: the first 8 bytes of SHA-256 of their JSON, big-endian."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    payload = json.dumps([seed, *parts], separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(payload).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def generator(seed: int, *parts):
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *parts)``."""
    import torch  # Here, so that ``derive_seed`` alone does not pay for importing torch.

    return torch.Generator().manual_seed(derive_seed(seed, *parts))

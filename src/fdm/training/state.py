"""The training state for resume: plain tensors, dicts, lists and numbers only, never pickled code.

``state.pt`` holds everything a run needs to continue bit for bit (docs/design.md, "The core contracts"):

- ``model``, ``ema``: state dicts of the raw network F and of its EMA;
- ``optimizer``: the Adam state dict (moments and step counts as tensors);
- ``images_seen`` and ``step`` (optimizer steps: the FDM loss-weight cap is a function of it);
- ``config``: the training configuration as a dict, to refuse resuming with different settings;
- ``log_bytes``: the length of ``train.jsonl`` when the state was written, so a resumed run drops
  the lines written after it.

There is no random-number-generator state to carry: every random draw of training is keyed by the
run seed and the global index of the sample (``fdm.training.stream``), so ``images_seen`` restores it.

The file is written atomically (temporary file, fsync, rename) and read with
``torch.load(weights_only=True)``, which unpickles no classes; a file that needs more (a pickled
object) or lacks these keys is refused with a clear ``FdmError``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fdm.atomic import atomic_write
from fdm.errors import FdmError

STATE_FORMAT = 1
STATE_KEYS = ("format", "model", "ema", "optimizer", "images_seen", "step", "config", "log_bytes")


def save_state(path, state: dict) -> None:
    """Write ``state`` (the keys of ``STATE_KEYS``) to ``path`` atomically."""
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"training state lacks {', '.join(missing)}")
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path) -> dict:
    """Read a state written by ``save_state`` without unpickling any code; refuse anything else."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    # A damaged file fails inside torch.load in many ways (IndexError, OSError, struct.error, ...).
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FdmError(f"{path} is not a plain training state (refusing to load it: {reason})") from None
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        raise FdmError(f"{path} is not a plain training state (expected the keys {', '.join(STATE_KEYS)})")
    if state["format"] != STATE_FORMAT:
        raise FdmError(f"{path} has training-state format {state['format']}, expected {STATE_FORMAT}")
    return state

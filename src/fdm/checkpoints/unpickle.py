"""Read the authors' training pickles as data, without running anything from them.

EDM (https://github.com/NVlabs/edm) and FDM (https://github.com/sail-sg/FDM) save networks with
``torch_utils/persistence.py``: every decorated object is pickled as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` holds the class's whole
module source, the class name and the object's ``__dict__`` (for a ``torch.nn.Module``: ``training``,
``_parameters``, ``_buffers``, ``_modules``, the hook dicts, and ``_init_kwargs``, the constructor's
keyword arguments). Loading such a file with ``pickle.load`` executes that source. Tensors go through
torch's reduce functions, whose storages are themselves small ``torch.save`` byte streams.

``RestrictedUnpickler`` resolves only these globals (anything else, and any persistent id, is refused
before it is called, with the global's ``module.name``):

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> ``Persistent``, an inert record of the class
  name and state; the module source is never compiled;
- ``torch.storage._load_from_bytes`` -> the bytes are parsed by ``torch.load(weights_only=True)``, torch's
  own allow-list unpickler for untrusted files, which yields a plain storage or refuses;
- ``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter`` -> checked wrappers building a plain
  tensor over such a storage (hooks dropped, bounds checked by ``Tensor.set_``);
- ``collections.OrderedDict`` and ``builtins.set`` (plain containers, the latter in protocol-3 pickles);
- ``torch.nn.modules.container.ModuleDict`` / ``ModuleList`` / ``Sequential`` -> ``Container``, an inert
  stand-in that only keeps its pickled ``__dict__`` (it refuses to be called);
- ``numpy.dtype`` and numpy's ``scalar`` (FDM's loss object keeps its warmup factor as a numpy float):
  numpy's own constructors of a number from its bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fdm.errors import FdmError


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; ``name`` is its ``module.name``."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass(eq=False)
class Persistent:
    """What ``_reconstruct_persistent_obj`` would have rebuilt: the class name and the object's state."""

    class_name: str
    state: dict = field(repr=False)

    @property
    def init_kwargs(self) -> dict:
        kwargs = self.state.get("_init_kwargs")
        if not isinstance(kwargs, dict) or self.state.get("_init_args"):
            raise FdmError(
                f"the {self.class_name} in the pickle records no keyword-only constructor arguments"
            )
        return kwargs

    def __setstate__(self, state):
        raise pickle.UnpicklingError("refusing to update a persistent object's state after construction")


class Container:
    """Inert stand-in for torch's module containers: NEWOBJ creates it and BUILD hands it its state."""

    kind = "Container"

    def __init__(self, *args, **kwargs):
        raise RefusedGlobal(f"torch.nn.modules.container.{self.kind} (called with arguments)")

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a {self.kind} with a {type(state).__name__} state")
        self.state = state


def _container(kind: str) -> type[Container]:
    return type(kind, (Container,), {"kind": kind})


def _persistent(meta) -> Persistent:
    if not (
        isinstance(meta, dict)
        and meta.get("type") == "class"
        and isinstance(meta.get("class_name"), str)
        and isinstance(meta.get("module_src"), str)
        and isinstance(meta.get("state"), dict)
    ):
        raise pickle.UnpicklingError("a persistent object without the class name, source and state it needs")
    return Persistent(meta["class_name"], meta["state"])


def _load_storage(data) -> torch.storage.TypedStorage:
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("a tensor storage that is not a byte string")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage's deprecation notice
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        named = re.search(r"GLOBAL (\S+)", str(err))
        reason = f"the global {named[1]}" if named else str(err).strip().splitlines()[0]
        raise pickle.UnpicklingError(
            f"a tensor storage is not plain data (torch's weights-only loader refused {reason})"
        ) from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"a tensor storage holds a {type(storage).__name__}")
    return storage


def _is_ints(values) -> bool:
    return isinstance(values, tuple) and all(type(v) is int for v in values)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not (
        isinstance(storage, torch.storage.TypedStorage)
        and type(offset) is int
        and _is_ints(size)
        and _is_ints(stride)
        and len(size) == len(stride)
        and not metadata
    ):
        raise pickle.UnpicklingError("a malformed tensor record")
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter that wraps no tensor")
    return data


_NUMPY_SCALAR = np.float64(0).__reduce__()[0]  # Its module moved in numpy 2: take it from numpy itself.

ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    **{("torch.nn.modules.container", k): _container(k) for k in ("ModuleDict", "ModuleList", "Sequential")},
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NUMPY_SCALAR,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals in ``ALLOWED`` and no persistent ids."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id (training pickles have none)")


def load_training_pickle(path: str | Path):
    """The object tree of a training pickle: ``Persistent`` and ``Container`` records, tensors, plain data.

    Any refusal or damage is a one-line ``FdmError``; nothing from the file is executed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except RefusedGlobal as err:
        raise FdmError(
            f"{path}: refusing to load the global {err.name}: an EDM/FDM training pickle holds only "
            "networks, tensors and plain data (nothing was run)"
        ) from None
    except OSError as err:
        raise FdmError(f"cannot read {path}: {err.strerror or err}") from None
    except EOFError:
        raise FdmError(f"{path}: truncated pickle (the data ends early)") from None
    except Exception as err:  # Whatever a damaged or foreign pickle raises.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FdmError(f"{path} is not a readable EDM/FDM training pickle ({reason})") from None

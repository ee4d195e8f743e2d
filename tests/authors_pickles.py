"""Stand-ins for the authors' training pickles, built without their code (tests/test_import_checkpoint.py).

EDM's and FDM's ``torch_utils/persistence.py`` pickle every decorated object as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, ``meta`` = {type, version, module_src,
class_name, state}, with state the object's ``__dict__``. ``StubModule`` does the same with a module
source of "# stub" lines, so its pickles have the real structure: nested persistent modules, torch ModuleDicts,
parameters and buffers through torch's own reduce functions, numpy scalars among the attributes.

``training_pickle`` lays out a network of ours under the authors' SongUNet names with
``fdm.checkpoints.mapping.to_theirs`` (which bench/official_crosscheck.py checks against the authors'
own SongUNet): the importer, which inverts that mapping, must give back exactly the network it started
from.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import struct

import numpy as np
import torch

from fdm.checkpoints.mapping import to_theirs

# What pickles written by the authors' code hold (bench/official_crosscheck.py checks it on real ones).
REAL_GLOBALS = {
    "torch_utils.persistence._reconstruct_persistent_obj",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.storage._load_from_bytes",
    "torch.nn.modules.container.ModuleDict",
    "collections.OrderedDict",
    "numpy.dtype",
    f"{np.float64(0).__reduce__()[0].__module__}.scalar",  # numpy._core.multiarray from numpy 2 on
}
REAL_OPCODES = set(
    "APPEND APPENDS BINBYTES BINFLOAT BINGET BININT BININT1 BININT2 BINUNICODE BUILD EMPTY_DICT EMPTY_LIST "
    "EMPTY_SET EMPTY_TUPLE FRAME LONG_BINGET MARK MEMOIZE NEWFALSE NEWOBJ NEWTRUE NONE PROTO REDUCE SETITEM "
    "SETITEMS SHORT_BINBYTES SHORT_BINUNICODE STACK_GLOBAL STOP TUPLE TUPLE1 TUPLE2 TUPLE3".split()
)

# Long enough (over 255 bytes) to be pickled with the same opcode as a real module source.
_STUB_SOURCE = "# stub\n" * 40
# Every layer name of the authors' SongUNet ends in one of these; the class it belongs to.
_CLASSES = {
    "norm": "GroupNorm",
    "conv": "Conv2d",
    "skip": "Conv2d",
    "qkv": "Conv2d",
    "proj": "Conv2d",
    "residual": "Conv2d",
    "aux_down": "Conv2d",  # kernel 0: only the FIR filter
    "aux_up": "Conv2d",
    "affine": "Linear",
    "label": "Linear",
    "augment": "Linear",
    "layer": "Linear",
}


class Global:
    """A reference to ``module.name`` that ``dumps`` writes as a pickle global, without importing it."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle only writes callables as the function of a reduce
        raise TypeError(f"{self.module}.{self.name} is only a name here")

    def __deepcopy__(self, memo):  # a name: copies are the same name
        return self


PERSISTENCE = Global("torch_utils.persistence", "_reconstruct_persistent_obj")


class Call:
    """Pickles as a call of ``func`` (a ``Global``) with ``args``: what a malicious ``__reduce__`` returns."""

    def __init__(self, func: Global, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # so that a call can be the function of another (getattr(...)(...))
        raise TypeError("only pickled, never called")

    def __deepcopy__(self, memo):  # what ``stub`` copies must still pickle as this call
        return self


class Built(Call):
    """Pickles as a call of ``func`` with ``args``, then BUILD with ``state``."""

    def __init__(self, func: Global, args: tuple, state):
        super().__init__(func, *args)
        self.state = state

    def __reduce__(self):
        return self.func, self.args, self.state


class _Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_reference(self, obj: Global) -> None:
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = save_reference


def dumps(obj, protocol: int = 4) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def opcodes(*parts: bytes, protocol: int = 4) -> bytes:
    """A pickle of the raw operations ``parts`` after PROTO (bytes 0 and 1), then STOP."""
    return bytes([0x80, protocol]) + b"".join(parts) + b"."


def text(value: str) -> bytes:
    """SHORT_BINUNICODE of ``value``."""
    return b"\x8c" + bytes([len(value)]) + value.encode()


def floats(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


FLOAT_STORAGE = Global("torch", "FloatStorage")


def storage_stream(
    raw: bytes = floats(0.5),
    *,
    numel: int | None = None,
    magic: int = 0x1950A86A20F9469CFC6C,
    protocol: int = 1001,
    system=None,
    record: tuple | None = None,
    keys: list | None = None,
    storage_type=FLOAT_STORAGE,
) -> bytes:
    """The legacy ``torch.save`` stream of one storage (what ``Storage.__reduce__`` pickles): magic number,
    protocol, system information, the storage record as a persistent id, its key list, then the element
    count (int64) and the raw elements. Each part can be replaced by a broken one."""
    numel = len(raw) // 4 if numel is None else numel
    record = ("storage", storage_type, "0", "cpu", numel, None) if record is None else record
    marker = object()

    class Header(_Pickler):
        def persistent_id(self, obj):
            return record if obj is marker else None

    out = io.BytesIO()
    system = {"protocol_version": 1001, "little_endian": True} if system is None else system
    for obj in (magic, protocol, system):
        pickle.dump(obj, out, protocol=2)
    Header(out, protocol=2).dump(marker)
    pickle.dump(["0"] if keys is None else keys, out, protocol=2)
    out.write(struct.pack("<q", numel) + raw)
    return out.getvalue()


class _Persistent:
    def __reduce__(self):
        meta = dict(
            type="class",
            version=6,
            module_src=_STUB_SOURCE,
            class_name=type(self).__name__,
            state=self.__dict__,
        )
        return PERSISTENCE, (meta,)


class StubModule(_Persistent, torch.nn.Module):
    pass


class StubObject(_Persistent):
    pass


def stub(class_name: str, init_kwargs: dict, module: bool = True, **attributes):
    """An instance of a persistent class named ``class_name`` with the authors' ``_init_*`` records."""
    obj = type(class_name, (StubModule if module else StubObject,), {})()
    # persistence records a deep copy of the keyword arguments: no two objects share a part
    obj.__dict__.update(attributes, _init_args=(), _init_kwargs=copy.deepcopy(init_kwargs))
    return obj


def _class_of(part: str) -> str:
    if part.startswith("map_noise"):
        return "PositionalEmbedding"
    for suffix, name in _CLASSES.items():
        if part.rstrip("0123456789").endswith(suffix):
            return name
    return "UNetBlock"  # {R}x{R}_down, _up, _block<i>, _in<i>


def network_tree(tensors: dict[str, torch.Tensor], model_kwargs: dict, class_name: str) -> StubModule:
    """The authors' SongUNet as pickled: persistent modules, ``enc``/``dec`` ModuleDicts, tensors."""
    model = stub(class_name, model_kwargs, label_dropout=0)
    embedding = "FourierEmbedding" if model_kwargs["embedding_type"] == "fourier" else "PositionalEmbedding"
    model.add_module("map_noise", stub(embedding, {"num_channels": 0}))
    for name, tensor in tensors.items():
        *path, leaf = name.split(".")[1:]
        module = model
        for part in path:
            if part not in module._modules:
                if module is model and part in ("enc", "dec"):
                    child = torch.nn.ModuleDict()
                elif _class_of(part) == "UNetBlock":
                    child = stub("UNetBlock", {"eps": 1e-6}, skip_scale=np.float64(math.sqrt(0.5)))
                else:
                    child = stub(_class_of(part), {})
                    if _class_of(part) == "Conv2d":
                        child.register_buffer("resample_filter", None)
                module.add_module(part, child)
            module = module._modules[part]
        if leaf in ("resample_filter", "freqs"):
            module.register_buffer(leaf, tensor)
        else:
            module.register_parameter(leaf, torch.nn.Parameter(tensor, requires_grad=False))
    return model


def training_pickle(
    class_name: str,
    network: dict,
    net: torch.nn.Module,
    precond_kwargs: dict | None = None,
    loss: tuple[str, dict] | None = ("EDMLoss", {}),
    model_class: str = "SongUNet",
    protocol: int = 4,
    edit=None,
) -> bytes:
    """What the authors' training loop pickles: {ema, loss_fn, augment_pipe, dataset_kwargs}.

    ``network`` holds our ``build`` options (all of them, as the importer writes them); ``net`` the weights.
    ``edit``, if given, may change that dict of stand-in objects before it is pickled (an attacker's edits).
    """
    model_kwargs = {k: v for k, v in network.items() if k not in ("arch", "img_channels")}
    model_kwargs.update(in_channels=network["img_channels"], out_channels=network["img_channels"])
    tensors = {f"model.{name}": tensor.clone() for name, tensor in to_theirs(net).items()}
    model = network_tree(tensors, model_kwargs, model_class)
    interface = {k: network[k] for k in ("img_resolution", "img_channels", "label_dim")}
    model_options = {k: v for k, v in network.items() if k not in ("arch", *interface)}
    kwargs = {
        **interface,
        "model_type": model_class,
        "use_fp16": False,
        **model_options,
        **(precond_kwargs or {}),
    }
    ema = stub(class_name, kwargs, **{k: v for k, v in kwargs.items() if k in interface})
    ema.add_module("model", model)
    loss_fn = None
    if loss is not None:
        loss_name, loss_kwargs = loss
        attributes = dict(loss_kwargs, clamp_cur=5.0, clamp_max=500.0)
        if loss_kwargs.get("warmup_ite"):
            attributes["warmup_step"] = np.exp(np.log(100) / loss_kwargs["warmup_ite"])
        loss_fn = stub(loss_name, loss_kwargs, module=False, **attributes)
    data = dict(
        ema=ema.eval().requires_grad_(False),
        loss_fn=loss_fn,
        augment_pipe=stub("AugmentPipe", {"p": 0.12}, module=False, p=0.12, xflip=1e8),
        dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x.zip", use_labels=True),
    )
    if edit is not None:
        edit(data)
    return dumps(data, protocol)

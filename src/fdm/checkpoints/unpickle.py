"""Read the authors' training pickles as data, in bounded time and memory, without running anything from them.

EDM (https://github.com/NVlabs/edm) and FDM (https://github.com/sail-sg/FDM) save networks with
``torch_utils/persistence.py``: every decorated object is pickled as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` holds the class's whole
module source, the class name and the object's ``__dict__`` (for a ``torch.nn.Module``: ``training``,
``_parameters``, ``_buffers``, ``_modules``, the hook dicts, and ``_init_kwargs``, the constructor's
keyword arguments). Loading such a file with ``pickle.load`` executes that source. Tensors go through
torch's reduce functions, whose storages are themselves small legacy-format ``torch.save`` byte streams.

``RestrictedUnpickler`` is not ``pickle.Unpickler``: it runs its own stack machine over the opcodes
``pickletools.genops`` reads, one pass, and

- accepts only the opcodes real training pickles use (``OPCODES``; protocol 4, and 2/3's ``GLOBAL`` and
  ``BINPUT``), at most ``MAX_OPERATIONS`` of them, with memo entries numbered in order;
- lets a memo reference (``BINGET``) return only immutable leaves (strings, numbers, allow-listed
  globals, dtypes): a container, tensor or storage referenced twice, or a structure containing itself,
  is refused, and with it every exponential expansion of shared parts (hashing, ``repr``, JSON);
- takes only ``str`` dict keys and set members, nests at most ``MAX_DEPTH`` levels, and applies BUILD
  only to module containers (their ``__dict__``) and numpy dtypes (their canonical state);
- resolves only the globals of ``ALLOWED``, each an immutable ``Allowed`` (no ``__dict__``; a state is
  refused), anything else refused by name before it is called:

  - ``torch_utils.persistence._reconstruct_persistent_obj`` -> ``Persistent``, an inert record of the
    class name and state; the module source is never compiled;
  - ``torch.storage._load_from_bytes`` -> ``Storage``: the legacy ``torch.save`` stream parsed here
    (magic number, protocol 1001, header, one storage of a numeric type, its declared element count
    equal to the bytes that follow); the zip format is refused (real checkpoints never use it), and the
    storages of a file together hold at most as many bytes as the file;
  - ``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter`` -> a plain tensor viewing
    ``offset .. offset + numel`` of such a storage, after checking that range lies inside it with
    row-major strides (as every tensor of a real checkpoint has) that fit int64, also for an empty
    tensor; hooks must be empty;
  - ``collections.OrderedDict`` (called without arguments) and ``builtins.set`` (of strings);
  - ``torch.nn.modules.container.ModuleDict`` / ``ModuleList`` / ``Sequential`` -> ``Container``, created
    empty by NEWOBJ, given its ``__dict__`` once by BUILD; calling one is refused;
  - ``numpy.dtype`` -> ``Dtype`` (a numeric type code whose state must be numpy's canonical one) and
    numpy's ``scalar`` -> the Python number of exactly one item's bytes (FDM's loss object and the U-Net
    blocks keep a few numpy floats). No numpy object is built from the file.

Every refusal is a ``Refusal`` (an ``FdmError``) with a one-line reason; strings from the file appear in it
only through ``fdm.errors.named``/``shown``, which escape and shorten them.
"""

from __future__ import annotations

import collections
import io
import itertools
import math
import pickletools
import re
import struct

import torch

from fdm.errors import FdmError, named, shown

# What real EDM/FDM training pickles are made of (tests/authors_pickles.py lists the protocol-4 set, which
# bench/official_crosscheck.py finds in pickles the authors' code writes); GLOBAL and BINPUT/LONG_BINPUT are
# how protocols 2 and 3 spell STACK_GLOBAL and MEMOIZE.
OPCODES = frozenset(
    "APPEND APPENDS BINBYTES BINFLOAT BINGET BININT BININT1 BININT2 BINUNICODE BUILD EMPTY_DICT EMPTY_LIST "
    "EMPTY_SET EMPTY_TUPLE FRAME LONG_BINGET MARK MEMOIZE NEWFALSE NEWOBJ NEWTRUE NONE PROTO REDUCE SETITEM "
    "SETITEMS SHORT_BINBYTES SHORT_BINUNICODE STACK_GLOBAL STOP TUPLE TUPLE1 TUPLE2 TUPLE3 "
    "GLOBAL BINPUT LONG_BINPUT".split()
)
# A CIFAR-10 DDPM++ pickle (55.7M weights) takes 43,000 operations; training pickles nest 18 levels deep.
MAX_OPERATIONS = 1_000_000
MAX_DEPTH = 64
MAX_TENSOR_DIMS = 8
MAX_ELEMENTS = 2**63 - 1  # torch's sizes and strides are int64

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")


class Refusal(FdmError):
    """Why a pickle is not read: one line, without the file's name (``load_training_pickle`` adds it)."""


class RefusedGlobal(Refusal):
    """A pickle asked for a global outside the allow-list; ``name`` is its ``module.name``, escaped."""

    def __init__(self, name: str):
        super().__init__(f"the global {name}")
        self.name = name


class _Inert:
    """Base of what the unpickler hands out: no ``__dict__`` and no state a pickle can set after creation."""

    __slots__ = ()

    def __setattr__(self, key, value):
        raise Refusal(f"an attempt to change a {type(self).__name__}")

    def __setstate__(self, state):
        raise Refusal(f"a state for a {type(self).__name__} (training pickles give it none)")


class Allowed(_Inert):
    """An allow-listed global: ``call`` is what REDUCE may call, ``new`` what NEWOBJ may create."""

    __slots__ = ("name", "call", "new")

    def __init__(self, name: str, call=None, new=None):
        for key, value in (("name", name), ("call", call), ("new", new)):
            object.__setattr__(self, key, value)

    def __repr__(self) -> str:
        return self.name


class Persistent(_Inert):
    """What ``_reconstruct_persistent_obj`` would have rebuilt: the class name and the object's state."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict):
        object.__setattr__(self, "class_name", class_name)
        object.__setattr__(self, "state", state)

    def __repr__(self) -> str:
        return f"Persistent({self.class_name})"


class Container:
    """Inert stand-in for torch's module containers: NEWOBJ creates it and BUILD hands it its state, once."""

    __slots__ = ("kind", "state")

    def __init__(self, kind: str):
        self.kind, self.state = kind, None

    def __setstate__(self, state):
        if self.state is not None:
            raise Refusal(f"a second state for a {self.kind}")
        if not isinstance(state, dict):
            raise Refusal(f"a {self.kind} with a {type(state).__name__} state")
        self.state = state

    def __repr__(self) -> str:
        return self.kind


class Storage(_Inert):
    """A tensor storage: ``flat``, a 1-D tensor of ``numel`` elements that nothing can resize."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor):
        object.__setattr__(self, "flat", flat)

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()


# numpy type codes -> struct formats (little-endian, as numpy's canonical state below says).
_NUMPY_CODES = {
    "f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q",
    "u1": "B", "u2": "H", "u4": "I", "u8": "Q", "b1": "?",
}  # fmt: skip


class Dtype(_Inert):
    """A numeric numpy dtype, as its type code; BUILD may only confirm numpy's canonical state for it."""

    __slots__ = ("code",)

    def __init__(self, code: str):
        object.__setattr__(self, "code", code)

    def __setstate__(self, state):
        order = "|" if struct.calcsize("<" + _NUMPY_CODES[self.code]) == 1 else "<"
        if state != (3, order, None, None, None, -1, -1, 0):
            raise Refusal(f"numpy dtype {self.code} with the state {shown(state)}, not numpy's own")

    def __repr__(self) -> str:
        return f"dtype({self.code})"


def _arguments(args: tuple, name: str, low: int, high: int | None = None) -> tuple:
    if not low <= len(args) <= (low if high is None else high):
        raise Refusal(f"{name} called with {len(args)} arguments")
    return args


def _no_hooks(hooks, name: str) -> None:
    if not (isinstance(hooks, dict) and not hooks):
        raise Refusal(f"{name} with hooks or metadata ({shown(hooks)}); training pickles have none")


def _persistent(*args) -> Persistent:
    (meta,) = _arguments(args, "_reconstruct_persistent_obj", 1)
    if not (
        isinstance(meta, dict)
        and meta.get("type") == "class"
        and isinstance(meta.get("module_src"), str)
        and isinstance(meta.get("state"), dict)
    ):
        raise Refusal("a persistent object without the class name, source and state it needs")
    name = meta.get("class_name")
    if not (isinstance(name, str) and _IDENTIFIER.fullmatch(name)):
        raise Refusal(f"a persistent object whose class name {shown(name)} is not a Python identifier")
    return Persistent(name, meta["state"])


def _ordered_dict(*args) -> collections.OrderedDict:
    _arguments(args, "collections.OrderedDict", 0)
    return collections.OrderedDict()


def _set(*args) -> set:
    items = _arguments(args, "builtins.set", 0, 1)
    if items and not (isinstance(items[0], list) and all(type(item) is str for item in items[0])):
        raise Refusal(f"builtins.set of {shown(items[0])}: training pickles keep only names in sets")
    return set(items[0]) if items else set()


def _refuse_call(name: str):
    def call(*args):
        raise RefusedGlobal(f"{name} (called with arguments; a module container is only created empty)")

    return call


def _container(kind: str) -> Allowed:
    name = f"torch.nn.modules.container.{kind}"

    def new(*args) -> Container:
        _arguments(args, name, 0)
        return Container(kind)

    return Allowed(name, call=_refuse_call(name), new=new)


def _dtype(*args) -> Dtype:
    code, align, copy = _arguments(args, "numpy.dtype", 3)
    if not (isinstance(code, str) and code in _NUMPY_CODES and align is False and copy is True):
        raise Refusal(f"numpy.dtype{shown(args)}: only numeric type codes are read")
    return Dtype(code)


def _scalar(*args) -> int | float | bool:
    dtype, data = _arguments(args, "numpy scalar", 2)
    if not isinstance(dtype, Dtype):
        raise Refusal(f"a numpy scalar of {shown(dtype)}, not of a numeric dtype")
    fmt = "<" + _NUMPY_CODES[dtype.code]
    if not (isinstance(data, bytes) and len(data) == struct.calcsize(fmt)):
        raise Refusal(
            f"a numpy {dtype.code} scalar made of {shown(data)}, not of {struct.calcsize(fmt)} bytes"
        )
    return struct.unpack(fmt, data)[0]


def _is_ints(values) -> bool:
    return isinstance(values, tuple) and all(type(v) is int and v >= 0 for v in values)


def _rebuild_tensor(*args) -> torch.Tensor:
    storage, offset, size, stride, *rest = _arguments(args, "torch._utils._rebuild_tensor_v2", 4, 7)
    if not (
        isinstance(storage, Storage)
        and type(offset) is int
        and offset >= 0
        and _is_ints(size)
        and _is_ints(stride)
        and len(size) == len(stride) <= MAX_TENSOR_DIMS
    ):
        raise Refusal(
            f"a malformed tensor record (offset {shown(offset)}, size {shown(size)}, stride {shown(stride)})"
        )
    if rest and type(rest[0]) is not bool:
        raise Refusal(f"a tensor whose requires_grad is {shown(rest[0])}")
    for hooks in rest[1:]:
        _no_hooks(hooks, "a tensor")
    # An empty tensor has no element to check, but torch still computes its strides in int64: a size whose
    # dimensions other than the zeros multiply past that overflows (or raises inside ``view``).
    if math.prod(max(n, 1) for n in size) > MAX_ELEMENTS:
        raise Refusal(f"a tensor of size {list(size)}, whose strides overflow int64")
    numel = math.prod(size)
    row_major = tuple(math.prod(size[i + 1 :]) for i in range(len(size)))
    if numel and any(n > 1 and s != r for n, s, r in zip(size, stride, row_major, strict=True)):
        raise Refusal(f"a tensor of size {list(size)} with strides {list(stride)}, not row-major")
    if offset + numel > storage.flat.numel():
        raise Refusal(
            f"a tensor of size {list(size)} at offset {offset} in a storage of {storage.flat.numel()} elements"
        )
    return storage.flat[offset : offset + numel].view(size)


def _rebuild_parameter(*args) -> torch.Tensor:
    data, requires_grad, hooks = _arguments(args, "torch._utils._rebuild_parameter", 3)
    if not isinstance(data, torch.Tensor) or type(requires_grad) is not bool:
        raise Refusal("a parameter that wraps no tensor")
    _no_hooks(hooks, "a parameter")
    return data


# The legacy torch.save stream of one storage: magic number, protocol, system information, the storage as
# a persistent id, the list of storage keys, then per key the element count (int64) and the raw elements.
_MAGIC, _PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
STORAGE_TYPES = {
    f"{name}Storage": dtype
    for name, dtype in (
        ("Float", torch.float32), ("Double", torch.float64), ("Half", torch.float16),
        ("BFloat16", torch.bfloat16), ("Long", torch.int64), ("Int", torch.int32),
        ("Short", torch.int16), ("Char", torch.int8), ("Byte", torch.uint8), ("Bool", torch.bool),
    )
}  # fmt: skip


def _load_storage(*args) -> Storage:
    (data,) = _arguments(args, "torch.storage._load_from_bytes", 1)
    if not isinstance(data, bytes):
        raise Refusal("a tensor storage that is not a byte string")
    if data[:4] == b"PK\x03\x04":
        raise Refusal("a zip-format tensor storage (training pickles hold legacy-format storages)")
    stream = io.BytesIO(data)
    header = [_StorageHeader(stream).load(to_the_end=False) for _ in range(5)]
    magic, protocol, system, record, keys = header
    if magic != _MAGIC or protocol != _PROTOCOL:
        raise Refusal("a tensor storage that is not a legacy torch.save stream")
    if not (isinstance(system, dict) and system.get("little_endian") is True):
        raise Refusal("a tensor storage saved on a big-endian machine")
    if not (isinstance(record, tuple) and len(record) == 6 and record[0] == "storage"):
        raise Refusal(f"a tensor storage stream holding {shown(record)}, not one storage")
    _, dtype, key, location, numel, view = record
    if not (isinstance(dtype, torch.dtype) and isinstance(key, str) and isinstance(location, str)):
        raise Refusal("a malformed tensor storage record")
    if view is not None:
        raise Refusal("a tensor storage that is a view of another (training pickles have none)")
    if keys != [key]:
        raise Refusal("a tensor storage stream whose key list is not its one storage")
    item = dtype.itemsize
    raw = memoryview(data)[stream.tell() :]
    if not (
        type(numel) is int
        and numel >= 0
        and len(raw) == 8 + numel * item
        and struct.unpack("<q", raw[:8])[0] == numel
    ):
        raise Refusal(
            f"a tensor storage declaring {shown(numel)} elements of {item} bytes over {len(raw) - 8} bytes"
        )
    if numel == 0:
        return Storage(torch.empty(0, dtype=dtype))
    return Storage(torch.frombuffer(bytearray(raw[8:]), dtype=dtype))


ALLOWED = {
    (module, name): Allowed(f"{module}.{name}", call=call)
    for (module, name), call in {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): _ordered_dict,
        ("builtins", "set"): _set,
        ("numpy", "dtype"): _dtype,
        ("numpy.core.multiarray", "scalar"): _scalar,  # numpy 1
        ("numpy._core.multiarray", "scalar"): _scalar,  # numpy 2
    }.items()
} | {
    ("torch.nn.modules.container", kind): _container(kind)
    for kind in ("ModuleDict", "ModuleList", "Sequential")
}

# What a memo reference may return: values nobody can change, whose size does not grow when repeated
# (torch.dtype: the storage types of a storage stream's header).
_SHAREABLE = (str, int, float, bool, type(None), Allowed, Dtype, torch.dtype)
_CONTAINERS = (dict, list, tuple, set)


class RestrictedUnpickler:
    """Build the object tree of one pickle from ``file`` (a binary file) as the module docstring says.

    ``load()`` returns it or raises ``Refusal``. ``find_class`` and ``persistent_load`` are the hooks
    ``pickle.Unpickler`` has, for subclasses; ``max_storage_bytes`` (default: the bytes left in ``file``)
    bounds the tensor storages together.
    """

    opcodes = OPCODES

    def __init__(self, file, max_storage_bytes: int | None = None):
        self._file = file
        if max_storage_bytes is None:
            here = file.tell()
            max_storage_bytes = file.seek(0, io.SEEK_END) - here
            file.seek(here)
        self._max_storage_bytes = max_storage_bytes
        self._storage_bytes = 0

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{named(module)}.{named(name)}") from None

    def persistent_load(self, pid):
        raise Refusal("a persistent id (training pickles have none)")

    def load(self, to_the_end: bool = True):
        """The pickle's object; with ``to_the_end`` no byte may follow its STOP."""
        self._stack, self._marks, self._memo = [], [], []
        operations = pickletools.genops(self._file)
        for count in itertools.count():
            try:
                op, arg, pos = next(operations)
            except ValueError as err:  # What genops raises for bytes that are not a pickle's operation.
                if self._file.read(1) == b"":
                    raise Refusal("truncated pickle (the data ends early)") from None
                raise Refusal(f"not a pickle: {shown(str(err))}") from None
            if count == MAX_OPERATIONS:
                raise Refusal(f"more than {MAX_OPERATIONS:,} operations (a training pickle needs far fewer)")
            if op.name not in self.opcodes:
                if op.name in ("BINPERSID", "PERSID"):
                    self.persistent_load(None)
                raise Refusal(
                    f"the opcode {op.name} at byte {pos}, which EDM/FDM training pickles do not use"
                )
            self._at = pos
            if op.name == "STOP":
                return self._finish(to_the_end)
            getattr(self, f"_op_{op.name.lower()}")(arg)

    # The stack machine (pickle's own semantics, narrowed to what a training pickle needs).

    def _fail(self, what: str):
        raise Refusal(f"a malformed pickle ({what} at byte {self._at})")

    def _pop(self):
        if not self._stack:
            self._fail("an operation on an empty stack")
        return self._stack.pop()

    def _top(self, kind, what: str):
        if not self._stack or not isinstance(self._stack[-1], kind):
            self._fail(f"{what} without its {kind.__name__}")
        return self._stack[-1]

    def _pop_mark(self) -> list:
        if not self._marks:
            self._fail("an operation that needs a MARK")
        items, self._stack = self._stack, self._marks.pop()
        return items

    def _finish(self, to_the_end: bool):
        if len(self._stack) != 1 or self._marks:
            self._fail("STOP with more than one object left")
        if to_the_end and self._file.read(1):
            raise Refusal(f"data after the pickle's end at byte {self._at}")
        result = self._stack.pop()
        _check_depth(result)
        return result

    def _op_frame(self, arg):  # genops has read the frame's length; its operations follow
        pass

    def _op_proto(self, arg):
        if not 2 <= arg <= 5:
            self._fail(f"pickle protocol {arg}")

    def _op_mark(self, arg):
        self._marks.append(self._stack)
        self._stack = []

    def _push_value(self, arg):
        self._stack.append(arg)

    _op_binint = _op_binint1 = _op_binint2 = _op_binfloat = _op_long1 = _push_value
    _op_binunicode = _op_short_binunicode = _op_binbytes = _op_short_binbytes = _push_value

    def _op_none(self, arg):
        self._stack.append(None)

    def _op_newtrue(self, arg):
        self._stack.append(True)

    def _op_newfalse(self, arg):
        self._stack.append(False)

    def _op_empty_dict(self, arg):
        self._stack.append({})

    def _op_empty_list(self, arg):
        self._stack.append([])

    def _op_empty_tuple(self, arg):
        self._stack.append(())

    def _op_empty_set(self, arg):
        self._stack.append(set())

    def _op_tuple(self, arg):
        items = tuple(self._pop_mark())  # (first: it makes the stack below the MARK current)
        self._stack.append(items)

    def _tuple_of(self, n: int):
        if len(self._stack) < n:
            self._fail(f"TUPLE{n} on a stack of {len(self._stack)}")
        items = tuple(self._stack[-n:])
        del self._stack[-n:]
        self._stack.append(items)

    def _op_tuple1(self, arg):
        self._tuple_of(1)

    def _op_tuple2(self, arg):
        self._tuple_of(2)

    def _op_tuple3(self, arg):
        self._tuple_of(3)

    def _op_append(self, arg):
        item = self._pop()
        self._top(list, "APPEND").append(item)

    def _op_appends(self, arg):
        items = self._pop_mark()
        self._top(list, "APPENDS").extend(items)

    def _set_items(self, target: dict, items: list):
        for key in items[::2]:
            if type(key) is not str:
                raise Refusal(f"a dictionary key {shown(key)}: training pickles key dictionaries by name")
        target.update(zip(items[::2], items[1::2], strict=True))

    def _op_setitem(self, arg):
        value, key = self._pop(), self._pop()
        self._set_items(self._top(dict, "SETITEM"), [key, value])

    def _op_setitems(self, arg):
        items = self._pop_mark()
        if len(items) % 2:
            self._fail("SETITEMS with a key without a value")
        self._set_items(self._top(dict, "SETITEMS"), items)

    def _put(self, index: int):
        if index != len(self._memo):
            self._fail(f"memo entry {index} where the next is {len(self._memo)}")
        if not self._stack:
            self._fail("a memo entry of an empty stack")
        self._memo.append(self._stack[-1])

    def _op_binput(self, arg):
        self._put(arg)

    _op_long_binput = _op_binput

    def _op_memoize(self, arg):
        self._put(len(self._memo))

    def _op_binget(self, arg):
        if arg >= len(self._memo):
            self._fail(f"a reference to memo entry {arg} of {len(self._memo)}")
        value = self._memo[arg]
        if not isinstance(value, _SHAREABLE):
            raise Refusal(
                f"a second reference to a {type(value).__name__} at byte {self._at}: structures with shared "
                "or self-containing parts are refused (training pickles have none)"
            )
        self._stack.append(value)

    _op_long_binget = _op_binget

    def _op_global(self, arg):
        module, _, name = arg.partition(" ")
        self._stack.append(self.find_class(module, name))

    def _op_stack_global(self, arg):
        name, module = self._pop(), self._pop()
        if type(module) is not str or type(name) is not str:
            self._fail("STACK_GLOBAL of non-strings")
        self._stack.append(self.find_class(module, name))

    def _op_reduce(self, arg):
        args, func = self._pop(), self._pop()
        if not isinstance(func, Allowed) or func.call is None:
            self._fail(f"a call of {shown(func)}")
        if type(args) is not tuple:
            self._fail(f"a call of {func.name} with {type(args).__name__} arguments")
        result = func.call(*args)
        if isinstance(result, Storage):
            self._storage_bytes += result.nbytes
            if self._storage_bytes > self._max_storage_bytes:
                raise Refusal(
                    f"tensor storages of more than {self._max_storage_bytes:,} bytes in all "
                    "(more than the file holds)"
                )
        self._stack.append(result)

    def _op_newobj(self, arg):
        args, cls = self._pop(), self._pop()
        if not isinstance(cls, Allowed) or cls.new is None:
            raise RefusedGlobal(f"{shown(cls)} (created by NEWOBJ)")
        if type(args) is not tuple:
            self._fail(f"NEWOBJ of {cls.name} with {type(args).__name__} arguments")
        self._stack.append(cls.new(*args))

    def _op_build(self, arg):
        state = self._pop()
        target = self._stack[-1] if self._stack else None
        if not isinstance(target, Container | Dtype):
            what = (
                f"the global {target.name}" if isinstance(target, Allowed) else f"a {type(target).__name__}"
            )
            raise Refusal(
                f"BUILD on {what} at byte {self._at}: only module containers and numpy dtypes take a state "
                "(allow-listed functions and everything built are immutable)"
            )
        target.__setstate__(state)


def _children(value):
    if isinstance(value, dict):
        return value.values()
    if isinstance(value, _CONTAINERS):
        return value
    if isinstance(value, Persistent | Container):
        return (value.state,)
    return ()


def _check_depth(root) -> None:
    """Refuse a tree nested more than ``MAX_DEPTH`` levels (whatever reads it next may recurse)."""
    pending = [(root, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise Refusal(f"objects nested more than {MAX_DEPTH} levels deep (a training pickle nests 18)")
        pending.extend((child, depth + 1) for child in _children(value))


class _StorageHeader(RestrictedUnpickler):
    """One of the small pickles that begin a legacy storage stream: its globals are storage types, its
    persistent id (the storage record) is returned as it is, for ``_load_storage`` to check."""

    opcodes = frozenset(
        "PROTO LONG1 BININT BININT1 BININT2 EMPTY_DICT EMPTY_LIST EMPTY_TUPLE MARK BINUNICODE SHORT_BINUNICODE "
        "BINPUT LONG_BINPUT MEMOIZE BINGET NEWTRUE NEWFALSE NONE SETITEM SETITEMS APPEND APPENDS TUPLE TUPLE1 "
        "TUPLE2 TUPLE3 GLOBAL STACK_GLOBAL BINPERSID FRAME STOP".split()
    )

    def __init__(self, file):
        super().__init__(file, max_storage_bytes=0)

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_TYPES:
            return STORAGE_TYPES[name]
        raise RefusedGlobal(f"{named(module)}.{named(name)} (in a tensor storage)")

    def _op_binpersid(self, arg):
        self._stack.append(self._pop())


def load_training_pickle(data: bytes, name: str):
    """The object tree of the training pickle ``data`` (the bytes of the file ``name``): ``Persistent`` and
    ``Container`` records, tensors, plain data. Any refusal is one line naming ``name``; nothing from the
    file is executed."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as err:
        raise Refusal(
            f"{name}: refusing to load {err}: an EDM/FDM training pickle holds only networks, tensors and "
            "plain data (nothing was run)"
        ) from None
    except Refusal as err:
        raise Refusal(f"{name} is not a readable EDM/FDM training pickle: {err}") from None

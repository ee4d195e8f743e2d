"""The restricted unpickler's contracts, one rule at a time (``fdm.checkpoints.unpickle``'s docstring).

Each case is a small pickle, written with ``authors_pickles`` or opcode by opcode, that breaks exactly one
rule; the refusal must be the one line that names the rule and the offending thing (a global by its name,
a malformed operation by its byte offset). The valid counterparts sit at each limit (64 levels, 8 tensor
dimensions, protocols 2 to 5, a storage budget of exactly the storages' bytes), so that a limit moved by
one is seen. The red-team harness (tests/test_import_redteam.py) runs the attacks themselves.
"""

from __future__ import annotations

import io
import re
import struct

import pytest
import torch
from authors_pickles import (
    FLOAT_STORAGE,
    Built,
    Call,
    Global,
    dumps,
    floats,
    opcodes,
    storage_stream,
    text,
)

from fdm.checkpoints import unpickle
from fdm.checkpoints.unpickle import (
    Container,
    Persistent,
    Refusal,
    RefusedGlobal,
    RestrictedUnpickler,
    load_training_pickle,
)
from fdm.errors import shown

NAME = "net.pkl"
NOT_READABLE = f"{NAME} is not a readable EDM/FDM training pickle: "
GLOBAL_TAIL = ": an EDM/FDM training pickle holds only networks, tensors and plain data (nothing was run)"

CONTAINER_MODULE = "torch.nn.modules.container"
REBUILD = Global("torch._utils", "_rebuild_tensor_v2")
PARAMETER = Global("torch._utils", "_rebuild_parameter")
LOAD = Global("torch.storage", "_load_from_bytes")
PERSISTENT = Global("torch_utils.persistence", "_reconstruct_persistent_obj")
ORDERED = Global("collections", "OrderedDict")
SET = Global("builtins", "set")
DTYPE = Global("numpy", "dtype")
SCALAR = Global("numpy._core.multiarray", "scalar")
NUMPY_STATE = (3, "<", None, None, None, -1, -1, 0)  # numpy's own state of a little-endian f8


def stack_global(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"


def tensor(stream: bytes, offset: int, size: tuple, stride: tuple, *rest) -> Call:
    """A tensor record; its size and stride are new tuples (pickle would write equal ones once, and a
    second reference to a tuple is refused)."""
    size, stride = tuple(list(size)), tuple(list(stride))
    return Call(REBUILD, Call(LOAD, stream), offset, size, stride, *(rest or (False, Call(ORDERED))))


def why(data: bytes) -> str:
    """The reason ``load_training_pickle`` gives for refusing ``data`` (after its fixed prefix)."""
    with pytest.raises(Refusal) as refused:
        load_training_pickle(data, NAME)
    message = str(refused.value)
    assert message.startswith(NOT_READABLE), message
    return message[len(NOT_READABLE) :]


def refused_global(data: bytes) -> str:
    """What ``load_training_pickle`` names when ``data`` asks for a global it refuses."""
    with pytest.raises(Refusal) as refused:
        load_training_pickle(data, NAME)
    message = str(refused.value)
    match = re.fullmatch(f"{re.escape(NAME)}: refusing to load (.*){re.escape(GLOBAL_TAIL)}", message)
    assert match, message
    return match.group(1)


def load(data: bytes):
    return load_training_pickle(data, NAME)


def nested_lists(levels: int) -> bytes:
    """A list in a list ... ``levels`` lists deep."""
    return opcodes(b"]" * levels + b"a" * (levels - 1))


# The stack machine: each malformed operation is named with its byte offset (PROTO takes bytes 0 and 1).
MALFORMED = {
    "append-on-an-empty-stack": (opcodes(b"a"), "a malformed pickle (an operation on an empty stack at byte 2)"),
    "appends-without-a-mark": (opcodes(b"]e"), "a malformed pickle (an operation that needs a MARK at byte 3)"),
    "append-to-a-dict": (opcodes(b"}Na"), "a malformed pickle (APPEND without its list at byte 4)"),
    "appends-to-a-dict": (opcodes(b"}(Ne"), "a malformed pickle (APPENDS without its list at byte 5)"),
    "setitem-on-a-list": (
        opcodes(b"]" + text("k") + b"Ns"),
        "a malformed pickle (SETITEM without its dict at byte 7)",
    ),
    "setitems-on-a-list": (
        opcodes(b"](" + text("k") + b"Nu"),
        "a malformed pickle (SETITEMS without its dict at byte 8)",
    ),
    "setitems-key-without-value": (
        opcodes(b"}(" + text("k") + b"u"),
        "a malformed pickle (SETITEMS with a key without a value at byte 7)",
    ),
    "memo-entry-out-of-order": (opcodes(b"Nq\x03"), "a malformed pickle (memo entry 3 where the next is 0 at byte 3)"),
    "memoize-an-empty-stack": (opcodes(b"\x94"), "a malformed pickle (a memo entry of an empty stack at byte 2)"),
    "memo-reference-one-past-the-end": (
        opcodes(b"N\x94h\x01"),
        "a malformed pickle (a reference to memo entry 1 of 1 at byte 4)",
    ),
    "second-reference-to-a-list": (
        opcodes(b"]\x94h\x00\x86"),
        "a second reference to a list at byte 4: structures with shared or self-containing parts are refused "
        "(training pickles have none)",
    ),
    "tuple2-on-a-stack-of-1": (opcodes(b"N\x86"), "a malformed pickle (TUPLE2 on a stack of 1 at byte 3)"),
    "stop-with-two-objects": (opcodes(b"NN"), "a malformed pickle (STOP with more than one object left at byte 4)"),
    "stack-global-of-an-int-module": (
        opcodes(b"K\x05" + text("x") + b"\x93"),
        "a malformed pickle (STACK_GLOBAL of non-strings at byte 7)",
    ),
    "stack-global-of-an-int-name": (
        opcodes(text("x") + b"K\x05\x93"),
        "a malformed pickle (STACK_GLOBAL of non-strings at byte 7)",
    ),
    "call-of-a-string": (opcodes(text("x") + b")R"), "a malformed pickle (a call of 'x' at byte 6)"),
    "call-with-list-arguments": (
        opcodes(stack_global("collections", "OrderedDict") + b"]R"),
        "a malformed pickle (a call of collections.OrderedDict with list arguments at byte 30)",
    ),
    "newobj-with-list-arguments": (
        opcodes(stack_global(CONTAINER_MODULE, "ModuleDict") + b"]\x81"),
        f"a malformed pickle (NEWOBJ of {CONTAINER_MODULE}.ModuleDict with list arguments at byte 44)",
    ),
    "build-on-an-empty-stack": (
        opcodes(b"}b"),
        "BUILD on a NoneType at byte 3: only module containers and numpy dtypes take a state "
        "(allow-listed functions and everything built are immutable)",
    ),
    "protocol-1": (opcodes(b"N", protocol=1), "a malformed pickle (pickle protocol 1 at byte 0)"),
    "protocol-6": (opcodes(b"N", protocol=6), "a malformed pickle (pickle protocol 6 at byte 0)"),
    "truncated": (b"\x80\x04\x8c\x05ab", "truncated pickle (the data ends early)"),
    "opcode-inst": (b"(iposix\nsystem\n.", "the opcode INST at byte 1, which EDM/FDM training pickles do not use"),
    "opcode-long1": (opcodes(b"\x8a\x01\x05"), "the opcode LONG1 at byte 2, which EDM/FDM training pickles do not use"),
    "binpersid": (opcodes(text("id") + b"Q"), "a persistent id (training pickles have none)"),
    "persid": (b"\x80\x02Pabc\n.", "a persistent id (training pickles have none)"),
    "data-after-stop": (opcodes(b"N") + b"N", "data after the pickle's end at byte 3"),
    "nested-65-levels": (nested_lists(65), "objects nested more than 64 levels deep (a training pickle nests 18)"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MALFORMED))
def test_each_malformed_operation_is_refused_with_its_reason_and_byte(name):
    data, reason = MALFORMED[name]
    assert why(data) == reason


def test_bytes_that_are_no_pickle_operation_are_named():
    reason = why(b"\x80\x04\xff.")
    assert reason.startswith("not a pickle: ") and "position 2" in reason and "\\xff" in reason, reason


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_protocols_2_to_5_are_read(protocol):
    assert load(opcodes(b"N", protocol=protocol)) is None


def test_nesting_up_to_64_levels_is_read():
    tree = load(nested_lists(64))
    for _ in range(63):
        assert len(tree) == 1
        tree = tree[0]
    assert tree == []


def test_a_one_tuple_is_built_from_a_stack_of_one():
    assert load(opcodes(b"N\x85")) == (None,)


def test_at_most_max_operations_are_read(monkeypatch):
    """The operation count includes PROTO and STOP: a pickle of exactly the limit is read, one more is not."""
    data = opcodes(b"](NNe")  # PROTO EMPTY_LIST MARK NONE NONE APPENDS STOP: 7 operations
    monkeypatch.setattr(unpickle, "MAX_OPERATIONS", 7)
    assert load(data) == [None, None]
    monkeypatch.setattr(unpickle, "MAX_OPERATIONS", 6)
    assert why(data) == "more than 6 operations (a training pickle needs far fewer)"


# Globals: refused by name, whatever asks for them.
REFUSED_GLOBALS = {
    "global-opcode": (b"\x80\x02cos\nsystem\n.", "the global os.system"),
    "global-name-with-a-space": (b"\x80\x02cos\nsystem x\n.", "the global os.'system x'"),
    "stack-global": (opcodes(stack_global("os", "system")), "the global os.system"),
    "newobj-of-a-function": (
        opcodes(stack_global("collections", "OrderedDict") + b")\x81"),
        "the global collections.OrderedDict (created by NEWOBJ)",
    ),
    "newobj-of-a-string": (opcodes(text("x") + b")\x81"), "the global 'x' (created by NEWOBJ)"),
    "storage-type-of-another-module": (
        dumps(Call(LOAD, storage_stream(storage_type=Global("evil", "FloatStorage")))),
        "the global evil.FloatStorage (in a tensor storage)",
    ),
    **{
        f"{kind}-called": (
            dumps(Call(Global(CONTAINER_MODULE, kind), {})),
            f"the global {CONTAINER_MODULE}.{kind} (called with arguments; a module container is only created empty)",
        )
        for kind in ("ModuleDict", "ModuleList", "Sequential")
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(REFUSED_GLOBALS))
def test_each_refused_global_is_named(name):
    data, named = REFUSED_GLOBALS[name]
    assert refused_global(data) == named


def test_a_refused_global_keeps_its_name():
    with pytest.raises(RefusedGlobal) as refused:
        RestrictedUnpickler(io.BytesIO(b"\x80\x02cos\nsystem\n.")).load()
    assert refused.value.name == "os.system"


# The allow-listed functions: each takes exactly its arguments, named in the refusal.
ARITY = {
    "collections.OrderedDict": Call(ORDERED, 1),
    "builtins.set": Call(SET, ["a"], ["b"]),
    "numpy.dtype": Call(DTYPE, "f8", False),
    "numpy scalar": Call(SCALAR, 1, 2, 3),
    "_reconstruct_persistent_obj": Call(PERSISTENT, {}, {}),
    "torch.storage._load_from_bytes": Call(LOAD, b"a", b"b"),
    "torch._utils._rebuild_tensor_v2": Call(REBUILD, 1, 2),
    "torch._utils._rebuild_parameter": Call(PARAMETER, 1, 2),
}


@pytest.mark.parametrize("function", list(ARITY))
def test_allowed_functions_refuse_another_number_of_arguments(function):
    count = len(ARITY[function].args)
    assert why(dumps(ARITY[function])) == f"{function} called with {count} arguments"


def test_a_tensor_record_takes_4_to_7_arguments():
    stream = storage_stream(floats(1.0, 2.0))
    assert torch.equal(
        load(dumps(Call(REBUILD, Call(LOAD, stream), 0, (2,), (1,)))), torch.tensor([1.0, 2.0])
    )
    assert torch.equal(load(dumps(tensor(stream, 1, (1,), (1,), False, {}, {}))), torch.tensor([2.0]))
    eight = tensor(stream, 0, (2,), (1,), False, {}, {}, {})
    assert why(dumps(eight)) == "torch._utils._rebuild_tensor_v2 called with 8 arguments"


# Sets hold names only: builtins.set() or builtins.set([names]).
def test_sets_of_names_are_read():
    assert load(dumps(Call(SET))) == set()
    assert load(dumps(Call(SET, ["a", "b"]))) == {"a", "b"}


@pytest.mark.parametrize("items", [[1], ["a", 1], "ab", ("a",)])
def test_sets_of_anything_but_a_list_of_names_are_refused(items):
    assert why(dumps(Call(SET, items))) == (
        f"builtins.set of {items!r}: training pickles keep only names in sets"
    )


# Persistent objects: an inert record of the class name and state.
META = {
    "type": "class",
    "version": 6,
    "module_src": "raise SystemExit",
    "class_name": "EDMPrecond",
    "state": {},
}


def test_a_persistent_object_is_its_class_name_and_state_and_takes_no_other():
    obj = load(dumps(Call(PERSISTENT, {**META, "state": {"sigma_data": 0.5}})))
    assert type(obj) is Persistent and obj.class_name == "EDMPrecond" and obj.state == {"sigma_data": 0.5}
    with pytest.raises(Refusal, match=r"^a state for a Persistent \(training pickles give it none\)$"):
        obj.__setstate__({"class_name": "os"})
    with pytest.raises(Refusal, match="^an attempt to change a Persistent$"):
        obj.class_name = "os"


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {**META, "type": "function"},
        {**META, "module_src": None},
        {**META, "state": ["x"]},
        ["not", "a", "dict"],
    ],
    ids=["empty", "not-a-class", "no-source", "state-a-list", "a-list"],
)
def test_a_persistent_object_without_its_parts_is_refused(meta):
    assert why(dumps(Call(PERSISTENT, meta))) == (
        "a persistent object without the class name, source and state it needs"
    )


# Module containers: created empty by NEWOBJ, given their __dict__ once by BUILD.
def container(kind: str, *parts: bytes) -> bytes:
    return opcodes(stack_global(CONTAINER_MODULE, kind) + b")\x81", *parts)


@pytest.mark.parametrize("kind", ["ModuleDict", "ModuleList", "Sequential"])
def test_a_module_container_is_created_empty_and_given_one_dict_state(kind):
    obj = load(container(kind, b"}" + text("_modules") + b"}sb"))
    assert type(obj) is Container and obj.kind == kind and repr(obj) == kind
    assert obj.state == {"_modules": {}}
    assert why(container(kind, b"}b}b")) == f"a second state for a {kind}"
    assert why(container(kind, b"]b")) == f"a {kind} with a list state"
    with_one = opcodes(stack_global(CONTAINER_MODULE, kind) + b"N\x85\x81")
    assert why(with_one) == f"{CONTAINER_MODULE}.{kind} called with 1 arguments"


# numpy: dtypes are type codes with numpy's own state; scalars the Python number of exactly their bytes.
def test_numpy_scalars_are_read_from_a_dtype_with_numpys_own_state():
    dtype = Built(DTYPE, ("f8", False, True), NUMPY_STATE)
    assert load(dumps(Call(SCALAR, dtype, struct.pack("<d", 1.5)))) == 1.5
    big_endian = Built(DTYPE, ("f8", False, True), (3, ">", *NUMPY_STATE[2:]))
    assert why(dumps(Call(SCALAR, big_endian, bytes(8)))) == (
        "numpy dtype f8 with the state (3, '>', None, None, None, -1, ...), not numpy's own"
    )
    short = Call(SCALAR, Call(DTYPE, "f8", False, True), b"\x01\x02\x03")
    assert why(dumps(short)) == "a numpy f8 scalar made of b'\\x01\\x02\\x03', not of 8 bytes"


# Tensors: a row-major view of offset .. offset + numel of their storage, no grad, no hooks.
SIXTEEN = storage_stream(floats(*range(16)))


def test_a_tensor_views_its_range_of_the_storage():
    t = load(dumps(tensor(SIXTEEN, 3, (2, 3), (3, 1))))
    assert type(t) is torch.Tensor and not t.requires_grad
    assert torch.equal(t, torch.arange(3.0, 9.0).view(2, 3))
    assert torch.equal(load(dumps(tensor(SIXTEEN, 0, (1, 4), (1, 1)))), torch.arange(4.0).view(1, 4))
    big = 2**31 - 1  # the largest size a BININT holds; (big, big, 2) multiply to just under 2**63
    at_the_limit = load(dumps(tensor(SIXTEEN, 0, (0, big, big, 2), (1, 1, 1, 1))))
    assert at_the_limit.shape == (0, big, big, 2) and at_the_limit.stride() == (big * big * 2, big * 2, 2, 1)
    eight_dims = load(dumps(tensor(SIXTEEN, 0, (2,) * 4 + (1,) * 4, (8, 4, 2, 1) + (1,) * 4)))
    assert eight_dims.shape == (2, 2, 2, 2, 1, 1, 1, 1)
    parameter = load(dumps(Call(PARAMETER, tensor(SIXTEEN, 15, (1,), (1,)), False, Call(ORDERED))))
    assert torch.equal(parameter, torch.tensor([15.0])) and not parameter.requires_grad


TENSOR_REFUSALS = {
    "negative-offset": (
        tensor(SIXTEEN, -1, (2,), (1,)),
        "a malformed tensor record (offset -1, size (2,), stride (1,))",
    ),
    "negative-size": (tensor(SIXTEEN, 0, (-1,), (1,)), "a malformed tensor record (offset 0, size (-1,), stride (1,))"),
    "9-dimensions": (
        tensor(SIXTEEN, 0, (1,) * 9, (1,) * 9),
        f"a malformed tensor record (offset 0, size {shown((1,) * 9)}, stride {shown((1,) * 9)})",
    ),
    "column-major": (tensor(SIXTEEN, 0, (2, 2), (1, 2)), "a tensor of size [2, 2] with strides [1, 2], not row-major"),
    "past-the-storage": (tensor(SIXTEEN, 10, (7,), (1,)), "a tensor of size [7] at offset 10 in a storage of 16 elements"),
    # Empty (a zero dimension), so no element is checked, yet torch's strides would overflow int64.
    "empty-overflowing-6": (
        tensor(SIXTEEN, 0, (0,) + (2**31 - 1,) * 5, (1,) * 6),
        f"a tensor of size {[0] + [2**31 - 1] * 5}, whose strides overflow int64",
    ),
    "empty-overflowing-4": (
        tensor(SIXTEEN, 0, (0, 2**31 - 1, 2**31 - 1, 3), (1, 1, 1, 1)),
        f"a tensor of size {[0, 2**31 - 1, 2**31 - 1, 3]}, whose strides overflow int64",
    ),
    "requires-grad-1": (tensor(SIXTEEN, 0, (1,), (1,), 1, {}), "a tensor whose requires_grad is 1"),
    "backward-hooks": (
        tensor(SIXTEEN, 0, (1,), (1,), False, {"h": 1}),
        "a tensor with hooks or metadata ({'h': 1}); training pickles have none",
    ),
    "hooks-a-list": (
        tensor(SIXTEEN, 0, (1,), (1,), False, []),
        "a tensor with hooks or metadata ([]); training pickles have none",
    ),
    "metadata": (
        tensor(SIXTEEN, 0, (1,), (1,), False, {}, {"m": 1}),
        "a tensor with hooks or metadata ({'m': 1}); training pickles have none",
    ),
    "parameter-requires-grad-1": (
        Call(PARAMETER, tensor(SIXTEEN, 0, (1,), (1,)), 1, {}),
        "a parameter that wraps no tensor",
    ),
    "parameter-of-a-number": (Call(PARAMETER, 1.0, False, {}), "a parameter that wraps no tensor"),
    "parameter-hooks": (
        Call(PARAMETER, tensor(SIXTEEN, 0, (1,), (1,)), False, {"h": 1}),
        "a parameter with hooks or metadata ({'h': 1}); training pickles have none",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TENSOR_REFUSALS))
def test_each_malformed_tensor_is_refused(name):
    record, reason = TENSOR_REFUSALS[name]
    assert why(dumps(record)) == reason


# Storages: legacy torch.save streams, checked part by part.
def test_an_empty_storage_keeps_its_type_and_holds_nothing():
    empty = storage_stream(b"", storage_type=Global("torch", "LongStorage"))
    t = load(dumps(tensor(empty, 0, (0,), (1,))))
    assert t.shape == (0,) and t.dtype == torch.int64
    assert (
        why(dumps(tensor(empty, 0, (1,), (1,))))
        == "a tensor of size [1] at offset 0 in a storage of 0 elements"
    )


STORAGE_REFUSALS = {
    "a-string": ("x", "a tensor storage that is not a byte string"),
    "zip-format": (
        b"PK\x03\x04" + storage_stream()[4:],
        "a zip-format tensor storage (training pickles hold legacy-format storages)",
    ),
    "wrong-magic": (storage_stream(magic=1), "a tensor storage that is not a legacy torch.save stream"),
    "wrong-protocol": (storage_stream(protocol=1000), "a tensor storage that is not a legacy torch.save stream"),
    "big-endian": (
        storage_stream(system={"little_endian": False}),
        "a tensor storage saved on a big-endian machine",
    ),
    "five-part-record": (
        storage_stream(record=("storage", FLOAT_STORAGE, "0", "cpu", 1)),
        "a tensor storage stream holding ('storage', torch.float32, '0', 'cpu', 1), not one storage",
    ),
    "record-of-a-blob": (
        storage_stream(record=("blob", FLOAT_STORAGE, "0", "cpu", 1, None)),
        "a tensor storage stream holding ('blob', torch.float32, '0', 'cpu', 1, None), not one storage",
    ),
    "type-a-string": (
        storage_stream(record=("storage", "FloatStorage", "0", "cpu", 1, None)),
        "a malformed tensor storage record",
    ),
    "key-an-int": (storage_stream(record=("storage", FLOAT_STORAGE, 0, "cpu", 1, None)), "a malformed tensor storage record"),
    "location-an-int": (
        storage_stream(record=("storage", FLOAT_STORAGE, "0", 5, 1, None)),
        "a malformed tensor storage record",
    ),
    "a-view": (
        storage_stream(record=("storage", FLOAT_STORAGE, "0", "cpu", 1, ("1", 0, 1))),
        "a tensor storage that is a view of another (training pickles have none)",
    ),
    "another-key": (storage_stream(keys=["1"]), "a tensor storage stream whose key list is not its one storage"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(STORAGE_REFUSALS))
def test_each_malformed_storage_is_refused(name):
    stream, reason = STORAGE_REFUSALS[name]
    assert why(dumps(Call(LOAD, stream))) == reason


def test_storages_together_hold_at_most_the_budget():
    """``max_storage_bytes`` bounds the storages of one file together: two of 4 bytes fit in 8, not in 7."""
    two = dumps([Call(LOAD, storage_stream(floats(1.0))), Call(LOAD, storage_stream(floats(2.0)))])
    assert len(RestrictedUnpickler(io.BytesIO(two), max_storage_bytes=8).load()) == 2
    with pytest.raises(Refusal) as refused:
        RestrictedUnpickler(io.BytesIO(two), max_storage_bytes=7).load()
    assert str(refused.value) == "tensor storages of more than 7 bytes in all (more than the file holds)"
    one = dumps(tensor(storage_stream(floats(3.0)), 0, (1,), (1,)))
    assert torch.equal(RestrictedUnpickler(io.BytesIO(one), max_storage_bytes=4).load(), torch.tensor([3.0]))


def test_the_default_budget_is_the_bytes_left_in_the_file():
    """Without ``max_storage_bytes`` the budget is the bytes left in the file when the unpickler is made.
    Storages never outgrow the bytes they are read from, so only reading the same bytes twice reaches it:
    rewound, the same unpickler counts the storages again, against the bytes that were left at the start."""
    data = dumps(tensor(storage_stream(floats(*range(256))), 0, (256,), (1,)))
    assert 2 * 256 * 4 > len(data)
    file = io.BytesIO(b"junk" + data)
    file.seek(4)
    unpickler = RestrictedUnpickler(file)
    assert torch.equal(unpickler.load(), torch.arange(256.0))
    file.seek(4)
    with pytest.raises(Refusal) as refused:
        unpickler.load()
    assert str(refused.value) == (
        f"tensor storages of more than {len(data):,} bytes in all (more than the file holds)"
    )


TAIL = b"N" * 2**20


@pytest.mark.parametrize(
    "data, reason",
    [
        (opcodes(b"N") + TAIL, "data after the pickle's end at byte 3"),
        (b"\x80\x04\xff" + TAIL, "not a pickle: "),
    ],
    ids=["data-after-stop", "not-an-operation"],
)
def test_a_refusal_leaves_the_rest_of_the_file_unread(data, reason):
    """Bounded memory: refusing a pickle at a byte reads at most a few bytes of the megabyte after it."""
    file = io.BytesIO(data)
    with pytest.raises(Refusal) as refused:
        RestrictedUnpickler(file, max_storage_bytes=0).load()
    assert str(refused.value).startswith(reason), str(refused.value)
    assert file.tell() <= len(data) - len(TAIL) + 8, file.tell()

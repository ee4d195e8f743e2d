"""`fdm import-checkpoint` against an attacker: files and servers made to crash it, leak memory into a
snapshot, or exhaust the machine (issue 21). Each is refused in one line.

Each case of ``CASES`` is a small file (or a loopback server's answer) of one class of attack, with the
words its refusal must hold. They all run in one child process (this file run as a script: one forkserver
for all the conversions), which limits its own address space (``HARNESS_ADDRESS_SPACE``, inherited by every
process it starts) and runs the command in-process as ``fdm`` would, timing each case and taking the
conversion child's peak RSS from the backstop's log record. Each case then asserts: exit status 2, one
``fdm: error:`` line holding its words, no traceback and no control character in the output, nothing at
``--dest`` nor beside it, under ``CASE_SECONDS``, and the conversion child's growth under ``CASE_MEMORY``.
The same process runs the backstop's own cases (a memory hog, a CPU spin, a hang, a crash, a bug, output)
through ``fdm.checkpoints.backstop.run``, the sha256 swap race, and a normal import before and after all
the attacks. Dataset downloads (``fdm.data.download``, which the importer shares) are tested directly
against the same server.

The classes of attack are those docs/checkpoints.md lists: numpy memory corruption; tensors over too small
a storage (``Tensor.set_``'s silent enlargement) and BUILD on a tensor; unbounded CPU or memory before any
check (hash bombs, memo indices, numpy scalars and dtype specs, deflate bombs in zip storages, stride-0
expansion, shared option subtrees, huge networks from options, too many operations, too large a file);
tracebacks from malformed records; control characters; the sha256 swap race; BUILD on allow-listed
callables; downloads (ftp redirects, endless bodies, oversized lengths, slow drips and slow headers).
"""

from __future__ import annotations

import copyreg
import hashlib
import http.server
import io
import json
import logging
import math
import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
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
    training_pickle,
)
from data_fixtures import run_fdm

from fdm.data.download import download
from fdm.errors import FdmError

HARNESS_ADDRESS_SPACE = 8 << 30  # bytes for the harness and each process it starts (torch alone maps 3.2 GB)
CASE_SECONDS = 5.0  # wall-clock seconds of one refused import, on two busy cores
CASE_MEMORY = 400  # MiB the conversion child may grow by (a normal small import: about 60)

SMALL = dict(
    arch="ddpmpp",
    img_resolution=8,
    img_channels=3,
    label_dim=0,
    augment_dim=0,
    model_channels=8,
    channel_mult=[1, 2],
    channel_mult_emb=4,
    num_blocks=1,
    attn_resolutions=[4],
    dropout=0.0,
    label_dropout=0.0,
    embedding_type="positional",
    channel_mult_noise=1,
    encoder_type="standard",
    decoder_type="standard",
    resample_filter=[1, 1],
)

REBUILD = Global("torch._utils", "_rebuild_tensor_v2")
PARAMETER = Global("torch._utils", "_rebuild_parameter")
LOAD = Global("torch.storage", "_load_from_bytes")
PERSISTENT = Global("torch_utils.persistence", "_reconstruct_persistent_obj")
MODULE_DICT = Global("torch.nn.modules.container", "ModuleDict")
ORDERED = Call(Global("collections", "OrderedDict"))
DTYPE = Global("numpy", "dtype")
SCALAR = Global("numpy._core.multiarray", "scalar")


class Created:
    """Pickles as NEWOBJ of ``cls`` without a state: an object created and never given its ``__dict__``."""

    def __init__(self, cls: Global):
        self.cls = cls

    @property
    def __class__(self):  # what pickle checks NEWOBJ's class against
        return self.cls

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (self.cls,)


def legacy_storage(raw: bytes, declared: int, stored: int | None = None) -> bytes:
    """A float32 storage in torch.save's legacy format: ``declared`` elements in its header, ``stored``
    (default: the same) in the count before its ``raw`` bytes."""
    return storage_stream(
        raw,
        numel=declared if stored is None else stored,
        system={
            "protocol_version": 1001,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4},
        },
        record=("storage", FLOAT_STORAGE, "0", "cpu", declared, None),
    )


def tensor(storage: bytes, offset: int, size: tuple, stride: tuple) -> Call:
    return Call(REBUILD, Call(LOAD, storage), offset, size, stride, False, ORDERED)


def network(seed: int = 0):
    import torch

    from fdm.nets import build

    torch.manual_seed(seed)
    net = build(**SMALL)
    for p in net.parameters():
        p.data.normal_(0, 0.2)
    return net


def training(precond: dict | None = None, *, seed: int = 0, edit=None, **kwargs) -> bytes:
    """A training pickle of a small EDMPrecond with ``precond`` among its options, edited by ``edit``."""
    return training_pickle("EDMPrecond", SMALL, network(seed), precond, edit=edit, **kwargs)


def carrying(payload) -> bytes:
    """A training pickle carrying ``payload`` as an option of its preconditioner (read before any check)."""
    return training({"extra": payload})


def model(tree):
    return tree["ema"]._modules["model"]


def model_options(**options) -> bytes:
    """A training pickle whose SongUNet records ``options`` (its tensors stay those of ``SMALL``)."""
    return training(edit=lambda tree: model(tree)._init_kwargs.update(options))


def shared_subtree(depth: int) -> list:
    """Lists whose two children are one list: 2^depth leaves as JSON, 2 x depth pickle operations."""
    node = []
    for _ in range(depth):
        node = [node, node]
    return node


def hash_bomb(depth: int) -> bytes:
    """A dict keyed by a tree of tuples whose two children are one tuple: hashing the key visits 2^depth
    tuples. Written by hand (Python would hash it to build the dict)."""
    levels = [
        b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86\x94" for i in range(depth)
    ]  # BINGET i twice, TUPLE2
    return opcodes(b"}", b")\x94", *levels, b"Ns")


def dtype_spec(depth: int):
    """A structured dtype spec nested ``depth`` levels deep."""
    spec = "f8"
    for level in range(depth):
        spec = [(f"f{level}", spec)]
    return spec


def deflate_bomb() -> bytes:
    """A zip-format storage whose one member inflates a thousandfold."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", bytes(64 << 20))
    return out.getvalue()


def torch_zeros(n: int):
    import torch

    return torch.zeros(n)


def _edit(function):
    return lambda: training(edit=function)


def _parameters_as_list(tree):
    model(tree)._modules["map_layer0"].__dict__["_parameters"] = [1, 2]


def _init_args_as_tensor(tree):
    import torch

    model(tree).__dict__["_init_args"] = torch.zeros(3)


def _buffer_names_as_tensor(tree):
    import torch

    model(tree).__dict__["_non_persistent_buffers_set"] = torch.zeros(3)


def _modules_as_tensor(tree):
    import torch

    model(tree)._modules["map_layer0"].__dict__["_modules"] = torch.zeros(2)


def _modules_containing_themselves(tree):
    modules = model(tree).__dict__["_modules"]
    modules["itself"] = modules


def _container_without_state(tree):
    model(tree).__dict__["_modules"]["enc"] = Created(MODULE_DICT)


def _tensor_named_with_a_newline(tree):
    parameters = model(tree)._modules["map_layer0"].__dict__["_parameters"]
    parameters["weight\nfdm: imported"] = parameters.pop("weight")


ONE = legacy_storage(floats(0.5), 1)
SIXTEEN = legacy_storage(floats(*range(16)), 16)

# Case -> (a function making the file, or None for a download; options; words of the one-line refusal).
# "{server}" in an option is the loopback attacker's address.
CASES = {
    # 1. Memory corruption through numpy: dtypes are inert type codes, scalars Python numbers.
    "numpy-dtype-fields-state": (
        lambda: carrying(
            Built(DTYPE, ("f8", False, True), (3, "<", None, ("a",), {"a": (None, 0)}, 16, 1, 16))
        ),
        (),
        ["numpy dtype f8 with the state", "not numpy's own"],
    ),
    "numpy-dtype-elsize-state": (
        lambda: carrying(Built(DTYPE, ("f8", False, True), (3, "<", None, None, None, 1 << 30, 1, 0))),
        (),
        ["not numpy's own"],
    ),
    "numpy-object-dtype": (
        lambda: carrying(Call(SCALAR, Call(DTYPE, "O8", False, True), bytes(8))),
        (),
        ["numpy.dtype('O8', False, True): only numeric type codes"],
    ),
    "numpy-scalar-of-3-bytes": (
        lambda: carrying(Call(SCALAR, Call(DTYPE, "f8", False, True), b"\1\2\3")),
        (),
        ["numpy f8 scalar made of", "not of 8 bytes"],
    ),
    "numpy-scalar-of-a-string": (
        lambda: carrying(Call(SCALAR, "f8", bytes(8))),
        (),
        ["numpy scalar of 'f8'"],
    ),
    # 2. A snapshot of process memory: tensors larger than their storage; BUILD on a tensor.
    "parameter-over-one-float": (
        lambda: carrying(Call(PARAMETER, tensor(ONE, 0, (32, 8), (8, 1)), False, ORDERED)),
        (),
        ["a tensor of size [32, 8] at offset 0 in a storage of 1 elements"],
    ),
    "tensor-past-its-storage": (lambda: carrying(tensor(SIXTEEN, 10, (8,), (1,))), (), ["at offset 10"]),
    "build-on-a-tensor": (
        lambda: carrying(
            Built(REBUILD, (Call(LOAD, SIXTEEN), 0, (4, 4), (4, 1), False, ORDERED), (0, 1, (64,), (1,)))
        ),
        (),
        ["BUILD on a Tensor"],
    ),
    "storage-declaring-more-than-it-holds": (
        lambda: carrying(tensor(legacy_storage(floats(1.0), 1 << 28, 1), 0, (4,), (1,))),
        (),
        ["declaring 268435456 elements of 4 bytes over 4 bytes"],
    ),
    "storage-counts-disagree": (
        lambda: carrying(tensor(legacy_storage(floats(1.0, 2.0), 2, 1 << 20), 0, (2,), (1,))),
        (),
        ["a tensor storage declaring 2 elements"],
    ),
    "storage-running-code": (
        lambda: carrying(Call(LOAD, dumps(Call(Global("posix", "system"), "true"), 2))),
        (),
        ["posix.system (in a tensor storage)"],
    ),
    # 3. Unbounded CPU and memory before any check.
    "hash-bomb-key": (lambda: hash_bomb(64), (), ["a second reference to a tuple"]),
    "tuple-key": (lambda: carrying({(1, 2): 3}), (), ["a dictionary key (1, 2)"]),
    "memo-index-4-billion": (
        lambda: opcodes(b"N", b"r" + struct.pack("<I", 0xFFFFFFF0)),
        (),
        ["memo entry 4294967280 where the next is 0"],
    ),
    "memo-reference-to-nothing": (lambda: opcodes(b"j" + struct.pack("<I", 7)), (), ["memo entry 7 of 0"]),
    "numpy-scalar-of-256-mib": (
        lambda: carrying(Call(SCALAR, Call(DTYPE, "V268435456", False, True), b"")),
        (),
        ["only numeric type codes"],
    ),
    "numpy-dtype-spec-tree": (
        lambda: carrying(Call(DTYPE, dtype_spec(30), False, True)),
        (),
        ["only numeric type codes"],
    ),
    "deflate-bomb-storage": (
        lambda: carrying(tensor(deflate_bomb(), 0, (4,), (1,))),
        (),
        ["zip-format tensor storage"],
    ),
    "stride-0-expansion": (
        lambda: carrying(tensor(ONE, 0, (1 << 15, 1 << 15), (0, 0))),
        (),
        ["with strides [0, 0], not row-major"],
    ),
    "shared-option-subtree": (lambda: carrying(shared_subtree(80)), (), ["a second reference to a list"]),
    "storage-bytes-used-twice": (lambda: carrying([ONE, ONE]), (), ["a second reference to a bytes"]),
    "million-operations": (
        lambda: opcodes(b"]", b"(" + b"N" * 1_000_001 + b"e"),
        (),
        ["more than 1,000,000 operations"],
    ),
    "larger-than-max-size": (training, ("--max-size", "10kB"), ["more than the importer's limit of 10,000"]),
    # Huge networks from options, refused before anything is built.
    "num-blocks-10-pow-7": (
        lambda: model_options(num_blocks=10**7),
        (),
        ["num_blocks=10000000 is not an integer in [1, 64]"],
    ),
    "cifar-options-over-tiny-tensors": (
        lambda: model_options(model_channels=320, channel_mult=[1, 2, 2, 2]),
        (),
        ["options describe a network of", "weights, more than the", "(nothing was built)"],
    ),
    "64-blocks-1024-channels": (
        lambda: model_options(model_channels=1024, num_blocks=64, channel_mult=[4, 4, 4, 4]),
        (),
        ["options describe a network of"],
    ),
    "million-labels": (
        lambda: training(
            {"label_dim": 1 << 20}, edit=lambda tree: model(tree)._init_kwargs.update(label_dim=1 << 20)
        ),
        (),
        ["options describe a network of"],
    ),
    "options-that-do-not-build": (
        lambda: model_options(model_channels=2),
        (),
        ["options do not build here", "GroupNorm"],
    ),
    # 4. Tracebacks: every record is checked for its type before it is used.
    "int-option-key": (lambda: carrying({5: 1}), (), ["a dictionary key 5"]),
    "parameters-as-a-list": (
        _edit(_parameters_as_list),
        (),
        ["the _parameters of module map_layer0 is a list"],
    ),
    "init-args-as-a-tensor": (
        _edit(_init_args_as_tensor),
        (),
        ["SongUNet in the pickle records no keyword-only"],
    ),
    "buffer-names-as-a-tensor": (
        _edit(_buffer_names_as_tensor),
        (),
        ["_non_persistent_buffers_set of module model"],
    ),
    "modules-as-a-tensor": (_edit(_modules_as_tensor), (), ["the _modules of module map_layer0 is a Tensor"]),
    "modules-containing-themselves": (
        _edit(_modules_containing_themselves),
        (),
        ["a second reference to a dict"],
    ),
    "container-without-state": (
        _edit(_container_without_state),
        (),
        ["module enc is a Container without a state"],
    ),
    "option-beyond-a-float": (lambda: carrying(2**1100), (), ["the opcode LONG1"]),
    "model-channels-2-pow-800000": (
        lambda: model_options(model_channels=2**800000),
        (),
        ["the opcode LONG4"],
    ),
    "lists-100000-deep": (
        lambda: opcodes(b"]" * 100_001 + b"a" * 100_000),
        (),
        ["nested more than 64 levels"],
    ),
    "tuples-100000-deep": (lambda: opcodes(b"N" + b"\x85" * 100_000), (), ["nested more than 64 levels"]),
    "precond-option-a-tensor": (
        lambda: training(edit=lambda tree: tree["ema"]._init_kwargs.update(img_resolution=torch_zeros(3))),
        (),
        ["EDMPrecond has img_resolution=tensor[3] but its network 8"],
    ),
    "use-fp16-a-tensor": (
        lambda: training(edit=lambda tree: tree["ema"]._init_kwargs.update(use_fp16=torch_zeros(2))),
        (),
        ["EDMPrecond option use_fp16=tensor[2] is not a boolean"],
    ),
    "channel-mult-a-string": (
        lambda: model_options(channel_mult="abc"),
        (),
        ["channel_mult='abc' is not a list"],
    ),
    "dropout-a-string": (lambda: model_options(dropout="x"), (), ["dropout='x' is not a probability"]),
    "sigma-max-nan": (lambda: training({"sigma_max": math.nan}), (), ["options give the sigma range"]),
    "warmup-infinite": (
        lambda: training_pickle(
            "FDM_EDMPrecond", SMALL, network(), loss=("EDMLoss", {"warmup_ite": math.inf})
        ),
        (),
        ["warmup_ite=inf is not a number of iterations"],
    ),
    # 5. Control characters from the file are escaped: the line stays one line and forges nothing.
    "control-chars-in-a-global": (
        lambda: carrying(Call(Global("os\x1b[2J\nfdm: imported", "system\r"), "x")),
        (),
        ["refusing to load the global 'os\\x1b[2J\\nfdm: imported'.'system\\r'"],
    ),
    "control-chars-in-an-option-key": (
        lambda: training({"a\nfdm: imported ok": 1}),
        (),
        ["an option named 'a\\nfdm: imported ok'"],
    ),
    "control-chars-in-a-tensor-name": (
        _edit(_tensor_named_with_a_newline),
        (),
        ["a tensor named 'map_layer0.weight\\nfdm: imported'"],
    ),
    "control-chars-in-a-class-name": (
        lambda: dumps(
            {
                "ema": Call(
                    PERSISTENT,
                    {"type": "class", "class_name": "EDM\x1b[0mPrecond", "module_src": "", "state": {}},
                )
            }
        ),
        (),
        ["class name 'EDM\\x1b[0mPrecond' is not a Python identifier"],
    ),
    # 6. --sha256 names the file and both digests (the race is run separately, below).
    "one-byte-flipped": (None, (), ["checksum mismatch:", "has SHA-256"]),
    # 8. BUILD on allow-listed callables: they have no state a pickle can set.
    "build-on-rebuild-parameter": (
        lambda: opcodes(
            text("torch._utils"), text("_rebuild_parameter"), b"\x93", b"N}", text("__defaults__"), b")s\x86b"
        ),
        (),
        ["BUILD on the global torch._utils._rebuild_parameter"],
    ),
    "build-on-ordered-dict": (
        lambda: opcodes(text("collections"), text("OrderedDict"), b"\x93}b"),
        (),
        ["BUILD on the global collections.OrderedDict"],
    ),
    "build-on-a-persistent-object": (
        lambda: dumps(
            Built(
                PERSISTENT,
                ({"type": "class", "class_name": "EDMPrecond", "module_src": "", "state": {}},),
                {"x": 1},
            )
        ),
        (),
        ["BUILD on a Persistent"],
    ),
    # The unpickler's structure.
    "persistent-id": (lambda: opcodes(text("id"), b"Q"), (), ["a persistent id"]),
    "opcode-inst": (lambda: b"(iposix\nsystem\n.", (), ["the opcode INST"]),
    "data-after-stop": (lambda: training() + b"\x80\x04N.", (), ["data after the pickle's end"]),
    "wrong-arity": (
        lambda: carrying(Call(REBUILD, 1, 2)),
        (),
        ["_rebuild_tensor_v2 called with 2 arguments"],
    ),
    "container-called": (
        lambda: carrying(Call(MODULE_DICT, {})),
        (),
        ["torch.nn.modules.container.ModuleDict (called with arguments"],
    ),
    # 7. Downloads, against a loopback server.
    "download-ftp-redirect": (
        None,
        ("--source", "{server}/ftp.pkl"),
        ["redirects to 'ftp://", "only http and https"],
    ),
    "download-redirect-chain-to-ftp": (None, ("--source", "{server}/via-http.pkl"), ["redirects to 'ftp://"]),
    "download-endless-body": (
        None,
        ("--source", "{server}/endless.pkl", "--max-size", "1MiB"),
        ["sent more than the limit of 1,048,576 bytes"],
    ),
    "download-huge-length": (None, ("--source", "{server}/huge.pkl"), ["announces 1,000,000,000,000 bytes"]),
    "download-slow-drip": (
        None,
        ("--source", "{server}/drip.pkl", "--download-timeout", "1.5"),
        ["took longer than its limit of 1.5 s"],
    ),
    "download-slow-headers": (
        None,
        ("--source", "{server}/slow-headers.pkl", "--download-timeout", "1.5"),
        ["took longer than its limit of 1.5 s"],
    ),
}


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Answers made to hold or fill a downloader: redirects to ftp, endless bodies, drips."""

    protocol_version = "HTTP/1.0"

    def do_GET(self):  # noqa: N802 (http.server's name)
        try:
            self._answer()
        except OSError:  # the client gave up, as it should
            pass

    def _answer(self):
        if self.path in ("/ftp.pkl", "/via-http.pkl"):
            self.send_response(302)
            self.send_header(
                "Location", "ftp://127.0.0.1:1/network.pkl" if self.path == "/ftp.pkl" else "/ftp.pkl"
            )
            self.end_headers()
        elif self.path == "/endless.pkl":
            self.send_response(200)
            self.end_headers()
            for _ in range(1024):  # at most 64 MiB, should nothing stop it
                self.wfile.write(bytes(64 << 10))
        elif self.path == "/huge.pkl":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.wfile.write(bytes(1 << 10))
        elif self.path == "/drip.pkl":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self._drip(b"\x80" * 300)
        elif self.path == "/slow-headers.pkl":
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            self._drip(b"X-Slow: " + b"a" * 300)
        else:
            self.send_error(404)

    def _drip(self, data: bytes):
        for byte in data:  # one byte every 0.1 s: each socket read returns well within any timeout
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *args):
        pass


class attacker_server:  # noqa: N801 (a context manager used like a function)
    def __enter__(self) -> str:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# The backstop's own cases: functions the conversion child runs (by name, "test_import_redteam:...").


def _hog_memory():
    hoard = []
    while True:
        hoard.append(bytearray(64 << 20))


def _hog_torch_memory():
    import torch

    return torch.empty(1 << 40, dtype=torch.uint8).numel()


def _spin():
    while True:
        pass


def _hang():
    time.sleep(600)


def _crash():
    os.kill(os.getpid(), signal.SIGSEGV)


def _bug():
    return {}["a key nobody set"]


def _chatty():
    print("LEAKED to stdout")
    print("LEAKED to stderr", file=sys.stderr)
    os.write(2, b"LEAKED to fd 2\n")
    raise FdmError("refused, politely")


BACKSTOP = {  # target -> (memory bytes, CPU seconds, wall seconds)
    "_hog_memory": (256 << 20, 30, 60),
    "_hog_torch_memory": (256 << 20, 30, 60),
    "_spin": (256 << 20, 1, 60),
    "_hang": (256 << 20, 30, 1),
    "_crash": (256 << 20, 30, 60),
    "_bug": (256 << 20, 30, 60),
    "_chatty": (256 << 20, 30, 60),
}


def _invoke(args: list[str], usages: list) -> dict:
    from click.testing import CliRunner

    from fdm.cli import main

    usages.clear()
    began = time.perf_counter()
    result = CliRunner().invoke(main, args)
    seconds = time.perf_counter() - began
    escaped = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        escaped = repr(result.exception)
    return {
        "exit": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "seconds": seconds,
        "escaped": escaped,
        "usage": usages[-1] if usages else None,
    }


def _race(spec: dict, usages: list) -> list[dict]:
    """Imports of a file that another thread keeps swapping between two pickles, with --sha256 of one."""
    target, a, b = Path(spec["target"]), Path(spec["a"]), Path(spec["b"])
    stop = threading.Event()

    def swap():
        spare = target.with_name(".spare")
        while not stop.is_set():
            for source in (b, a):
                spare.unlink(missing_ok=True)
                os.link(source, spare)
                os.replace(spare, target)

    os.link(a, target)
    reference = _invoke(["import-checkpoint", "--source", str(target), "--dest", spec["reference"]], usages)
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes = []
    try:
        for run in range(spec["runs"]):
            dest = Path(spec["folder"]) / f"race-{run}.safetensors"
            outcome = _invoke(
                [
                    "import-checkpoint",
                    "--source",
                    str(target),
                    "--sha256",
                    spec["sha_a"],
                    "--dest",
                    str(dest),
                ],
                usages,
            )
            outcome["same_as_a"] = (
                dest.is_file() and dest.read_bytes() == Path(spec["reference"]).read_bytes()
            )
            outcomes.append(outcome)
    finally:
        stop.set()
        swapper.join()
    return [reference, *outcomes]


def _harness(spec_path: str, out_path: str) -> None:
    """Run every case of the spec in this process; write what happened as JSON."""
    from fdm.checkpoints import backstop

    resource.setrlimit(resource.RLIMIT_AS, (HARNESS_ADDRESS_SPACE, HARNESS_ADDRESS_SPACE))
    spec = json.loads(Path(spec_path).read_text())
    usages = []

    class Usage(logging.Handler):
        def emit(self, record):
            usages.append(getattr(record, "usage", None))

    log = logging.getLogger("fdm.checkpoints.backstop")
    log.addHandler(Usage())
    log.setLevel(logging.DEBUG)
    results = {"before": _invoke(spec["control"], usages)}  # starts the forkserver
    with attacker_server() as server:
        results["cases"] = {
            name: _invoke([arg.replace("{server}", server) for arg in args], usages)
            for name, args in spec["cases"].items()
        }
    results["race"] = _race(spec["race"], usages)
    results["backstop"] = {}
    for name, (memory, seconds, wall) in BACKSTOP.items():
        began = time.perf_counter()
        try:
            backstop.run(
                f"test_import_redteam:{name}",
                (),
                what=f"running {name}",
                memory=memory,
                seconds=seconds,
                wall_seconds=wall,
                preload=("fdm.checkpoints.convert",),
            )
            message = None
        except FdmError as err:
            message = str(err)
        results["backstop"][name] = {"message": message, "seconds": time.perf_counter() - began}
    results["after"] = _invoke(spec["control"], usages)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out_path).write_text(json.dumps(results))


@pytest.fixture(scope="module")
def redteam(tmp_path_factory):
    """Write every case's file, run them all in one child process; (its results, the cases' paths)."""
    folder = tmp_path_factory.mktemp("redteam")
    cases, dests = {}, {}
    valid = training()
    for name, (make, options, _) in CASES.items():
        case = folder / name
        case.mkdir()
        dests[name] = case / "out" / "snapshot.safetensors"
        args = ["import-checkpoint", "--dest", str(dests[name]), "--cache-dir", str(case / "cache"), *options]
        if name == "one-byte-flipped":
            source = case / "network-snapshot.pkl"
            flipped = bytearray(valid)
            flipped[len(flipped) // 2] ^= 1
            source.write_bytes(bytes(flipped))
            args += ["--source", str(source), "--sha256", hashlib.sha256(valid).hexdigest()]
        elif make is not None:
            source = case / "network-snapshot.pkl"
            source.write_bytes(make())
            args += ["--source", str(source)]
        cases[name] = args
    (folder / "valid.pkl").write_bytes(valid)
    (folder / "other.pkl").write_bytes(training(seed=1))
    race = {
        "target": str(folder / "race" / "network-snapshot.pkl"),
        "a": str(folder / "valid.pkl"),
        "b": str(folder / "other.pkl"),
        "sha_a": hashlib.sha256(valid).hexdigest(),
        "reference": str(folder / "race" / "reference.safetensors"),
        "folder": str(folder / "race"),
        "runs": 8,
    }
    (folder / "race").mkdir()
    control = [
        "import-checkpoint",
        "--source",
        str(folder / "valid.pkl"),
        "--dest",
        str(folder / "control.safetensors"),
    ]
    spec = {"cases": cases, "race": race, "control": control}
    (folder / "spec.json").write_text(json.dumps(spec))
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, str(folder / "spec.json"), str(folder / "results.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((folder / "results.json").read_text())
    results["harness"] = {
        "seconds": time.perf_counter() - began,
        "stdout": done.stdout,
        "stderr": done.stderr,
    }
    return results, dests, race


@pytest.mark.parametrize("name", list(CASES))
def test_refused_in_one_line_bounded_and_writing_nothing(redteam, name):
    results, dests, _ = redteam
    outcome, words = results["cases"][name], CASES[name][2]
    output = outcome["stdout"] + outcome["stderr"]
    assert outcome["escaped"] is None and "Traceback" not in output, output
    assert outcome["exit"] == 2, output
    lines = [line for line in outcome["stderr"].splitlines() if line.startswith("fdm: error:")]
    assert len(lines) == 1, outcome["stderr"]
    for word in words:
        assert word in lines[0], lines[0]
    assert not any(ord(c) < 32 and c not in "\n\r\t" for c in output), repr(output)  # no escape sequence
    assert "\nfdm: imported" not in output
    dest = dests[name]
    assert not dest.exists() and not dest.parent.exists(), list(dest.parent.iterdir())
    assert outcome["seconds"] < CASE_SECONDS, outcome["seconds"]
    if outcome["usage"] is not None:  # a conversion child ran: its growth over the forkserver's pages
        usage = outcome["usage"]
        assert usage["peak_rss_mib"] - usage["start_rss_mib"] < CASE_MEMORY, usage
    if name.startswith("download"):  # nothing but a resumable part is kept in the cache
        cache = dest.parents[1] / "cache"
        assert all(p.name.endswith(".part") for p in cache.iterdir()) if cache.is_dir() else True


def test_the_checksum_names_the_file_and_both_digests(redteam):
    results, dests, race = redteam
    line = results["cases"]["one-byte-flipped"]["stderr"].strip().splitlines()[-1]
    source = dests["one-byte-flipped"].parents[1] / "network-snapshot.pkl"
    digest, expected = hashlib.sha256(source.read_bytes()).hexdigest(), race["sha_a"]  # of the valid pickle
    assert line == f"fdm: error: checksum mismatch: {source} has SHA-256 {digest}, expected {expected}"


def test_the_sha256_swap_race_converts_only_the_checked_bytes(redteam):
    """Each run reads the file once: it converts the pickle whose digest it checked, or refuses."""
    results, _, race = redteam
    reference, *runs = results["race"]
    assert reference["exit"] == 0, reference["stderr"]
    sha_b = hashlib.sha256(Path(race["b"]).read_bytes()).hexdigest()
    mismatch = (
        f"fdm: error: checksum mismatch: {race['target']} has SHA-256 {sha_b}, expected {race['sha_a']}"
    )
    for run in runs:
        if run["exit"] == 0:
            assert run["same_as_a"], run  # never the other file's network under the expected digest
        else:
            assert run["exit"] == 2 and run["stderr"].strip().splitlines() == [mismatch], run
    assert len(runs) == race["runs"]


def test_normal_imports_before_and_after_the_attacks(redteam):
    results, _, _ = redteam
    assert results["before"]["exit"] == 0 and results["after"]["exit"] == 0, results["after"]["stderr"]
    assert results["after"]["stdout"] == results["before"]["stdout"]
    assert (
        results["before"]["usage"]["peak_rss_mib"] - results["before"]["usage"]["start_rss_mib"] < CASE_MEMORY
    )


def test_the_backstop_ends_what_the_checks_do_not_know_in_one_line(redteam):
    results, _, _ = redteam
    backstop = results["backstop"]
    for name in ("_hog_memory", "_hog_torch_memory"):
        assert backstop[name]["message"] == (
            f"running {name} needed more than its memory limit of 256 MiB; stopped (nothing was written)"
        )
    assert (
        backstop["_spin"]["message"]
        == "running _spin took more than 1 s of CPU time; stopped (nothing was written)"
    )
    assert backstop["_hang"]["message"] == "running _hang took more than 1 s; stopped (nothing was written)"
    crash = backstop["_crash"]["message"]
    assert crash.startswith("internal error: running _crash ended with signal SIGSEGV before answering")
    bug = backstop["_bug"]["message"]
    assert bug.startswith("internal error: running _bug failed with KeyError (a bug in fdm")
    log = Path(bug.rsplit("the traceback is in ", 1)[1])
    assert "Traceback" in log.read_text() and "a key nobody set" in log.read_text()
    log.unlink()
    Path(crash.rsplit("its output is in ", 1)[1]).unlink()
    assert backstop["_chatty"]["message"] == "refused, politely"
    harness = results["harness"]
    assert "LEAKED" not in harness["stdout"] + harness["stderr"]
    for name, outcome in backstop.items():
        assert outcome["seconds"] < CASE_SECONDS + (1 if name in ("_spin", "_hang") else 0), (name, outcome)


def test_the_harness_stayed_small(redteam):
    results, _, _ = redteam
    assert results["peak_rss_mib"] < 1024  # the parent side never holds a network or a pickle's tree
    slowest = sorted(results["cases"].items(), key=lambda item: -item[1]["seconds"])[:3]
    grown = [(u["peak_rss_mib"] - u["start_rss_mib"]) for c in results["cases"].values() if (u := c["usage"])]
    print(
        f"red-team harness: {results['harness']['seconds']:.1f} s for {len(CASES)} cases; slowest "
        + ", ".join(f"{name} {case['seconds']:.2f} s" for name, case in slowest)
        + f"; conversion children grew by at most {max(grown):.0f} MiB; harness peak RSS "
        f"{results['peak_rss_mib']:.0f} MiB"
    )


# Dataset downloads share fdm.data.download: the same limits, called directly.


@pytest.fixture(scope="module")
def server():
    with attacker_server() as url:
        yield url


def test_dataset_downloads_are_bounded(tmp_path, server):
    dest = tmp_path / "downloads" / "cifar-10-python.tar.gz"
    cases = {
        "ftp.pkl": ({}, "redirects to 'ftp://127.0.0.1:1/network.pkl'; only http and https are followed"),
        "endless.pkl": ({"max_bytes": 1 << 20}, "sent more than the limit of 1,048,576 bytes"),
        "huge.pkl": (
            {"size": 170_498_071},
            "announces 1,000,000,000,000 bytes, more than the limit of 170,498,071",
        ),
        "drip.pkl": ({"deadline": 1.0}, "took longer than its limit of 1 s"),
    }
    for route, (limits, words) in cases.items():
        began = time.perf_counter()
        with pytest.raises(FdmError) as refused:
            download(f"{server}/{route}", dest, **limits)
        assert words in str(refused.value) and "\n" not in str(refused.value)
        assert time.perf_counter() - began < CASE_SECONDS
        assert list(dest.parent.iterdir()) == []  # nothing, not even a part


def test_prepare_cifar10_refuses_an_ftp_redirect(tmp_path, server):
    dest = tmp_path / "cifar10.zip"
    result = run_fdm("prepare", "cifar10", "--dest", dest, "--url", f"{server}/ftp.pkl", "--md5", "0" * 32)
    assert result.exit_code == 2
    assert "only http and https are followed" in result.stderr.strip().splitlines()[-1]
    assert not dest.exists()


if __name__ == "__main__":
    _harness(*sys.argv[1:])


# The same cases in this process, for the refusals the unpickler and the converter make themselves: the
# harness above runs them as a user would (a child process, resource limits), which coverage tools that
# trace one process (mutation testing, bench/mutation.py) cannot see. The ones that need the limits
# (bombs, deep nesting, huge counts), options or a server stay with the harness only.
IN_PROCESS_EXCLUDED = {
    "hash-bomb-key", "memo-index-4-billion", "numpy-scalar-of-256-mib", "deflate-bomb-storage",
    "million-operations", "larger-than-max-size", "num-blocks-10-pow-7", "64-blocks-1024-channels",
    "million-labels", "model-channels-2-pow-800000", "lists-100000-deep", "tuples-100000-deep",
    "one-byte-flipped",
}  # fmt: skip
IN_PROCESS = sorted(
    name
    for name, (make, options, _) in CASES.items()
    if make is not None and not options and name not in IN_PROCESS_EXCLUDED
)


@pytest.mark.parametrize("name", IN_PROCESS)
def test_the_unpickler_and_converter_refuse_each_case_in_process(name):
    from fdm.checkpoints.convert import convert_tree
    from fdm.checkpoints.unpickle import load_training_pickle

    make, _, words = CASES[name]
    data = make()
    with pytest.raises(FdmError) as refused:
        tree = load_training_pickle(data, "network-snapshot.pkl")
        convert_tree(tree, "network-snapshot.pkl", hashlib.sha256(data).hexdigest())
    message = str(refused.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_valid_pickle_converts_in_process_to_its_networks_tensors():
    """The control case of the harness in this process: every tensor of the pickled network comes back
    with its name, shape, dtype and values, each a plain tensor (no grad, no hooks)."""
    import torch

    from fdm.checkpoints.convert import convert_tree
    from fdm.checkpoints.unpickle import load_training_pickle

    data = training()
    state, config = convert_tree(
        load_training_pickle(data, "valid.pkl"), "valid.pkl", hashlib.sha256(data).hexdigest()
    )
    expected = network(0).state_dict()
    assert sorted(state) == sorted(expected)
    for key, tensor in state.items():
        assert type(tensor) is torch.Tensor and not tensor.requires_grad and tensor.grad_fn is None
        assert tensor.dtype == expected[key].dtype and torch.equal(tensor, expected[key]), key
    assert config["network"]["model_channels"] == 8

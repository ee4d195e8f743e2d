"""`fdm import-checkpoint`: the authors' training pickles into snapshots, without running their code.

The pickles come from ``authors_pickles.training_pickle``: our network, laid out under the authors'
SongUNet names inside stand-in persistent classes whose module source is "# stub" lines. The real thing
is checked by bench/official_crosscheck.py: it writes pickles with the authors' code (each of the six
preconditioner classes, with their loss and AugmentPipe, as their training loop saves them), finds in
them exactly the globals in ``REAL_GLOBALS`` and the opcodes in ``REAL_OPCODES``, as the generator's
have (``test_generator_has_the_structure_of_real_pickles``), and imports them to denoisers that match
the authors' D(x; sigma) to float32 rounding (docs/benchmarks.md). Attacks on the importer are
tests/test_import_redteam.py; the pieces its defences rest on are checked here (the network's size from
its options, numpy's canonical dtype states, the legacy storage format, the immutable allow-list).
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import pickletools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from authors_pickles import REAL_GLOBALS, REAL_OPCODES, Call, Global, dumps, training_pickle
from data_fixtures import assert_fails_cleanly, run_fdm, serve

from fdm.checkpoints import load_authors_pickle
from fdm.checkpoints.cli import parse_size
from fdm.checkpoints.convert import weight_count
from fdm.checkpoints.unpickle import (
    ALLOWED,
    OPCODES,
    STORAGE_TYPES,
    Refusal,
    RestrictedUnpickler,
    load_training_pickle,
)
from fdm.diffusion import Denoiser, formulation
from fdm.digest import file_sha256
from fdm.errors import FdmError
from fdm.nets import ARCHITECTURES, DEFAULT_OPTIONS, build
from fdm.snapshot import load_denoiser

SMALL = dict(
    img_resolution=8,
    img_channels=3,
    label_dim=3,
    augment_dim=2,
    model_channels=8,
    channel_mult=[1, 2],
    num_blocks=1,
    attn_resolutions=[4],
    dropout=0.1,
)


def network(arch: str, **options) -> dict:
    """All ``build`` options of a small network, as the importer writes them (lists, not tuples)."""
    settings = {**DEFAULT_OPTIONS, **ARCHITECTURES[arch], **SMALL, **options}
    return {"arch": arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}


def random_net(config: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build(**config)
    for p in net.parameters():  # away from the near-zero initialisation, so every layer matters
        p.data.normal_(0, 0.2)
    return net.eval()


def write(tmp_path, data: bytes, name: str = "network-snapshot-000100.pkl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def import_(source, dest, *options):
    return run_fdm("import-checkpoint", "--source", source, "--dest", dest, *options)


def preconditioning(class_name: str, sigma: torch.Tensor, multiplier: float):
    """((c_skip, c_out, c_in, c_noise) in float64, the sigma range): EDM (arXiv 2206.00364) Table 1; FDM
    (arXiv 2306.06991) replaces c_in by exp(-m B)(1 + m B), B = 0.1 t + 9.95 t^2, t linear in sigma
    over the range."""
    base = class_name.removeprefix("FDM_")
    if base == "VPPrecond":

        def vp_sigma(t):
            return math.sqrt(math.exp(0.5 * 19.9 * t**2 + 0.1 * t) - 1)

        t = ((0.1**2 + 2 * 19.9 * torch.log1p(sigma**2)).sqrt() - 0.1) / 19.9
        c = 1 + 0 * sigma, -sigma, 1 / (sigma**2 + 1).sqrt(), 999 * t
        low, high = vp_sigma(1e-5), vp_sigma(1.0)
    elif base == "VEPrecond":
        c = 1 + 0 * sigma, sigma, 1 + 0 * sigma, (sigma / 2).log()
        low, high = 0.02, 100.0
    else:
        sd = 0.5
        norm = (sigma**2 + sd**2).sqrt()
        c = sd**2 / norm**2, sigma * sd / norm, 1 / norm, sigma.log() / 4
        low, high = 0.002, 80.0
    if class_name.startswith("FDM_"):
        t = (sigma - low) / (high - low)
        mB = multiplier * (0.1 * t + 9.95 * t**2)
        c = c[0], c[1], (-mB).exp() * (1 + mB), c[3]
    return c, (low, high)


# (class, arch, network options, precond options, loss, expected multiplier and warmup of FDM)
CASES = [
    ("VPPrecond", "ddpmpp", {}, {}, ("VPLoss", {}), None),
    ("VEPrecond", "ncsnpp", {}, {}, ("VELoss", {}), None),
    ("EDMPrecond", "ddpmpp", {"encoder_type": "skip", "decoder_type": "skip"}, {}, ("EDMLoss", {}), None),
    ("FDM_VPPrecond", "ddpmpp", {}, {"fdm_multiplier": 2.5}, ("VPLoss", {"warmup_ite": 300.0}), (2.5, 300)),
    # The authors' FDM_VEPrecond ignores fdm_multiplier: imported with 1, as it runs.
    ("FDM_VEPrecond", "ncsnpp", {}, {"fdm_multiplier": 2.0}, ("VELoss", {"warmup_ite": 200.0}), (1.0, 200)),
    # No fdm_multiplier: the class default 1; no loss: no warmup cap.
    ("FDM_EDMPrecond", "ncsnpp", {"decoder_type": "skip"}, {}, None, (1.0, 0)),
]


@pytest.mark.parametrize("class_name, arch, options, precond, loss, fdm", CASES, ids=[c[0] for c in CASES])
def test_each_preconditioner_converts_to_the_same_denoiser(
    tmp_path, class_name, arch, options, precond, loss, fdm
):
    config = network(arch, **options)
    net = random_net(config)
    source = write(tmp_path, training_pickle(class_name, config, net, precond, loss=loss))
    dest = tmp_path / "out" / "imported.safetensors"
    result = import_(source, dest)
    assert result.exit_code == 0, result.output
    assert f"{class_name} -> " in result.stdout

    D, snapshot = load_denoiser(dest)
    assert snapshot["network"] == config
    imported = snapshot["imported"]
    assert imported["class_name"] == class_name and imported["network_class_name"] == "SongUNet"
    assert imported["sha256"] == file_sha256(source) and imported["source"] == str(source.resolve())
    assert imported["init_kwargs"]["model_channels"] == config["model_channels"]
    for name, tensor in net.state_dict().items():  # the very weights we laid out under the authors' names
        assert torch.equal(D.net.state_dict()[name], tensor), name
    if fdm is not None:
        assert (D.formulation.multiplier, D.formulation.warmup) == fdm
    if class_name == "FDM_VEPrecond":
        assert imported["init_kwargs"]["fdm_multiplier"] == 2.0
        assert any("ignores fdm_multiplier (2)" in note for note in imported["notes"])

    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    labels = torch.eye(3)[[0, 1, 2, 0]]
    sigma = torch.tensor([0.05, 0.5, 5.0, 50.0])
    with torch.no_grad():
        got = D(x, sigma, labels)
        # The net we started from under the stored formulation, bit for bit ...
        reference = Denoiser(net, formulation(**snapshot["formulation"]))(x, sigma, labels)
        torch.testing.assert_close(got, reference, rtol=0, atol=0)
        # ... and D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) from the papers' formulas.
        scalings, sigma_range = preconditioning(class_name, sigma.double(), fdm[0] if fdm else 1.0)
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in scalings)
        F = net((c_in * x).float(), c_noise.flatten().float(), class_labels=labels).double()
        # (Within float32 rounding of c_noise and c_in, amplified by |c_out| = sigma = 50.)
        torch.testing.assert_close(got.double(), c_skip * x + c_out * F, rtol=1e-4, atol=1e-3)
    assert (D.sigma_min, D.sigma_max) == pytest.approx(sigma_range, rel=1e-12)


def test_generator_has_the_structure_of_real_pickles():
    config = network("ncsnpp")
    data = training_pickle(
        "FDM_EDMPrecond", config, random_net(config), loss=("EDMLoss", {"warmup_ite": 1.0})
    )
    seen = set()

    class Recording(RestrictedUnpickler):
        def find_class(self, module, name):
            seen.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recording(io.BytesIO(data)).load()
    assert seen == REAL_GLOBALS
    assert {op.name for op, _, _ in pickletools.genops(data)} == REAL_OPCODES


def test_load_authors_pickle_and_sample(tmp_path):
    config = network("ddpmpp")
    net = random_net(config)
    source = write(tmp_path, training_pickle("EDMPrecond", config, net))
    D = load_authors_pickle(source)
    assert (D.sigma_min, D.sigma_max, D.formulation.name) == (0.002, 80.0, "edm") and not D.training
    dest = tmp_path / "edm.safetensors"
    assert import_(source, dest).exit_code == 0
    result = run_fdm("sample", "--snapshot", dest, "--sampler", "heun", "--nfe", 3, "--seeds", "0-1",
                     "--dest", tmp_path / "s.npz")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.npz").is_file()


def test_protocol_3_pickles_convert_too(tmp_path):
    """Python 3.7 pickled with protocol 3 by default: sets as calls of builtins.set, GLOBAL opcodes."""
    config = network("ncsnpp")
    net = random_net(config)
    data = training_pickle("VEPrecond", config, net, protocol=3)
    assert b"cbuiltins\nset\n" in data
    D = load_authors_pickle(write(tmp_path, data))
    for name, tensor in net.state_dict().items():
        assert torch.equal(D.net.state_dict()[name], tensor), name


def _exploits(marker) -> dict[str, tuple[str, Call]]:
    """Payloads that create ``marker`` under pickle.load: test id -> (the global refused, the payload)."""
    system = Global(os.system.__module__, "system")  # "posix" on Linux
    touch = Call(system, f"touch {marker}")
    getattr_ = Call(Global("builtins", "getattr"), Call(Global("builtins", "__import__"), "os"), "system")
    return {
        "system": (f"{os.system.__module__}.system", touch),
        "exec": ("builtins.exec", Call(Global("builtins", "exec"), f"open({str(marker)!r}, 'w').close()")),
        "popen": ("subprocess.Popen", Call(Global("subprocess", "Popen"), ["touch", str(marker)])),
        "getattr": ("builtins.getattr", Call(getattr_, f"touch {marker}")),
        # Inside a tensor storage: torch's weights-only loader parses those bytes, and refuses.
        "storage": (
            system.module + ".system",
            Call(Global("torch.storage", "_load_from_bytes"), dumps(touch, 2)),
        ),
        "container": (
            "torch.nn.modules.container.ModuleDict",
            Call(Global("torch.nn.modules.container", "ModuleDict"), {}),
        ),
    }


@pytest.mark.parametrize("case", list(_exploits("x")))
def test_refuses_code_and_runs_none_of_it(tmp_path, case):
    marker = tmp_path / "pwned"
    refused, exploit = _exploits(marker)[case]
    config = network("ddpmpp")
    source = write(tmp_path, training_pickle("EDMPrecond", config, random_net(config), {"extra": exploit}))
    dest = tmp_path / "out.safetensors"
    assert_fails_cleanly(import_(source, dest), dest, refused, str(source))
    assert not marker.exists()


def test_the_exploits_are_live(tmp_path):
    """The refused payloads do run under pickle.load: the refusal above is what stops them."""
    marker = tmp_path / "pwned"
    for case in ("system", "exec"):
        pickle.loads(dumps(_exploits(marker)[case][1]))
        assert marker.exists(), case
        marker.unlink()


def test_refuses_persistent_ids_and_damaged_files(tmp_path):
    dest = tmp_path / "out.safetensors"
    persistent_id = b"\x80\x04\x8c\x02id" + pickle.BINPERSID + pickle.STOP
    assert_fails_cleanly(import_(write(tmp_path, persistent_id), dest), dest, "persistent id")
    config = network("ddpmpp")
    data = training_pickle("EDMPrecond", config, random_net(config))
    truncated = write(tmp_path, data[: len(data) // 2], "truncated.pkl")
    assert_fails_cleanly(import_(truncated, dest), dest, "truncated", str(truncated))
    assert_fails_cleanly(
        import_(write(tmp_path, b"PK\x03\x04 not a pickle", "zip.pkl"), dest), dest, "not a readable"
    )
    assert_fails_cleanly(import_(tmp_path / "missing.pkl", dest), dest, "no such file", "missing.pkl")


def test_refuses_what_it_cannot_represent(tmp_path):
    dest = tmp_path / "out.safetensors"
    config = network("ddpmpp")
    net = random_net(config)

    def fails(data: bytes, *words):
        assert_fails_cleanly(import_(write(tmp_path, data), dest), dest, *words)

    fails(training_pickle("iDDPMPrecond", config, net), "unknown preconditioner class 'iDDPMPrecond'")
    fails(training_pickle("EDMPrecond", config, net, model_class="DhariwalUNet"), "DhariwalUNet", "ADM")
    fails(training_pickle("FDM_EDMPrecond", config, net, {"fdm_beta_d": 10.0}), "fdm_beta_d=10.0", "19.9")
    fails(training_pickle("VPPrecond", config, net, {"P_mean": 0.0}), "P_mean", "unknown")
    fails(dumps({"loss_fn": None, "dataset_kwargs": {}}), "no 'ema'")
    fails(dumps([1, 2, 3]), "no 'ema'")

    net.map_layer0.weight = torch.nn.Parameter(torch.zeros(5, 5))
    fails(training_pickle("EDMPrecond", config, net), "model.map_layer0.weight has shape [5, 5]", "[32, 8]")
    net = random_net(config)
    net.map_layer1.bias = None
    fails(training_pickle("EDMPrecond", config, net), "no tensor for map_layer1.bias")


def _storage(values: torch.Tensor) -> Call:
    """A tensor storage as torch pickles it: ``_load_from_bytes`` of the storage's own torch.save bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage's deprecation notice
        load, (data,) = values.storage().__reduce__()
    return Call(Global(load.__module__, load.__name__), data)


def _tensor_records() -> dict[str, Call]:
    """Tensor records over the storage [0, 1, 2, 3] that ask for more than a plain tensor."""
    rebuild = Global("torch._utils", "_rebuild_tensor_v2")
    storage, size, stride = _storage(torch.arange(4.0)), (2, 2), (2, 1)
    tensor = Call(rebuild, storage, 0, size, stride, False, collections.OrderedDict())
    return {
        "requires_grad": Call(rebuild, storage, 0, size, stride, True, collections.OrderedDict()),
        "hooks": Call(rebuild, storage, 0, size, stride, False, collections.OrderedDict({0: "a hook"})),
        "parameter": Call(
            Global("torch._utils", "_rebuild_parameter"), tensor, True, collections.OrderedDict()
        ),
        "pickled_tensor": torch.arange(4.0).reshape(2, 2).requires_grad_(),  # through torch's own reduce
    }


@pytest.mark.parametrize("record", list(_tensor_records()))
def test_a_tensor_record_loads_as_a_plain_tensor_or_is_refused(tmp_path, record):
    """What a file asks of a tensor beyond its values (autograd, hooks) is never honoured: the tensor is
    plain data (no gradient, no hooks) holding the storage's values, or the file is refused in one line."""
    path = write(tmp_path, dumps({"weight": _tensor_records()[record]}))
    try:
        loaded = load_training_pickle(path.read_bytes(), str(path))["weight"]
    except FdmError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return
    assert isinstance(loaded, torch.Tensor) and not loaded.requires_grad
    assert not getattr(loaded, "_backward_hooks", None)
    assert torch.equal(loaded.detach(), torch.arange(4.0).reshape(2, 2))


# Tensor.set_ would enlarge a resizable storage instead of refusing a view past its end (issue 21, item 3):
# the importer checks the bounds itself.
@pytest.mark.parametrize(
    ("offset", "size", "stride"),
    [
        pytest.param(0, (3, 3), (3, 1), id="larger"),
        pytest.param(3, (2,), (1,), id="past_the_end"),
        pytest.param(-1, (2,), (1,), id="negative_offset"),
        pytest.param(0, (2, 2), (-1, 1), id="negative_stride"),
        pytest.param(0, [2, 2], [2, 1], id="lists"),
    ],
)
def test_a_tensor_record_outside_its_storage_or_malformed_is_refused(tmp_path, offset, size, stride):
    """A tensor is a view inside its storage's values, with sizes and strides as pickled tuples of ints."""
    rebuild = Global("torch._utils", "_rebuild_tensor_v2")
    record = Call(
        rebuild, _storage(torch.arange(4.0)), offset, size, stride, False, collections.OrderedDict()
    )
    path = write(tmp_path, dumps({"weight": record}))
    with pytest.raises(FdmError, match=str(path)):
        load_training_pickle(path.read_bytes(), str(path))


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp"])
def test_the_weight_count_from_the_options_is_the_built_networks(arch):
    """The closed form the importer compares with a pickle's tensors before building: every option that
    changes the network's size, against the network fdm.nets builds."""
    variants = itertools.product(
        ("standard", "skip", "residual"),  # encoder_type
        ("standard", "skip"),  # decoder_type
        ((0, 0), (10, 9)),  # label_dim, augment_dim
        ([1], [1, 2], [2, 1, 3]),  # channel_mult
        ((), (4,), (8, 2)),  # attn_resolutions
    )
    for encoder, decoder, (labels, augment), mult, attention in variants:
        options = dict(
            encoder_type=encoder, decoder_type=decoder, label_dim=labels, augment_dim=augment,
            channel_mult=mult, attn_resolutions=list(attention), num_blocks=2, channel_mult_emb=3,
            channel_mult_noise=2, model_channels=8,
        )  # fmt: skip
        config = network(arch, img_resolution=8, img_channels=3, **options)
        net = build(**config)
        assert weight_count(config) == sum(t.numel() for t in net.state_dict().values()), options


def test_numpy_scalars_become_python_numbers_through_numpys_own_pickles():
    """Every numeric dtype numpy pickles (its canonical state) is read, its scalar as the Python number."""
    for code, value in [("f2", 0.5), ("f4", 1.25), ("f8", math.pi), ("i1", -3), ("i2", 300), ("i4", -70000),
                        ("i8", 2**40), ("u1", 200), ("u2", 60000), ("u4", 2**31), ("u8", 2**63), ("b1", True)]:  # fmt: skip
        scalar = np.dtype(code).type(value)
        data = pickle.dumps({"x": scalar}, protocol=4)
        loaded = RestrictedUnpickler(io.BytesIO(data)).load()["x"]
        assert type(loaded) is type(scalar.item()) and loaded == scalar.item(), code
    data = pickle.dumps(np.dtype("f8"), protocol=4)
    assert repr(RestrictedUnpickler(io.BytesIO(data)).load()) == "dtype(f8)"


@pytest.mark.parametrize("dtype", sorted(set(STORAGE_TYPES.values()), key=str))
def test_legacy_storages_are_read_as_torch_writes_them(dtype):
    """Storage.__reduce__ (torch.save's legacy stream) for every storage type, back to the same values."""
    values = (torch.arange(7) * 3 - 5).to(dtype)
    data = dumps(values.reshape(7, 1), 4)  # through torch's own reduce: _rebuild_tensor_v2 of the storage
    loaded = RestrictedUnpickler(io.BytesIO(data)).load()
    assert loaded.dtype == dtype and torch.equal(loaded, values.reshape(7, 1))
    assert not loaded.untyped_storage().resizable()  # nothing can enlarge what a tensor views


def test_the_storages_of_a_file_hold_at_most_its_bytes():
    config = network("ddpmpp")
    data = training_pickle("EDMPrecond", config, random_net(config))
    with pytest.raises(Refusal, match=r"tensor storages of more than 1,000 bytes in all"):
        RestrictedUnpickler(io.BytesIO(data), max_storage_bytes=1000).load()
    assert load_training_pickle(data, "x")["ema"].class_name == "EDMPrecond"


def test_the_allow_list_cannot_be_changed():
    """What a pickle gets for an allowed global has no __dict__, refuses attributes and any state."""
    loaded = RestrictedUnpickler(io.BytesIO(dumps([Global("torch._utils", "_rebuild_parameter")]))).load()
    function = loaded[0]
    assert function is ALLOWED[("torch._utils", "_rebuild_parameter")]
    for attempt in (lambda: setattr(function, "call", print), lambda: function.__setstate__((None, {}))):
        with pytest.raises(Refusal):
            attempt()
    assert not hasattr(function, "__dict__")
    assert OPCODES >= REAL_OPCODES and not OPCODES & {"INST", "OBJ", "EXT1", "PERSID", "BINPERSID", "LONG4"}


def test_an_unexpected_exception_is_one_line_with_its_traceback_kept(tmp_path, monkeypatch):
    import fdm.checkpoints

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fdm.checkpoints, "import_checkpoint", broken)
    dest = tmp_path / "out.safetensors"
    line = assert_fails_cleanly(
        import_(tmp_path / "x.pkl", dest), dest, "internal error: RuntimeError", "x.pkl"
    )
    log = Path(line.rsplit("the traceback is in ", 1)[1])
    assert "Traceback" in log.read_text() and "a bug" in log.read_text()
    log.unlink()


def test_sizes_for_max_size():
    assert [parse_size(t) for t in ("123", "2GiB", "500MB", "1.5 kB", "3MiB")] == [
        123, 2 * 2**30, 500 * 10**6, 1500, 3 * 2**20
    ]  # fmt: skip


def test_sha256_of_a_local_file(tmp_path):
    config = network("ddpmpp")
    source = write(tmp_path, training_pickle("VPPrecond", config, random_net(config)))
    dest = tmp_path / "out.safetensors"
    digest = file_sha256(source)
    assert_fails_cleanly(
        import_(source, dest, "--sha256", "0" * 64), dest, "checksum mismatch", digest, "0" * 64
    )
    assert source.is_file()  # the user's own file stays
    assert_fails_cleanly(import_(source, dest, "--sha256", "abc"), dest, "64 hexadecimal digits")
    assert import_(source, dest, "--sha256", digest.upper()).exit_code == 0


@pytest.fixture
def served_pickle(tmp_path):
    config = network("ncsnpp")
    net = random_net(config)
    return training_pickle("FDM_VEPrecond", config, net, {"fdm_multiplier": 2.0}), net


def test_download_resumes_with_range_then_reuses_the_cache(tmp_path, served_pickle, monkeypatch):
    data, net = served_pickle
    monkeypatch.setenv("FDM_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "checkpoints"
    dest, half = tmp_path / "fdm_ve.safetensors", len(data) // 2
    with serve({"/run/network-snapshot-000100.pkl": (data[:half], len(data))}, ranges=True) as server:
        url = f"{server.url}/run/network-snapshot-000100.pkl"
        result = import_(url, dest)
        assert_fails_cleanly(result, dest, "interrupted", f"{half} of {len(data)} bytes", "resume")
        (part,) = cache.iterdir()
        assert part.name.endswith("-network-snapshot-000100.pkl.part") and part.read_bytes() == data[:half]

        server.routes[url.removeprefix(server.url)] = (data, len(data))
        result = import_(url, dest, "--sha256", hashlib.sha256(data).hexdigest())
        assert result.exit_code == 0, result.output
        assert server.range_headers[-1] == f"bytes={half}-"
        assert "downloading" in result.stderr and "100%" in result.stderr
        (cached,) = cache.iterdir()
        assert cached.read_bytes() == data and cached.name == part.name.removesuffix(".part")
        D, snapshot = load_denoiser(dest)
        assert snapshot["imported"]["source"] == url and snapshot["formulation"]["multiplier"] == 1.0
        assert torch.equal(D.net.map_noise.freqs, net.map_noise.freqs)

        hits = len(server.hits)
        assert import_(url, tmp_path / "again.safetensors").exit_code == 0
        assert len(server.hits) == hits  # the cache, not the server
        assert (tmp_path / "again.safetensors").read_bytes() == dest.read_bytes()
        # A cached file that fails the caller's checksum is not kept as if valid.
        again = tmp_path / "third.safetensors"
        assert_fails_cleanly(import_(url, again, "--sha256", "1" * 64), again, "checksum mismatch", "removed")
        assert list(cache.iterdir()) == []
        # A stale part longer than the file: the server answers 416, the download starts over.
        part.write_bytes(data + b"stale")
        assert import_(url, again).exit_code == 0
        assert server.range_headers[-2:] == [f"bytes={len(data) + 5}-", None]
        assert cached.read_bytes() == data and not part.exists()


def test_download_restarts_where_the_server_ignores_ranges(tmp_path, served_pickle):
    data, _ = served_pickle
    cache, dest, half = tmp_path / "cache", tmp_path / "out.safetensors", len(data) // 3
    with serve({"/n.pkl": (data[:half], len(data))}) as server:
        assert_fails_cleanly(import_(f"{server.url}/n.pkl", dest, "--cache-dir", cache), dest, "interrupted")
        server.routes["/n.pkl"] = (data, len(data))  # answered with 200 and the whole body
        result = import_(f"{server.url}/n.pkl", dest, "--cache-dir", cache)
        assert result.exit_code == 0, result.output
        assert server.range_headers[-1] == f"bytes={half}-"
    assert [p.read_bytes() == data for p in cache.iterdir()] == [True]


def test_download_errors_leave_nothing(tmp_path, served_pickle):
    data, _ = served_pickle
    cache, dest = tmp_path / "cache", tmp_path / "out.safetensors"
    with serve({"/n.pkl": data}) as server:
        result = import_(f"{server.url}/missing.pkl", dest, "--cache-dir", cache)
        assert_fails_cleanly(result, dest, "HTTP 404", f"{server.url}/missing.pkl")
        result = import_(f"{server.url}/n.pkl", dest, "--cache-dir", cache, "--sha256", "2" * 64)
        assert_fails_cleanly(result, dest, "checksum mismatch", "2" * 64, "discarded")
    assert list(cache.iterdir()) == []
    assert_fails_cleanly(import_("ftp://127.0.0.1/n.pkl", dest), dest, "only http and https")


@pytest.mark.slow  # trains the digits feature network (about 10 s)
def test_a_profiles_released_checkpoint_is_imported_evaluated_and_reported(tmp_path, monkeypatch):
    """The pipeline's jobs for a `pretrained` entry: import (the record and the final snapshot), evaluate at
    every point of the final snapshot's plan, and the report's pretrained table; a pickle of another
    formulation than the entry names is refused in one line, leaving nothing."""
    import yaml

    config = network("ddpmpp", img_resolution=16, img_channels=1, label_dim=10, augment_dim=0)
    pickle_path = write(
        tmp_path, training_pickle("FDM_EDMPrecond", config, random_net(config), {"fdm_multiplier": 2.0})
    )
    profile = yaml.safe_load((Path(__file__).parent / "workflow_tiny.yaml").read_text())
    profile["pretrained"] = [{"dataset": "digits", "formulation": "fdm_edm", "url": str(pickle_path)},
                             {"dataset": "digits", "formulation": "edm", "url": str(pickle_path)}]  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(profile))
    monkeypatch.chdir(tmp_path)
    out = "out/tiny"  # the profile's own folder
    run = f"{out}/runs/digits/fdm_edm/pretrained"
    for args in (
        ["prepare-dataset", "--params", "params.yaml", "--dataset", "digits", "--dest", f"{out}/data/digits.zip"],
        ["feature-net", "--extractor", "digitsnet", "--dest", "data/networks/digitsnet"],
        ["ref-stats", "--params", "params.yaml", "--dataset", "digits", "--extractor", "digitsnet",
         "--dest", f"{out}/data/stats/digits/digitsnet"],
        ["eval-config", "--params", "params.yaml", "--dataset", "digits", "--kimg", "2", "--dest", f"{out}/runs/digits/eval/2.json"],
        ["import-checkpoint", "--params", "params.yaml", "--dataset", "digits", "--formulation", "fdm_edm",
         "--record", f"{run}/trained.json"],
        ["evaluate", "--config", f"{out}/runs/digits/eval/2.json", "--run", run, "--record", f"{run}/eval/2/evaluated.json"],
        ["report", "--params", "params.yaml"],
    ):  # fmt: skip
        result = run_fdm(*args)
        assert result.exit_code == 0, (args, result.output)
    record = json.loads(Path(run, "trained.json").read_text())
    assert record["snapshots"] == {
        "000002.safetensors": file_sha256(Path(run, "snapshots", "000002.safetensors"))
    }
    denoiser, snapshot_config = load_denoiser(Path(run, "snapshots", "000002.safetensors"))
    assert snapshot_config["formulation"]["name"] == "fdm_edm" and snapshot_config["imported"]["sha256"]
    assert sorted(json.loads(Path(run, "eval/2/evaluated.json").read_text())["points"]) == [
        "dpmpp_3s-3", "heun-3", "heun-7"
    ]  # fmt: skip
    table = Path(f"{out}/reports/digits/pretrained.md").read_text()
    assert "| NFE | fdm_edm |" in table and "## heun" in table and "## dpmpp_3s" in table
    assert "Floor: fid_digitsnet of " in table  # the metric's floor, from the reference statistics
    assert sorted(p.name for p in Path(f"{out}/reports/digits").iterdir()) == [
        "floor.csv", "pretrained.csv", "pretrained.md", "versions.json"
    ]  # fmt: skip
    assert json.loads(Path(run, "trained.json").read_text())["code"]["stage"] == "import_checkpoint"
    result = run_fdm("import-checkpoint", "--params", "params.yaml", "--dataset", "digits", "--formulation", "edm",
                     "--record", f"{out}/runs/digits/edm/pretrained/trained.json")  # fmt: skip
    assert result.exit_code == 2 and "holds a FDM_EDMPrecond (fdm_edm), not the edm" in result.stderr
    assert not Path(f"{out}/runs/digits/edm/pretrained/snapshots/000002.safetensors").exists()
    assert not Path(f"{out}/runs/digits/edm/pretrained/trained.json").exists()

"""The Inception plumbing, tested with a TorchScript STAND-IN for inception-2015-12-05.pt.

The real file (95 MB, NVIDIA's CDN) is not available offline. The stand-in has the interface clean-fid's
``InceptionV3W`` relies on: ``forward(x, return_features=True)`` on [0, 255] images of any size (resized
inside, as ``legacy_tensorflow`` uses it) and a ``layers`` submodule on normalised 299x299 images (as
``clean`` uses it), both giving 2048 features per image. Its numbers mean nothing; the plumbing does.
"""

import contextlib
import functools
import http.server
import json
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from fdm.cli import main
from fdm.errors import FdmError
from fdm.metrics.features import (
    INCEPTION_FILE,
    INCEPTION_MODES,
    INCEPTION_URL,
    build_extractor,
    fetch_inception,
)
from fdm.samples import Samples, save_samples


class StandInLayers(nn.Module):
    """Normalised [N, 3, 299, 299] images -> [N, 2048] (an 8x8 average pool and a fixed projection)."""

    def __init__(self):
        super().__init__()
        self.project = nn.Linear(3 * 8 * 8, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return torch.tanh(self.project(pooled))


class StandInInception(nn.Module):
    """Stand-in for clean-fid's TorchScript Inception: same call signature and output shapes."""

    def __init__(self):
        super().__init__()
        self.layers = StandInLayers()

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = nn.functional.interpolate(img, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


@pytest.fixture(scope="module")
def stand_in_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inception")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(StandInInception()), str(folder / INCEPTION_FILE))
    return folder


def run_fdm(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def digit_like_images(n=24, seed=0, channels=1):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 16, 16, channels), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(2, 10, size=2)
        images[i, r : r + 6, c : c + 4] = rng.integers(150, 256)
    return images


def test_missing_weights_error_names_file_source_and_folder(tmp_path):
    with pytest.raises(FdmError) as err:
        build_extractor("inception", "clean", inception_folder=tmp_path)
    assert (
        INCEPTION_FILE in str(err.value)
        and INCEPTION_URL in str(err.value)
        and str(tmp_path) in str(err.value)
    )
    result = run_fdm(
        "ref-stats", "--data", "x.zip", "--dest", tmp_path / "s.npz", env={"FDM_INCEPTION_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and INCEPTION_URL in result.stderr


def test_corrupt_weights_are_a_clear_error(tmp_path):
    (tmp_path / INCEPTION_FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FdmError, match="fetch-inception"):
        build_extractor("inception", "clean", inception_folder=tmp_path)


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_features_in_both_modes_and_grey_as_rgb(stand_in_dir, mode):
    extractor = build_extractor("inception", mode, inception_folder=stand_in_dir)
    grey = digit_like_images(4)
    features = extractor(grey)
    assert features.shape == (4, 2048) and features.dtype == np.float32
    np.testing.assert_allclose(features, extractor(np.repeat(grey, 3, axis=-1)), atol=1e-6)
    assert extractor.name == "inception" and extractor.mode == mode


def test_modes_resize_differently(stand_in_dir):
    # clean: clean-fid's PIL bicubic outside the net; legacy_tensorflow: the net's own resize.
    images = digit_like_images(4)
    clean = build_extractor("inception", "clean", inception_folder=stand_in_dir)(images)
    legacy = build_extractor("inception", "legacy_tensorflow", inception_folder=stand_in_dir)(images)
    assert not np.allclose(clean, legacy, atol=1e-4)


@pytest.fixture(scope="module")
def clean_stats(tmp_path_factory, stand_in_dir):
    """`fdm ref-stats` (Inception stand-in, clean mode) of 24 images, and a sample file of the same images."""
    from fdm.data.archive import Item, write_archive

    root = tmp_path_factory.mktemp("clean")
    images = digit_like_images(24)
    write_archive(root / "set.zip", (Item(str(i), image) for i, image in enumerate(images)))
    stats = root / "set.inception_clean.stats.npz"
    result = run_fdm(
        "ref-stats", "--data", root / "set.zip", "--mode", "clean", "--dest", stats,
        env={"FDM_INCEPTION_DIR": str(stand_in_dir)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    save_samples(root / "s.npz", Samples(images, np.arange(24), np.full(24, -1), {"sampler": "heun"}))
    return root / "s.npz", stats


def test_fid_refuses_stats_of_another_mode(tmp_path, stand_in_dir, clean_stats):
    samples, stats = clean_stats
    result = run_fdm(
        "fid", "--samples", samples, "--stats", stats, "--mode", "legacy_tensorflow", "--dest", tmp_path / "m.json",
        env={"FDM_INCEPTION_DIR": str(stand_in_dir)},
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "inception/clean, not the requested inception/legacy_tensorflow" in result.stderr
    assert not (tmp_path / "m.json").exists()


@pytest.mark.slow  # scipy's sqrtm of a 2048x2048 covariance product: 20-90 s on a shared 2-core CPU.
def test_fid_with_the_stand_in_end_to_end(tmp_path, stand_in_dir, clean_stats):
    samples, stats = clean_stats
    result = run_fdm(
        "fid", "--samples", samples, "--stats", stats, "--mode", "clean", "--dest", tmp_path / "m.json",
        env={"FDM_INCEPTION_DIR": str(stand_in_dir)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["kid_inception_clean"] < 1
    assert abs(record["fid_inception_clean"]) < 1e-3  # The same images as the reference.
    assert (record["extractor"], record["mode"], record["num_samples"], record["sampler"]) == (
        "inception", "clean", 24, "heun",
    )  # fmt: skip


@contextlib.contextmanager
def serve(folder, handler=None):
    handler = handler or functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_inception_downloads_once_with_a_size_check(tmp_path, stand_in_dir):
    handler = functools.partial(QuietHandler, directory=str(stand_in_dir))
    dest_dir = tmp_path / "cache"
    with serve(stand_in_dir, handler) as base:
        result = run_fdm("fetch-inception", "--dir", dest_dir, "--url", f"{base}/{INCEPTION_FILE}")
        assert result.exit_code == 0, result.output
    assert (dest_dir / INCEPTION_FILE).read_bytes() == (stand_in_dir / INCEPTION_FILE).read_bytes()
    assert [p.name for p in dest_dir.iterdir()] == [INCEPTION_FILE]
    # Present already: no network needed (the server is gone).
    assert (
        fetch_inception(dest_dir, url="http://127.0.0.1:9/none", progress=False) == dest_dir / INCEPTION_FILE
    )


class TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises 1000 bytes and sends 10."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")

    def log_message(self, *args):
        pass


def test_fetch_inception_truncated_download_leaves_nothing(tmp_path):
    with serve(tmp_path, TruncatingHandler) as base, pytest.raises(FdmError):
        fetch_inception(tmp_path / "cache", url=f"{base}/{INCEPTION_FILE}", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


# The paper's two modes from one sampling pass ----------------------------------------------------------------


def test_two_modes_from_one_sampling_pass(tmp_path, stand_in_dir):
    """`fdm evaluate` with clean and legacy_tensorflow statistics samples once and embeds every batch in both
    modes: the features, hence the numbers, of one pass per mode, and the images it keeps."""
    from test_generation import make_snapshot

    from fdm.generation.generate import generate_all
    from fdm.snapshot import load_denoiser

    denoiser, _ = load_denoiser(make_snapshot(tmp_path / "net.safetensors", label_dim=3), "cpu")
    clean, legacy = (
        build_extractor("inception", mode, inception_folder=stand_in_dir) for mode in INCEPTION_MODES
    )
    seeds = list(range(6))
    run = generate_all(denoiser, seeds, "heun", 2, batch_size=4, extractors=[clean, legacy], keep_images=True)
    both, images = run["features"], run["images"]
    for i, extractor in enumerate([clean, legacy]):
        alone = generate_all(
            denoiser, seeds, "heun", 2, batch_size=4, extractors=[extractor], keep_images=False
        )
        np.testing.assert_array_equal(both[i], alone["features"][0])
        assert alone["images"] is None  # No images kept unless asked.
    assert not np.allclose(both[0], both[1], atol=1e-4)  # The modes resize differently.
    assert run["seeds"].tolist() == seeds and images.shape == (6, 8, 8, 1) and set(run["labels"]) <= {0, 1, 2}
    np.testing.assert_array_equal(legacy(images[:4]), both[1][:4])


@pytest.mark.slow  # Two FIDs in 2048 dimensions (scipy's sqrtm): 10-90 s each on a shared 2-core CPU.
def test_evaluate_scores_both_modes_into_one_metrics_file(tmp_path, stand_in_dir):
    from test_generation import make_snapshot

    from fdm.data.archive import Item, write_archive

    images = np.random.default_rng(0).integers(0, 256, size=(24, 8, 8, 1), dtype=np.uint8)
    write_archive(tmp_path / "set.zip", (Item(str(i), image) for i, image in enumerate(images)))
    env = {"FDM_INCEPTION_DIR": str(stand_in_dir)}
    stats = [tmp_path / f"{mode}.npz" for mode in INCEPTION_MODES]
    for mode, path in zip(INCEPTION_MODES, stats, strict=True):
        result = run_fdm("ref-stats", "--data", tmp_path / "set.zip", "--mode", mode, "--dest", path, env=env)
        assert result.exit_code == 0, result.output
    result = run_fdm(
        "evaluate", "--snapshot", make_snapshot(tmp_path / "net.safetensors"), "--steps", 2, "--seeds", "0-7",
        "--stats", stats[0], "--stats", stats[1], "--dest", tmp_path / "metrics.json", env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "metrics.json").read_text())
    names = [f"{kind}_inception_{mode}" for mode in INCEPTION_MODES for kind in ("fid", "kid")]
    assert all(record[name] > 0 for name in names)
    assert record["fid_inception_clean"] != record["fid_inception_legacy_tensorflow"]
    # Several feature spaces: what each was measured with, under scoring.<space>.
    assert {space: entry["mode"] for space, entry in record["scoring"].items()} == {
        "inception_clean": "clean", "inception_legacy_tensorflow": "legacy_tensorflow",
    }  # fmt: skip
    assert record["scoring"]["inception_clean"]["reference"]["count"] == 24 and record["num_samples"] == 8
    assert "extractor" not in record

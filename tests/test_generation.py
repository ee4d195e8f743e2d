"""Seeded sampling (`fdm sample`) and the one-pass `fdm evaluate`, single points and snapshot plans, on a
tiny random network."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from fdm.cli import main
from fdm.data.archive import Item, write_archive
from fdm.diffusion import formulation
from fdm.digest import file_sha256
from fdm.generation.generate import generate_all
from fdm.metrics.featnet import DigitsNet, save_featnet
from fdm.nets import build
from fdm.provenance import source_digest
from fdm.samples import load_samples
from fdm.snapshot import load_denoiser, save_snapshot

NETWORK = dict(
    arch="ddpmpp", img_resolution=8, img_channels=1, model_channels=16, channel_mult=(1,), num_blocks=1,
    attn_resolutions=(), dropout=0.0,
)  # fmt: skip


def run_fdm(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_snapshot(path, label_dim=0, seed=0):
    torch.manual_seed(seed)
    network = dict(NETWORK, label_dim=label_dim)
    save_snapshot(
        path, build(**network).state_dict(), {"network": network, "formulation": formulation("edm").config()}
    )
    return path


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    root = tmp_path_factory.mktemp("snapshots")
    return make_snapshot(root / "uncond.safetensors"), make_snapshot(root / "cond.safetensors", label_dim=3)


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("fdm: error:") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("which", [0, 1], ids=["unconditional", "conditional"])
def test_images_do_not_depend_on_batch_size(snapshots, which):
    denoiser, _ = load_denoiser(snapshots[which])
    seeds = [5, 0, 17, 3, 9]  # Any order: outputs follow it.
    runs = [generate_all(denoiser, seeds, "heun", 3, batch_size=b, s_churn=2.0) for b in (1, 2, 5)]
    for run in runs:
        assert run["seeds"].tolist() == seeds
        np.testing.assert_array_equal(run["images"], runs[0]["images"])
        np.testing.assert_array_equal(run["labels"], runs[0]["labels"])
    images = runs[0]["images"]
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8
    assert len({image.tobytes() for image in images}) == 5  # Different seeds, different images.


@pytest.mark.parametrize("which", [0, 1], ids=["unconditional", "conditional"])
def test_one_euler_step_is_the_denoised_latent_of_the_seed(snapshots, which):
    """The seed protocol from first principles: seed s draws z ~ N(0, I) from its own generator (then the
    class); one Euler step from sigma_max = 80 onto 0 lands on D(80 z; 80); the image is
    clip(127.5 D + 128, 0, 255) truncated to uint8 (EDM's generate.py)."""
    denoiser, _ = load_denoiser(snapshots[which])
    seeds = [5, 0, 17]
    run = generate_all(denoiser, seeds, "euler", 1, batch_size=2)
    for seed, image, label in zip(seeds, run["images"], run["labels"], strict=True):
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn([1, 1, 8, 8], generator=generator)
        onehot = None
        if which:
            onehot = torch.eye(3)[[int(torch.randint(3, size=[], generator=generator))]]
            assert label == onehot.argmax()
        with torch.no_grad():
            denoised = denoiser(80.0 * z.double(), torch.tensor([80.0], dtype=torch.float64), onehot)
        expected = (denoised.double() * 127.5 + 128).clip(0, 255).floor().to(torch.uint8)[0].permute(1, 2, 0)
        np.testing.assert_array_equal(image, expected.numpy())


def test_class_is_drawn_after_the_latent_from_the_seed(snapshots):
    denoiser, _ = load_denoiser(snapshots[1])
    seeds = list(range(12))
    labels = generate_all(denoiser, seeds, "euler", 1, batch_size=4)["labels"]
    expected = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        torch.randn([1, 8, 8], generator=generator)
        expected.append(int(torch.randint(3, size=[], generator=generator)))
    assert labels.tolist() == expected
    assert len(set(expected)) > 1
    unconditional = generate_all(load_denoiser(snapshots[0])[0], seeds, "euler", 1)["labels"]
    assert (unconditional == -1).all()


def test_sample_command_writes_images_seeds_labels_provenance_and_grid(tmp_path, snapshots):
    dest, grid = tmp_path / "s.npz", tmp_path / "grid.png"
    result = run_fdm(
        "sample", "--snapshot", snapshots[1], "--sampler", "heun", "--nfe", 3, "--seeds", "10-14",
        "--batch", 2, "--device", "cpu", "--dest", dest, "--grid", grid,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    samples = load_samples(dest)
    assert samples.images.shape == (5, 8, 8, 1) and samples.seeds.tolist() == [10, 11, 12, 13, 14]
    assert set(samples.labels.tolist()) <= {0, 1, 2}
    assert samples.meta == {
        "sampler": "heun", "num_steps": 2, "nfe": 3, "seeds": "10-14", "snapshot": str(snapshots[1]),
        "snapshot_sha256": file_sha256(snapshots[1]),
    }  # fmt: skip
    with PIL.Image.open(grid) as image:
        assert image.size == (3 * 9 + 1, 2 * 9 + 1)  # 3 columns, 2 rows, 1-pixel padding.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "s.npz"]


def test_sample_command_refuses_bad_steps_and_devices(tmp_path, snapshots):
    common = ("sample", "--snapshot", snapshots[0], "--dest", tmp_path / "s.npz")
    one_line_error(run_fdm(*common, "--sampler", "heun", "--nfe", 4), "NFE 4")
    one_line_error(run_fdm(*common, "--steps", 2, "--nfe", 3), "exactly one of --steps and --nfe")
    if not torch.cuda.is_available():
        one_line_error(run_fdm(*common, "--steps", 2, "--device", "cuda"), "no CUDA")
    assert not (tmp_path / "s.npz").exists()


def test_snapshots_that_are_not_ours_are_refused(tmp_path):
    save_file({"weight": torch.randn(3, 3)}, tmp_path / "random.safetensors")
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump({"ema": [1, 2, 3]}, f)
    for name in ("random.safetensors", "model.pkl"):
        result = run_fdm("sample", "--snapshot", tmp_path / name, "--steps", 2, "--dest", tmp_path / "s.npz")
        one_line_error(result, "not an fdm snapshot")
    assert not (tmp_path / "s.npz").exists()


@pytest.fixture(scope="module")
def digits_reference(tmp_path_factory):
    """A random-weight 8x8 feature network (an extractor for plumbing tests) and its reference statistics."""
    root = tmp_path_factory.mktemp("reference")
    torch.manual_seed(0)
    save_featnet(root / "net.pt", DigitsNet(img_resolution=8).eval(), {"held_out_accuracy": None})
    images = np.random.default_rng(0).integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    write_archive(root / "set.zip", (Item(str(i), image, i % 3) for i, image in enumerate(images)))
    stats = root / "set.stats.npz"
    result = run_fdm(
        "ref-stats", "--data", root / "set.zip", "--extractor", "digitsnet", "--featnet", root / "net.pt",
        "--dest", stats,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root / "net.pt", stats


def test_evaluate_equals_sample_then_fid(tmp_path, snapshots, digits_reference):
    featnet, stats = digits_reference
    sampling = (
        "--snapshot",
        snapshots[1],
        "--sampler",
        "dpmpp_3s",
        "--nfe",
        3,
        "--seeds",
        "0-15",
        "--batch",
        6,
    )
    scoring = ("--extractor", "digitsnet", "--featnet", featnet, "--stats", stats)
    assert run_fdm("sample", *sampling, "--dest", tmp_path / "s.npz").exit_code == 0
    result = run_fdm("fid", "--samples", tmp_path / "s.npz", *scoring, "--dest", tmp_path / "two_pass.json")
    assert result.exit_code == 0, result.output
    result = run_fdm(
        "evaluate", *sampling, *scoring, "--dest", tmp_path / "one_pass.json", "--grid", tmp_path / "g.png"
    )
    assert result.exit_code == 0, result.output
    two_pass = json.loads((tmp_path / "two_pass.json").read_text())
    one_pass = json.loads((tmp_path / "one_pass.json").read_text())
    # Same images; the features differ only by float32 batching (batches of 6 vs 256).
    for name in ("fid_digitsnet", "kid_digitsnet"):  # Metric values sit at the top level.
        assert one_pass[name] == pytest.approx(two_pass[name], rel=1e-6), name
    assert one_pass["fid_digitsnet"] > 0
    for key in (
        "sampler",
        "nfe",
        "num_steps",
        "seeds",
        "snapshot_sha256",
        "extractor",
        "mode",
        "num_samples",
    ):
        assert one_pass[key] == two_pass[key], key
    assert (one_pass["nfe"], one_pass["num_samples"], one_pass["extractor"]) == (3, 16, "digitsnet")
    assert one_pass["reference"]["count"] == 40
    assert (tmp_path / "g.png").is_file()


def test_evaluate_refuses_stats_of_another_network(tmp_path, snapshots, digits_reference):
    featnet, stats = digits_reference
    torch.manual_seed(1)
    save_featnet(tmp_path / "other.pt", DigitsNet(img_resolution=8).eval(), {})
    result = run_fdm(
        "evaluate", "--snapshot", snapshots[0], "--steps", 2, "--extractor", "digitsnet",
        "--featnet", tmp_path / "other.pt", "--stats", stats, "--dest", tmp_path / "m.json",
    )  # fmt: skip
    one_line_error(result, "different digitsnet network file")
    assert not (tmp_path / "m.json").exists()


def test_kept_samples_reproduce_the_evaluation(tmp_path, snapshots, digits_reference):
    """eval.keep_samples: `fdm evaluate --samples` keeps the images it scored, and `fdm fid` on them gives
    the evaluation's metrics (up to float32 rounding: the two feed the network differently laid out arrays)."""
    featnet, stats = digits_reference
    sampling = ("--snapshot", snapshots[1], "--sampler", "heun", "--nfe", 3, "--seeds", "0-15", "--batch", 6)
    result = run_fdm(
        "evaluate", *sampling, "--featnet", featnet, "--stats", stats, "--dest", tmp_path / "evaluate.json",
        "--samples", tmp_path / "kept.npz",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run_fdm(
        "fid", "--samples", tmp_path / "kept.npz", "--extractor", "digitsnet", "--featnet", featnet,
        "--stats", stats, "--dest", tmp_path / "fid.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "evaluate.json").read_text())
    again = json.loads((tmp_path / "fid.json").read_text())
    assert evaluated["fid_digitsnet"] > 0
    for name in ("fid_digitsnet", "kid_digitsnet"):
        assert evaluated[name] == pytest.approx(again[name], rel=1e-6), name
    for key in ("sampler", "nfe", "num_steps", "seeds", "snapshot_sha256",
                "extractor", "mode", "extractor_sha256", "reference", "num_samples"):  # fmt: skip
        assert evaluated[key] == again[key], key
    assert "scoring" not in evaluated  # One feature space: its provenance at the top level, as before.
    kept = load_samples(tmp_path / "kept.npz")
    assert kept.seeds.tolist() == list(range(16)) and kept.meta["seeds"] == "0-15"
    assert run_fdm("sample", *sampling, "--dest", tmp_path / "sampled.npz").exit_code == 0
    np.testing.assert_array_equal(kept.images, load_samples(tmp_path / "sampled.npz").images)
    np.testing.assert_array_equal(kept.labels, load_samples(tmp_path / "sampled.npz").labels)


def test_evaluate_refuses_two_stats_of_one_space_and_stats_outside_the_asked_space(
    tmp_path, snapshots, digits_reference
):
    featnet, stats = digits_reference
    common = ("evaluate", "--snapshot", snapshots[0], "--steps", 2, "--featnet", featnet)
    result = run_fdm(*common, "--stats", stats, "--stats", stats, "--dest", tmp_path / "m.json")
    one_line_error(result, "are both digitsnet statistics")
    result = run_fdm(*common, "--extractor", "inception", "--stats", stats, "--dest", tmp_path / "m.json")
    one_line_error(result, "digitsnet/native, not the requested inception/native")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.slow  # Starts two processes under torchrun (gloo on the CPU).
def test_torchrun_two_processes_give_the_same_sample_file(tmp_path, snapshots):
    fdm_script = Path(sys.executable).parent / "fdm"
    common = (
        "sample",
        "--snapshot",
        snapshots[1],
        "--steps",
        2,
        "--seeds",
        "0-6",
        "--batch",
        2,
        "--device",
        "cpu",
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        fdm_script,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [*map(str, command), *map(str, common), "--dest", tmp_path / "two.npz"], check=True, env=env
    )
    assert run_fdm(*common, "--dest", tmp_path / "one.npz").exit_code == 0
    one, two = load_samples(tmp_path / "one.npz"), load_samples(tmp_path / "two.npz")
    assert two.seeds.tolist() == list(range(7))
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.labels, two.labels)


def write_plan(path: Path, points, stats, networks, seeds="0-7", keep_samples=True) -> Path:
    plan = {
        "dataset": "set", "kimg": 5, "points": [{"sampler": s, "nfe": n} for s, n in points], "seeds": seeds,
        "batch": 3, "stats": [str(stats)], "networks": networks, "keep_samples": keep_samples,
    }  # fmt: skip
    path.write_text(json.dumps(plan))
    return path


def run_folder(tmp_path: Path, snapshot: Path, featnet: Path) -> tuple[Path, Path, dict]:
    """A run folder holding ``snapshot`` as its 5-kimg snapshot, and the digits network's folder."""
    (tmp_path / "networks" / "digitsnet").mkdir(parents=True)
    (tmp_path / "networks" / "digitsnet" / "digitsnet.pt").write_bytes(featnet.read_bytes())
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    target = run / "snapshots" / "000005.safetensors"
    target.write_bytes(snapshot.read_bytes())
    return run, target, {"digitsnet": str(tmp_path / "networks" / "digitsnet")}


def test_evaluate_a_plan_computes_only_the_points_not_yet_done(tmp_path, snapshots, digits_reference):
    """`fdm evaluate --config`: every point of one snapshot in one process, each exactly as the single-point
    form writes it; a rerun keeps the points already done, so a killed job or an added point costs only
    what is missing."""
    featnet, stats = digits_reference
    run, snapshot, networks = run_folder(tmp_path, snapshots[1], featnet)
    plan = write_plan(tmp_path / "plan.json", [("heun", 3), ("dpmpp_3s", 3)], stats, networks)
    record = run / "eval" / "5" / "evaluated.json"

    def evaluate(*extra):
        result = run_fdm("evaluate", "--config", plan, "--run", run, "--record", record, *extra)
        assert result.exit_code == 0, result.output
        return result.output

    assert "evaluated heun-3, dpmpp_3s-3" in evaluate()
    points = {name: run / "eval" / "5" / name for name in ("heun-3", "dpmpp_3s-3")}
    for name, folder in points.items():
        assert sorted(p.name for p in folder.iterdir()) == [
            "grid.png",
            "metrics.json",
            "samples.npz",
            "timing.json",
        ]
        sampler, nfe = name.split("-")
        single = tmp_path / f"{name}.json"
        result = run_fdm(
            "evaluate", "--snapshot", snapshot, "--sampler", sampler, "--nfe", nfe, "--seeds", "0-7",
            "--batch", 3, "--featnet", featnet, "--stats", stats, "--dest", single,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert (folder / "metrics.json").read_bytes() == single.read_bytes()
        timing = json.loads((folder / "timing.json").read_text())
        assert 0 < timing["ended"] - timing["started"] < 600
    summary = json.loads(record.read_text())
    assert sorted(summary["points"]) == ["dpmpp_3s-3", "heun-3"]
    assert summary["points"]["heun-3"]["metrics_sha256"] == file_sha256(points["heun-3"] / "metrics.json")
    assert summary["snapshot_sha256"] == file_sha256(snapshot)
    done = {name: (folder / "metrics.json").stat().st_mtime_ns for name, folder in points.items()}

    assert "evaluated nothing; 2 point(s) already done" in evaluate()
    write_plan(plan, [("heun", 3), ("dpmpp_3s", 3), ("euler", 2)], stats, networks)
    assert "evaluated euler-2; 2 point(s) already done" in evaluate()
    (points["heun-3"] / "metrics.json").unlink()  # as if killed while scoring this point
    heun_bytes = (tmp_path / "heun-3.json").read_bytes()
    assert "evaluated heun-3; 2 point(s) already done" in evaluate()
    assert (points["heun-3"] / "metrics.json").read_bytes() == heun_bytes
    assert (points["dpmpp_3s-3"] / "metrics.json").stat().st_mtime_ns == done["dpmpp_3s-3"]
    write_plan(plan, [("heun", 3)], stats, networks, seeds="0-5")  # other seeds: nothing is kept
    assert "evaluated heun-3" in evaluate() and json.loads(record.read_text())["points"].keys() == {"heun-3"}


def test_evaluate_recomputes_points_of_other_code_and_refuses_a_snapshot_its_training_did_not_record(
    tmp_path, snapshots, digits_reference
):
    """A point whose timing.json names other evaluation code is computed again (the pipeline reruns the job
    after a code change); a snapshot whose bytes differ from its training record's digest is refused, in one
    line naming both digests, before anything is written."""
    featnet, stats = digits_reference
    run, snapshot, networks = run_folder(tmp_path, snapshots[1], featnet)
    trained = {"snapshots": {"000005.safetensors": file_sha256(snapshot)}}
    (run / "trained.json").write_text(json.dumps(trained))
    plan = write_plan(tmp_path / "plan.json", [("heun", 3)], stats, networks, keep_samples=False)
    record = run / "eval" / "5" / "evaluated.json"
    args = ("evaluate", "--config", plan, "--run", run, "--record", record)
    assert "evaluated heun-3" in run_fdm(*args).output
    timing = run / "eval" / "5" / "heun-3" / "timing.json"
    assert json.loads(timing.read_text())["code"]["source_sha256"] == source_digest("evaluate")
    assert json.loads(record.read_text())["code"]["source_sha256"] == source_digest("evaluate")
    assert "evaluated nothing" in run_fdm(*args).output
    other = json.loads(timing.read_text())
    other["code"]["source_sha256"] = "0" * 64  # as if an earlier version of the sampler had made it
    timing.write_text(json.dumps(other))
    assert "evaluated heun-3" in run_fdm(*args).output

    data = bytearray(snapshot.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    snapshot.write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in (run / "eval").rglob("*") if p.is_file()}
    result = run_fdm(*args)
    one_line_error(
        result, f"{snapshot} has SHA-256 {file_sha256(snapshot)}, but {run / 'trained.json'} recorded"
    )
    assert trained["snapshots"]["000005.safetensors"] in result.output
    assert {p: p.read_bytes() for p in (run / "eval").rglob("*") if p.is_file()} == before


def test_evaluate_refuses_a_bad_plan_or_mixed_forms(tmp_path, snapshots, digits_reference):
    featnet, stats = digits_reference
    (tmp_path / "plan.json").write_text("{not json")
    one_line_error(
        run_fdm("evaluate", "--config", tmp_path / "plan.json", "--run", tmp_path),
        "is not an evaluation plan",
    )
    one_line_error(
        run_fdm("evaluate", "--config", tmp_path / "none.json", "--run", tmp_path), "does not exist"
    )
    one_line_error(
        run_fdm(
            "evaluate", "--config", tmp_path / "plan.json", "--run", tmp_path, "--snapshot", snapshots[0]
        ),
        "with --config give --run",
    )
    one_line_error(run_fdm("evaluate", "--run", tmp_path, "--snapshot", snapshots[0]), "go with --config")

"""`fdm sample` and `fdm evaluate`: thin commands over ``fdm.generation``."""

from __future__ import annotations

import click

from fdm.errors import FdmError
from fdm.names import DIGITSNET_MODE, EXTRACTORS, INCEPTION_MODES, SAMPLERS


def _steps_and_nfe(sampler: str, steps: int | None, nfe_value: int | None) -> int:
    """The NFE of exactly one of --steps and --nfe."""
    from fdm.names import nfe, steps_for_nfe

    if (steps is None) == (nfe_value is None):
        raise FdmError("give exactly one of --steps and --nfe")
    try:
        return nfe(sampler, steps) if steps is not None else nfe(sampler, steps_for_nfe(sampler, nfe_value))
    except ValueError as err:
        raise FdmError(str(err)) from None


def _point_options(func):
    """The options of one sampling run, shared by `fdm sample` and the single-point `fdm evaluate`."""
    options = [
        click.option("--snapshot", type=click.Path(dir_okay=False), help="Snapshot (.safetensors)."),
        click.option("--sampler", type=click.Choice(SAMPLERS), default="heun", show_default=True),
        click.option("--steps", type=click.IntRange(min=1), help="Number of steps (or give --nfe)."),
        click.option("--nfe", "nfe_value", type=click.IntRange(min=1), help="Denoiser evaluations per image."),
        click.option("--seeds", default="0-63", show_default=True, help="Seeds, e.g. 0-49999 or 1,5,10-19."),
        click.option("--batch", "batch_size", type=click.IntRange(min=1), help="Images per batch [default: 64]."),
        click.option("--device", help="cpu, cuda, cuda:1 ... [default: cuda if available, else cpu]"),
        click.option("--grid", type=click.Path(dir_okay=False), help="Also write a grid PNG of the first 64 images."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


@click.command("sample")
@_point_options
@click.option("--dest", required=True, type=click.Path(dir_okay=False), help="Sample file to write (.npz).")
def sample_command(snapshot, sampler, steps, nfe_value, seeds, batch_size, device, grid, dest):
    """Generate images of a snapshot, one per seed, into one uint8 .npz file.

    \b
    fdm sample --snapshot runs/digits/edm/s0/snapshots/000020.safetensors \\
        --sampler heun --nfe 35 --seeds 0-255 --dest samples.npz --grid grid.png
    torchrun --standalone --nproc-per-node 4 $(which fdm) sample ...   # several GPUs
    """
    from fdm.digest import file_sha256
    from fdm.distributed import processes
    from fdm.generation.evaluation import provenance
    from fdm.generation.generate import generate_all
    from fdm.samples import Samples, parse_seeds, save_grid, save_samples
    from fdm.snapshot import load_denoiser

    if snapshot is None:
        raise FdmError("give --snapshot")
    nfe_value, seed_list = _steps_and_nfe(sampler, steps, nfe_value), parse_seeds(seeds)
    with processes(device) as world:
        denoiser, _ = load_denoiser(snapshot, world.device)
        about = provenance(snapshot, file_sha256(snapshot), sampler, nfe_value, seed_list)
        result = generate_all(
            denoiser, seed_list, sampler, about["num_steps"], world, batch_size or 64, progress=True
        )
    if result is None:
        return
    save_samples(dest, Samples(result["images"], result["seeds"], result["labels"], about))
    if grid:
        save_grid(grid, result["images"])
    click.echo(f"wrote {len(result['images'])} images to {dest}")


@click.command("evaluate")
@click.option(
    "--config",
    "plan_path",
    type=click.Path(dir_okay=False),
    help="Evaluation plan (fdm eval-config): every point of one snapshot, with --run.",
)
@click.option("--run", "run_dir", type=click.Path(file_okay=False), help="With --config: the run folder.")
@click.option(
    "--record",
    type=click.Path(dir_okay=False),
    help="With --config: JSON record of every point's metrics, written when all are done.",
)
@click.option(
    "--gpus",
    type=click.IntRange(min=0),
    help="With --config: GPUs of the job; 0 the CPU, more than 1 starts it under torchrun, one process each.",
)
@_point_options
@click.option(
    "--stats",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Reference statistics (.npz); repeat it to score several feature spaces from one sampling pass.",
)
@click.option(
    "--extractor",
    type=click.Choice(EXTRACTORS),
    help="Only accept statistics of this extractor [default: the statistics name their own].",
)
@click.option(
    "--mode",
    type=click.Choice((*INCEPTION_MODES, DIGITSNET_MODE)),
    help="Only accept statistics of this mode [default: the statistics name their own].",
)
@click.option("--featnet", type=click.Path(dir_okay=False), help="Digits feature network (fdm featnet).")
@click.option(
    "--inception-dir",
    type=click.Path(file_okay=False),
    help="Folder of inception-2015-12-05.pt [default: $FDM_INCEPTION_DIR or ~/.cache/fdm].",
)
@click.option("--dest", type=click.Path(dir_okay=False), help="metrics.json to write (one point).")
@click.option(
    "--samples",
    "samples_path",
    type=click.Path(dir_okay=False),
    help="Also keep the images as a sample file (.npz) that `fdm fid` can score again (one point).",
)
def evaluate_command(
    plan_path, run_dir, record, gpus, snapshot, sampler, steps, nfe_value, seeds, batch_size, device, grid, stats,
    extractor, mode, featnet, inception_dir, dest, samples_path,
):  # fmt: skip
    """Sample once and score in every feature space of the --stats files: FID and KID into metrics.json.

    Each statistics file names its extractor and mode; one extractor per file embeds every batch, so the
    paper's two Inception modes cost one sampling pass. No images are kept unless asked. With --config
    (the pipeline's form) it evaluates a snapshot at every point of the plan, keeping the points already
    done; with --gpus above 1 it starts itself under torchrun.

    \b
    fdm evaluate --config runs/digits/eval/20.json --run runs/digits/edm/s0 \\
        --record runs/digits/edm/s0/eval/20/evaluated.json
    fdm evaluate --snapshot runs/digits/edm/s0/snapshots/000020.safetensors --sampler dpmpp_3s --nfe 10 \\
        --seeds 0-1999 --featnet data/networks/digitsnet/digitsnet.pt \\
        --stats data/stats/digits/digitsnet/native.npz --dest metrics.json --grid grid.png
    fdm evaluate --snapshot runs/cifar10/edm/s0/snapshots/200000.safetensors --nfe 35 --seeds 0-49999 \\
        --inception-dir data/networks/inception --stats data/stats/cifar10/inception/clean.npz \\
        --stats data/stats/cifar10/inception/legacy_tensorflow.npz --dest metrics.json
    """
    if plan_path is not None:
        point_options = (
            snapshot,
            steps,
            nfe_value,
            grid,
            stats,
            extractor,
            mode,
            featnet,
            inception_dir,
            dest,
        )
        if run_dir is None or any(point_options) or samples_path:
            raise FdmError("with --config give --run (and optionally --record, --batch, --device) only")
        _evaluate_plan(plan_path, run_dir, record, gpus, batch_size, device)
    elif run_dir or record or gpus is not None:
        raise FdmError("--run, --record and --gpus go with --config (for one point, run it under torchrun)")
    else:
        _evaluate_point(
            snapshot, sampler, steps, nfe_value, seeds, batch_size, device, grid, stats, extractor, mode,
            featnet, inception_dir, dest, samples_path,
        )  # fmt: skip


def _evaluate_plan(plan_path, run_dir, record, gpus, batch_size, device) -> None:
    import dataclasses

    from fdm.distributed import device_for, processes, relaunch
    from fdm.generation.evaluation import evaluate_snapshot, read_plan

    plan = read_plan(plan_path)
    relaunch(gpus)
    if batch_size is not None:
        plan = dataclasses.replace(plan, batch=batch_size)
    with processes(device_for(gpus, device)) as world:
        done = evaluate_snapshot(plan, run_dir, record, world)
    if world.is_main:
        kept = len(plan.points) - len(done)
        click.echo(
            f"evaluated {', '.join(done) or 'nothing'}" + (f"; {kept} point(s) already done" if kept else "")
        )


def _evaluate_point(
    snapshot, sampler, steps, nfe_value, seeds, batch_size, device, grid, stats, extractor, mode, featnet,
    inception_dir, dest, samples_path,
) -> None:  # fmt: skip
    from fdm.digest import file_sha256
    from fdm.distributed import processes
    from fdm.generation.evaluation import PointFiles, evaluate_point, open_spaces, provenance
    from fdm.metrics.features import build_extractor
    from fdm.samples import parse_seeds
    from fdm.snapshot import load_denoiser

    if snapshot is None or not stats or dest is None:
        raise FdmError("give --snapshot, --stats and --dest (or --config with --run)")
    nfe_value, seed_list = _steps_and_nfe(sampler, steps, nfe_value), parse_seeds(seeds)

    def make_extractor(ref, path):
        if (extractor or ref.extractor, mode or ref.mode) != (ref.extractor, ref.mode):
            raise FdmError(
                f"reference statistics {path} were computed with {ref.extractor}/{ref.mode}, "
                f"not the requested {extractor or ref.extractor}/{mode or ref.mode}"
            )
        return build_extractor(ref.extractor, ref.mode, world.device, featnet, inception_dir)

    with processes(device) as world:
        denoiser, _ = load_denoiser(snapshot, world.device)
        shape = (denoiser.img_resolution, denoiser.img_resolution, denoiser.img_channels)
        spaces = open_spaces(stats, make_extractor, shape)
        about = provenance(snapshot, file_sha256(snapshot), sampler, nfe_value, seed_list)
        files = PointFiles(metrics=dest, grid=grid, samples=samples_path)
        values = evaluate_point(denoiser, spaces, seed_list, about, files, world, batch_size or 64)
    if values is not None:
        click.echo(" ".join(f"{name}={value:.6g}" for name, value in values.items()))

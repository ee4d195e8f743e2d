"""One call on a GPU: training and sampling throughput at the paper's scale, and the confirm design longer.

Prepared before any GPU is at hand, so that a lent machine's minutes go to measuring. Within a budget of
wall time (``--budget-s``, 450 s by default, so that the call with its start-up stays under 8 minutes),
in this order, each part measured side by side in this one process:

1. **Training throughput on the paper's CIFAR-10 DDPM++** (55.7M parameters, 32x32x3, 10 classes,
   dropout 0.13, augmentation 0.12; FDM-EDM with its weight-cap warm-up, arXiv 2306.06991): images/s of
   full optimizer steps, ours (``fdm.training``'s step: per-sample draws, augmentation, forward, backward,
   Adam, EMA) in fp32 and bf16 autocast, and, from the authors' checkout given with ``--official``, their
   network, loss and augmentation classes (``FDM_EDMPrecond``, ``EDMLoss``, ``AugmentPipe``, imported from
   the checkout, never copied) in fp32 and with their ``use_fp16``, stepped with Adam as their training
   loop steps them (their loop itself needs CUDA and a process group; their EMA is not timed, ours is).
   Their fp16 applies on CUDA only: on a CPU their classes run fp32 and the row says so. Both sides run
   with TF32 off and cuDNN autotuning on (the authors' defaults), on random images.
2. **Sampling throughput**: Heun at NFE 35 (EDM's sampler, ``fdm.generation.generate``, float64
   integration, per-seed generators) on the same network with random weights, at a large batch.
3. **The confirm design, longer** (config/confirm.yaml's EDM and FDM-EDM, training seed 0) if at least
   ``--confirm-min-s`` of the budget is left: both trained at once, each in its own process on the
   device, towards ``--confirm-kimg`` (1 Mimg by default) until the budget ends; the row gives the kimg
   reached and images/s, and the snapshots stay in ``--workdir`` for ``fdm evaluate``.

It prints one Markdown table (and writes its rows to ``--json``). ``--tiny`` runs the same code with an
8-channel network at 8x8, a few steps, small batches and a one-step confirm run: what tests/test_gpu_check.py runs
on the CPU, so that the script is known to work before a GPU call is spent on it.

    python bench/gpu_check.py --official PATH_TO_FDM_CHECKOUT            # on the GPU machine
    python bench/gpu_check.py --tiny --device cpu --official PATH         # a CPU rehearsal
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

CIFAR = dict(resolution=32, channels=3, classes=10, model_channels=128, channel_mult=(2, 2, 2), num_blocks=4,
             attn_resolutions=(16,), dropout=0.13, augment_p=0.12)  # fmt: skip
TINY = dict(resolution=8, channels=3, classes=10, model_channels=8, channel_mult=(1, 2), num_blocks=1,
            attn_resolutions=(4,), dropout=0.13, augment_p=0.12)  # fmt: skip
FDM_WARMUP = 200  # optimizer steps: the authors' CIFAR-10 FDM-EDM setting
FDM_MULTIPLIER = 2.0


@dataclasses.dataclass
class Row:
    part: str
    code: str
    precision: str
    batch: int
    images_per_s: float | None
    seconds: float
    peak_gb: float | None
    note: str = ""


class Clock:
    """The call's wall-time budget."""

    def __init__(self, budget_s: float):
        self.start, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def timed(step, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds of ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - start


def set_numerics() -> None:
    """TF32 off, cuDNN autotuning on, nondeterministic kernels: the authors' training defaults."""
    from fdm.training.numerics import configure_numerics

    configure_numerics(deterministic=False, tf32=False)
    torch.backends.cudnn.benchmark = True


# 1. Training --------------------------------------------------------------------------------------------------


def random_dataset(path: Path, net: dict, count: int = 256) -> Path:
    from fdm.data.archive import Item, write_archive

    rng = np.random.default_rng(0)
    shape = (net["resolution"], net["resolution"], net["channels"])
    items = (
        Item(f"{i}", rng.integers(0, 256, shape, dtype=np.uint8), i % net["classes"]) for i in range(count)
    )
    write_archive(path, items, total=count, desc="random data")
    return path


def ours_training(net: dict, precision: str, batch: int, device: torch.device, workdir: Path, args) -> Row:
    from fdm.distributed import World
    from fdm.training import TrainConfig
    from fdm.training.loop import TrainingRun

    data = workdir / "random.zip"
    if not data.exists():
        random_dataset(data, net)
    settings = {k: v for k, v in net.items() if k not in ("resolution", "channels", "classes")}
    cfg = TrainConfig(
        dataset=str(data), outdir=str(workdir / f"ours-{precision}"), formulation="fdm_edm",
        formulation_options={"warmup": FDM_WARMUP, "multiplier": FDM_MULTIPLIER}, batch=batch, lr=1e-3,
        lr_rampup_kimg=0.0, device=device.type, precision=precision, deterministic=False, progress=False,
        cond=True, **settings,
    )  # fmt: skip
    set_numerics()
    reset_peak(device)
    run = TrainingRun(cfg, World(rank=0, size=1, device=device))
    seconds = timed(run.optimizer_step, device, args.warmup, args.steps)
    return Row("training", "ours", precision, batch, batch * args.steps / seconds, seconds, peak_gb(device))


class Authors:
    """The authors' network, loss and augmentation classes, imported from their checkout."""

    def __init__(self, checkout: Path):
        sys.path.insert(0, str(checkout))
        import training.augment
        import training.loss
        import training.networks

        self.networks, self.loss, self.augment = training.networks, training.loss, training.augment


def their_training(authors: Authors, net: dict, fp16: bool, batch: int, device: torch.device, args) -> Row:
    """Their FDM_EDMPrecond (DDPM++ as their train.py configures it), EDMLoss with the warm-up, AugmentPipe
    as their train.py builds it, and Adam, stepped as their training loop steps one batch."""
    set_numerics()
    torch.manual_seed(0)
    precond = authors.networks.FDM_EDMPrecond(
        img_resolution=net["resolution"], img_channels=net["channels"], label_dim=net["classes"], use_fp16=fp16,
        fdm_multiplier=FDM_MULTIPLIER, model_type="SongUNet", embedding_type="positional", encoder_type="standard",
        decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=net["model_channels"],
        channel_mult=list(net["channel_mult"]), num_blocks=net["num_blocks"],
        attn_resolutions=list(net["attn_resolutions"]), dropout=net["dropout"], augment_dim=9,
    ).to(device).train()  # fmt: skip
    loss_fn = authors.loss.EDMLoss(warmup_ite=FDM_WARMUP)
    pipe = authors.augment.AugmentPipe(
        p=net["augment_p"], xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1
    )
    optimizer = torch.optim.Adam(precond.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    generator = torch.Generator().manual_seed(0)
    shape = (batch, net["channels"], net["resolution"], net["resolution"])
    images = (torch.rand(shape, generator=generator) * 2 - 1).to(device)
    labels = (
        torch.nn.functional.one_hot(torch.arange(batch) % net["classes"], net["classes"]).float().to(device)
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net=precond, images=images, labels=labels, augment_pipe=pipe)
        loss.sum().mul(1 / batch).backward()
        for param in precond.parameters():
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
        optimizer.step()

    reset_peak(device)
    seconds = timed(step, device, args.warmup, args.steps)
    note = "" if not fp16 or device.type == "cuda" else "their use_fp16 applies on CUDA only: ran fp32"
    return Row("training", "authors'", "fp16" if fp16 else "fp32", batch, batch * args.steps / seconds, seconds,
               peak_gb(device), note)  # fmt: skip


# 2. Sampling --------------------------------------------------------------------------------------------------


def sampling(net: dict, batch: int, device: torch.device, nfe: int = 35) -> Row:
    from fdm.diffusion import Denoiser, formulation
    from fdm.generation.generate import generate
    from fdm.nets import build
    from fdm.sampling import steps_for_nfe

    set_numerics()
    torch.manual_seed(0)
    model = build(arch="ddpmpp", img_resolution=net["resolution"], img_channels=net["channels"],
                  label_dim=net["classes"], augment_dim=9, model_channels=net["model_channels"],
                  channel_mult=net["channel_mult"], num_blocks=net["num_blocks"],
                  attn_resolutions=net["attn_resolutions"], dropout=0.0)  # fmt: skip
    denoiser = Denoiser(model, formulation("fdm_edm", multiplier=FDM_MULTIPLIER)).to(device).eval()
    steps = steps_for_nfe("heun", nfe)

    def one_batch(first: int):
        for _ in generate(denoiser, list(range(first, first + batch)), "heun", steps, batch_size=batch):
            pass

    reset_peak(device)
    one_batch(0)  # warm-up (cuDNN autotuning)
    synchronize(device)
    start = time.perf_counter()
    one_batch(batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    return Row("sampling, Heun NFE 35", "ours", "fp32", batch, batch / seconds, seconds, peak_gb(device))


# 3. The confirm design ----------------------------------------------------------------------------------------


def _train_one(values: dict) -> None:
    from fdm.training import TrainConfig, train

    train(TrainConfig.from_dict(values))


def confirm_design(kimg: float, device: torch.device, workdir: Path, clock: Clock) -> list[Row]:
    """config/confirm.yaml's EDM and FDM-EDM (seed 0) trained at once towards ``kimg``, until the budget ends."""
    from fdm.config import load_params
    from fdm.data.prepare import prepare_digits

    params = load_params(ROOT / "config" / "confirm.yaml")
    data = workdir / "digits.zip"
    if not data.exists():
        prepare_digits(data)
    snapshots = sorted({k for k in (kimg / 4, kimg / 2, 3 * kimg / 4, kimg) if k >= 0.128})
    context = multiprocessing.get_context("spawn")  # CUDA in children needs spawn
    started, processes = time.perf_counter(), {}
    for variant in params.variants:
        values = {
            **params.train_config("digits", variant, 0), "dataset": str(data), "outdir": str(workdir / variant),
            "duration_kimg": kimg, "snapshot_kimg": snapshots, "tick_kimg": max(kimg / 20, 0.128),
            "state_every_kimg": kimg, "device": device.type, "deterministic": False, "progress": False,
        }  # fmt: skip
        processes[variant] = context.Process(target=_train_one, args=(values,))
        processes[variant].start()
    for process in processes.values():
        process.join(timeout=max(clock.left(), 0.0))
    rows = []
    for variant, process in processes.items():
        finished = process.exitcode == 0
        if process.is_alive():
            process.terminate()
            process.join()
        seconds = time.perf_counter() - started
        reached = _kimg_reached(workdir / variant) if not finished else kimg
        note = f"{reached:g} of {kimg:g} kimg" + ("" if finished else " (stopped at the budget's end)")
        if process.exitcode not in (0, None) and not finished and reached == 0:
            note += f"; exit code {process.exitcode}"
        rows.append(Row(f"confirm design: {variant}", "ours", "fp32", params.train.defaults["batch"],
                        reached * 1000 / seconds if reached else None, seconds, None, note))  # fmt: skip
    return rows


def _kimg_reached(run_dir: Path) -> float:
    """The last kimg train.jsonl logged (0 without a log)."""
    log = run_dir / "train.jsonl"
    if not log.exists():
        return 0.0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return float(max((line.get("kimg", 0.0) for line in lines), default=0.0))


# The call -----------------------------------------------------------------------------------------------------


def table(rows: list[Row], device: str) -> str:
    head = ["part", "code", "precision", "batch", "images/s", "seconds", "peak GPU GiB", "note"]
    lines = [f"device: {device}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        speed = "" if r.images_per_s is None else f"{r.images_per_s:,.1f}"
        memory = "" if r.peak_gb is None else f"{r.peak_gb:.1f}"
        lines.append(
            f"| {r.part} | {r.code} | {r.precision} | {r.batch} | {speed} | {r.seconds:.1f} | {memory} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official",
        type=Path,
        help="the authors' FDM checkout (sail-sg/FDM); without it their rows are skipped",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument(
        "--tiny", action="store_true", help="an 8-channel network, few steps: the CPU rehearsal"
    )
    parser.add_argument("--budget-s", type=float, default=450.0)
    parser.add_argument("--batch", type=int, help="training batch (default 128; tiny 4)")
    parser.add_argument("--steps", type=int, help="timed training steps (default 10; tiny 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sample-batch", type=int, help="Heun batch (default 1024; tiny 2)")
    parser.add_argument(
        "--confirm-kimg", type=float, help="confirm design's kimg per model (default 1000; tiny 0.128)"
    )
    parser.add_argument("--confirm-min-s", type=float, default=60.0, help="skip part 3 with less budget left")
    parser.add_argument(
        "--workdir", type=Path, help="where data, runs and snapshots go (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    net = TINY if args.tiny else CIFAR
    args.batch = args.batch or (4 if args.tiny else 128)
    args.steps = args.steps or (2 if args.tiny else 10)
    args.sample_batch = args.sample_batch or (2 if args.tiny else 1024)
    args.confirm_kimg = args.confirm_kimg or (0.128 if args.tiny else 1000.0)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    clock = Clock(args.budget_s)
    authors = Authors(args.official) if args.official else None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = [ours_training(net, p, args.batch, device, workdir, args) for p in ("fp32", "bf16")]
        if authors is not None:
            rows += [their_training(authors, net, fp16, args.batch, device, args) for fp16 in (False, True)]
        rows.append(sampling(net, args.sample_batch, device))
        if clock.left() >= args.confirm_min_s:
            rows += confirm_design(args.confirm_kimg, device, workdir, clock)
        else:
            rows.append(
                Row(
                    "confirm design",
                    "ours",
                    "fp32",
                    0,
                    None,
                    0.0,
                    None,
                    f"skipped: {clock.left():.0f} s left",
                )
            )
    text = table(rows, name)
    print(text, flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"device": name, "rows": [dataclasses.asdict(r) for r in rows]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

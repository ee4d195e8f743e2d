"""The training loop: EDM's recipe (Karras et al. 2022, sec. 5 and app. F) for every formulation.

One optimizer step on a total batch of B images, split into micro-batches of ``batch_per_device``
over the processes and accumulation rounds:

1. the global sample index of each image is k = images_seen + position in the batch; everything
   random about it comes from one generator seeded with ``derive_seed(seed, "sample", k)``: the
   noise level sigma (the formulation's training distribution), the noise n ~ N(0, I) and the
   augmentation. Its data index is position k mod N of a permutation of the dataset drawn for epoch
   k // N from ``derive_seed(seed, "order", epoch)``. Dropout masks come from the global generator,
   reseeded per micro-batch from ``derive_seed(seed, "dropout", first k)``;
2. the per-sample loss is lambda(sigma) ||D(y + sigma n; sigma) - y||^2 summed over pixels (EDM
   eq. 2/8), y the (augmented) image; the optimised loss is its mean over the total batch; for FDM
   lambda is capped by ``formulation.loss_weight(sigma, step)`` where step counts optimizer steps
   (the reference code counts loss calls: the same without accumulation, see docs/training.md);
3. gradients of all micro-batches are summed over processes (one all_reduce), NaN/Inf in them
   replaced by 0/+-1e5, and Adam (0.9, 0.999, 1e-8) steps with the learning rate ramped linearly
   from 0 over ``lr_rampup_kimg``; the EMA follows with its half-life in images (``ema.py``).

Because the randomness depends only on (seed, k), the number of processes and of accumulation
rounds changes only the order of float additions, and resuming from ``state.pt`` (which restores
images_seen and step) continues the exact same streams: no random-generator state is carried.
Dropout is the exception: its masks depend on how samples are grouped into micro-batches, so runs
with dropout > 0 (or label dropout) agree across process counts only in distribution.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fdm import paths
from fdm.atomic import atomic_write_text
from fdm.digest import file_sha256
from fdm.distributed import World, all_reduce_sum, device_for, join, leave
from fdm.errors import FdmError
from fdm.faults import fault_point
from fdm.provenance import code_version
from fdm.seeding import derive_seed
from fdm.training.augment import AUGMENT_DIM, augment
from fdm.training.config import TrainConfig
from fdm.training.ema import ema_beta, update_ema
from fdm.training.numerics import configure_numerics
from fdm.training.run_folder import (
    LOG_FILE,
    SNAPSHOT_DIR,
    STATE_FILE,
    discard_stale_run,
    keep,
    passed_milestones_missing,
    restore_kept,
    snapshot_path,
    snapshot_record,
)
from fdm.training.state import STATE_FORMAT, load_state, save_state
from fdm.training.stream import SampleStream

NOT_METRICS = ("kimg", "started", "time")  # train.jsonl fields that are not training curves

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def learning_rate(cfg: TrainConfig, images_seen: int) -> float:
    """The base rate ramped up linearly from 0 over ``lr_rampup_kimg``, then constant (EDM)."""
    return cfg.lr * min(images_seen / max(cfg.lr_rampup_kimg * 1000, 1e-8), 1.0)


def per_sample_loss(denoiser, formulation, y, sigma, noise, class_labels, augment_labels, step: int):
    """lambda(sigma) ||D(y + sigma n; sigma) - y||^2 summed over pixels, one value per sample [n] (float32)."""
    sigma = sigma.reshape(-1, 1, 1, 1)
    denoised = denoiser(y + sigma * noise, sigma, class_labels, augment_labels)
    weight = formulation.loss_weight(sigma, step=step)
    return (weight * (denoised - y).square()).sum(dim=(1, 2, 3))


def network_config(cfg: TrainConfig, dataset) -> dict:
    """Keyword arguments of ``fdm.nets.build`` for this run (stored in snapshots as "network")."""
    return {
        "arch": cfg.arch,
        "img_resolution": int(dataset.resolution),
        "img_channels": int(dataset.channels),
        "label_dim": int(dataset.label_dim) if cfg.cond else 0,
        "augment_dim": AUGMENT_DIM if cfg.augment_p > 0 else 0,
        "model_channels": cfg.model_channels,
        "channel_mult": list(cfg.channel_mult),
        "num_blocks": cfg.num_blocks,
        "attn_resolutions": list(cfg.attn_resolutions),
        "dropout": cfg.dropout,
        "label_dropout": cfg.label_dropout,
        **cfg.network_options,
    }


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process on ``device`` so far: CUDA allocations, or the resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux.


def _state_dict_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()}


class TrainingRun:
    """Everything one training run holds; ``run()`` is the loop, ``optimizer_step()`` one step of it (bench/train.py)."""

    def __init__(self, cfg: TrainConfig, world: World):
        from fdm.data.reader import ImageDataset
        from fdm.diffusion import Denoiser, formulation
        from fdm.nets import build

        self.cfg, self.world, self.device = cfg, world, world.device
        self.run_dir = Path(cfg.outdir)
        per_device = cfg.batch_per_device or cfg.batch // world.size
        if cfg.batch % (per_device * world.size):
            raise FdmError(
                f"batch {cfg.batch} is not a multiple of batch_per_device {per_device} x {world.size} process(es)"
            )
        self.per_device, self.rounds = per_device, cfg.batch // (per_device * world.size)

        try:  # first: a profile's formulation options are checked here
            self.formulation = formulation(cfg.formulation, **cfg.formulation_options)
        except (TypeError, ValueError) as err:
            raise FdmError(f"formulation: {err}") from None
        self.dataset = ImageDataset(cfg.dataset, xflip=cfg.dataset_xflip, use_labels=cfg.cond)
        if cfg.cond and self.dataset.label_dim == 0:
            raise FdmError(f"class conditioning asked for, but {cfg.dataset} has no labels")
        self.net_config = network_config(cfg, self.dataset)
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        try:
            net = build(**self.net_config)
        except (TypeError, ValueError) as err:
            raise FdmError(f"network: {err}") from None
        self.net = net.to(self.device).train()
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.denoiser = Denoiser(self.net, self.formulation)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        shape = (self.dataset.channels, self.dataset.resolution, self.dataset.resolution)
        self.stream = SampleStream(cfg.seed, len(self.dataset), self.formulation, shape, cfg.augment_p > 0)
        self.images_seen, self.step, self.log_bytes = 0, 0, 0
        self.code = [code_version("train")]  # every code version that trained this run, oldest first

    # ------------------------------------------------------------------ state and outputs

    def resume(self) -> bool:
        """Load ``state.pt`` if the run folder has one; returns whether it did."""
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return False
        state = load_state(path)
        differ = self.cfg.resume_mismatch(state["config"])
        if differ:
            raise FdmError(
                f"{self.run_dir} holds a run with different settings ({', '.join(differ)}); "
                "use another --outdir or the same settings"
            )
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.images_seen, self.step, self.log_bytes = (
            int(state["images_seen"]),
            int(state["step"]),
            state["log_bytes"],
        )
        earlier = list(state.get("code", []))
        if earlier and earlier[-1].get("source_sha256") != self.code[0]["source_sha256"]:
            print(
                f"{self.run_dir}: warning: resuming a run that other training code started; its record "
                "will list both versions",
                file=sys.stderr,
            )
            self.code = earlier + self.code
        elif earlier:
            self.code = earlier
        missing = passed_milestones_missing(self.cfg, self.images_seen)
        if missing:
            raise FdmError(
                f"{self.run_dir}: no snapshot at {', '.join(f'{m:g}' for m in missing)} kimg, which the saved "
                f"state ({self.images_seen / 1000:g} kimg) is past; train from scratch (--restart-on-change)"
            )
        return True

    def save_state(self) -> None:
        if not self.world.is_main:
            return
        save_state(
            self.run_dir / STATE_FILE,
            {
                "format": STATE_FORMAT,
                "model": _state_dict_cpu(self.net),
                "ema": _state_dict_cpu(self.ema),
                "optimizer": self.optimizer.state_dict(),
                "images_seen": self.images_seen,
                "step": self.step,
                "config": self.cfg.to_dict(),
                "log_bytes": self.log_bytes,
                "code": self.code,
            },
        )

    def save_snapshot(self, kimg: float) -> None:
        from fdm.snapshot import save_snapshot

        if not self.world.is_main:
            return
        training = self.cfg.model_settings()
        config = {
            "network": self.net_config,
            "formulation": self.formulation.config(),
            "dataset": {
                "path": self.cfg.dataset,
                "num_images": int(self.dataset.num_images),
                "resolution": int(self.dataset.resolution),
                "channels": int(self.dataset.channels),
                "label_dim": int(self.dataset.label_dim),
            },
            "kimg": kimg,
            "images_seen": self.images_seen,
            "step": self.step,
            "training": training,
        }
        save_snapshot(snapshot_path(self.run_dir, kimg), _state_dict_cpu(self.ema), config)
        keep(snapshot_path(self.run_dir, kimg))

    def open_log(self):
        """``train.jsonl`` for appending, cut back to its length when the loaded state was written."""
        path = self.run_dir / LOG_FILE
        if path.exists() and path.stat().st_size > self.log_bytes:
            with open(path, "r+b") as f:
                f.truncate(self.log_bytes)
        return open(path, "ab")

    # ------------------------------------------------------------------ one optimizer step

    def optimizer_step(self) -> float:
        """Train on the next total batch; returns the summed per-sample loss over it (all processes)."""
        cfg, device = self.cfg, self.device
        lr = learning_rate(cfg, self.images_seen)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        per_round = self.per_device * self.world.size
        for r in range(self.rounds):
            first = self.images_seen + r * per_round + self.world.rank * self.per_device
            ks = list(range(first, first + self.per_device))
            indices, sigma, noise, augment_draws = self.stream.draw(ks)
            images, labels = self.dataset.get(indices)
            y = images.to(device)
            augment_labels = None
            if augment_draws is not None:
                y, augment_labels = augment(y, cfg.augment_p, *augment_draws)
            class_labels = labels.to(device) if cfg.cond else None
            torch.manual_seed(derive_seed(cfg.seed, "dropout", first))
            with _autocast(device, cfg.precision):
                losses = per_sample_loss(
                    self.denoiser,
                    self.formulation,
                    y,
                    sigma.to(device),
                    noise.to(device),
                    class_labels,
                    augment_labels,
                    self.step,
                )
            (losses.sum() * (cfg.loss_scaling / cfg.batch)).backward()
            loss_sum += losses.detach().sum().double()

        # A parameter without a gradient (unused in this batch) gets zeros, whatever the process count.
        params = list(self.net.parameters())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if self.world.size > 1:
            flat = torch.cat([g.flatten() for g in grads] + [loss_sum.float().reshape(1)])
            all_reduce_sum(flat, self.world)
            loss_total = float(flat[-1])
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        else:
            loss_total = float(loss_sum)
        if not math.isfinite(loss_total):
            raise FdmError(
                f"training stopped: the loss is {loss_total} at {self.images_seen / 1000:g} kimg "
                f"(optimizer step {self.step}); the last good snapshot and state in {self.run_dir} are kept"
            )
        for p, g in zip(params, grads, strict=True):
            if cfg.loss_scaling != 1:
                g.div_(cfg.loss_scaling)
            torch.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5, out=g)
            p.grad = g
        self.optimizer.step()
        beta = ema_beta(cfg.batch, self.images_seen, cfg.ema_halflife_kimg, cfg.ema_rampup_ratio)
        update_ema(self.ema, self.net, beta)
        self.images_seen += cfg.batch
        self.step += 1
        return loss_total

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        from fdm.tracking import Tracker, model_params, model_run_name, source_tags

        cfg, main = self.cfg, self.world.is_main
        resumed = self.resume()
        duration = round(cfg.duration_kimg * 1000)
        if self.images_seen >= duration:
            if main:
                print(
                    f"{self.run_dir}: training already complete ({self.images_seen / 1000:g} kimg)",
                    file=sys.stderr,
                )
            return
        if main and resumed:
            print(
                f"{self.run_dir}: resuming at {self.images_seen / 1000:g} kimg from {STATE_FILE}",
                file=sys.stderr,
            )
        if main:
            (self.run_dir / SNAPSHOT_DIR).mkdir(parents=True, exist_ok=True)
        milestones = [m for m in cfg.milestones_kimg() if m * 1000 > self.images_seen]
        tick_nimg, state_nimg = cfg.tick_kimg * 1000, cfg.state_every_kimg * 1000
        next_tick = (math.floor(self.images_seen / tick_nimg) + 1) * tick_nimg
        next_state = (math.floor(self.images_seen / state_nimg) + 1) * state_nimg

        tracker = Tracker(
            cfg.tracking and main,
            self.run_dir,
            cfg.experiment,
            run_name=model_run_name(self.run_dir.parent.name, self.run_dir.name),
            params=model_params(cfg.model_settings()),
            tags={
                "stage": "train", "formulation": cfg.formulation, "dataset": Path(cfg.dataset).stem,
                **source_tags(self.code[-1], "train"),
            },
        )  # fmt: skip
        log = self.open_log() if main else None
        bar = tqdm(
            total=duration,
            initial=self.images_seen,
            unit="img",
            unit_scale=True,
            dynamic_ncols=True,
            disable=not (cfg.progress and main),
            desc="resumed" if resumed else "training",
        )
        tick_loss, tick_images, tick_start = 0.0, 0, time.perf_counter()
        started = time.time()  # wall clock, in train.jsonl: a run's span for tracking
        status = "FAILED"
        try:
            while self.images_seen < duration:
                loss = self.optimizer_step()
                tick_loss, tick_images = tick_loss + loss, tick_images + cfg.batch
                bar.update(cfg.batch)
                done = self.images_seen >= duration
                crossed = [m for m in milestones if m * 1000 <= self.images_seen]
                for kimg in crossed:
                    self.save_snapshot(kimg)
                    milestones.remove(kimg)
                    if main:
                        shot = snapshot_path(self.run_dir, kimg)
                        tracker.log_params(model_params({}, {str(shot): file_sha256(shot)}))
                if self.images_seen >= next_tick or done:
                    elapsed = time.perf_counter() - tick_start
                    record = {
                        "kimg": self.images_seen / 1000,
                        "step": self.step,
                        "loss": tick_loss / tick_images,
                        "images_per_s": tick_images / max(elapsed, 1e-9),
                        "lr": learning_rate(cfg, self.images_seen - cfg.batch),
                        "peak_memory_gb": peak_memory_gb(self.device),
                        "started": started,
                        "time": time.time(),
                    }
                    bar.set_postfix(kimg=f"{record['kimg']:g}", loss=f"{record['loss']:.4g}")
                    if log is not None:
                        log.write((json.dumps(record) + "\n").encode())
                        log.flush()
                        self.log_bytes = log.tell()
                    tracker.log_metrics(
                        {k: v for k, v in record.items() if k not in NOT_METRICS}, step=self.images_seen
                    )
                    next_tick = (math.floor(self.images_seen / tick_nimg) + 1) * tick_nimg
                    tick_loss, tick_images, tick_start = 0.0, 0, time.perf_counter()
                if self.images_seen >= next_state or crossed or done:
                    fault_point("train:before_state", self.run_dir)
                    self.save_state()
                    fault_point("train:after_state", self.run_dir)
                    next_state = (math.floor(self.images_seen / state_nimg) + 1) * state_nimg
            status = "FINISHED"
        finally:
            bar.close()
            if log is not None:
                log.close()
            tracker.close(status)


def train(cfg: TrainConfig, restart_on_change: bool = False, record: str | os.PathLike | None = None) -> Path:
    """Train (or resume) the run ``cfg`` describes; returns the run folder.

    Writes ``<outdir>/snapshots/<kimg>.safetensors`` at each milestone, ``<outdir>/state.pt`` for
    resume and ``<outdir>/train.jsonl`` with one line per tick. Under ``torchrun`` every process
    calls this; only rank 0 writes files. ``restart_on_change`` starts over where the saved run has
    other settings (instead of refusing); ``record`` names a JSON file written once training is
    complete (``snapshot_record``): workflows declare it as the job's output, so that a killed job's
    rerun resumes from state.pt instead of the workflow tool deleting the run folder.
    """
    is_main = os.environ.get("RANK", "0") == "0"
    if is_main:  # the snapshots a workflow deleted as a killed job's outputs, back from kept/
        restored = restore_kept(cfg.outdir)
        if restored:
            print(
                f"{cfg.outdir}: restored {len(restored)} snapshot(s) from {paths.KEPT_DIR}/", file=sys.stderr
            )
    if restart_on_change and is_main:  # before join: the other ranks wait there until rank 0 is done
        differ = discard_stale_run(cfg)
        if differ:
            print(
                f"{cfg.outdir}: settings changed ({', '.join(differ)}); training from scratch",
                file=sys.stderr,
            )
    configure_numerics(cfg.deterministic, cfg.tf32)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    world = join(device_for(cfg.gpus, cfg.device))
    try:
        run = TrainingRun(cfg, world)
        run.run()
    finally:
        leave(world)
    if record is not None and is_main:
        atomic_write_text(record, json.dumps(snapshot_record(cfg, run.code), indent=2, sort_keys=True) + "\n")
    return Path(cfg.outdir)

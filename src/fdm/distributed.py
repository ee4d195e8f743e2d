"""Processes and devices, for training and sampling alike: one process, or many under ``torchrun``.

``torchrun --nproc-per-node=N`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``join`` then joins the process
group (NCCL on CUDA, gloo on the CPU) and picks this process's device. Without those variables a job
runs in one process and needs no process group. A job that the profile gives several GPUs starts
itself under torchrun (``relaunch``), so neither workflow tool needs a launch string.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist

from fdm.errors import FdmError


@dataclasses.dataclass(frozen=True)
class World:
    """Where this process sits: ``rank`` of ``size`` processes, computing on ``device``."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(choice: str | None = None, local_rank: int = 0) -> torch.device:
    """``auto``/None (CUDA when present, else the CPU), ``cpu``, ``cuda`` (GPU ``local_rank``) or ``cuda:N``.

    Asking for CUDA on a machine without it is a clear error, never a silent fall back to the CPU.
    """
    choice = choice or "auto"
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if choice not in ("auto", "cuda") and not choice.startswith("cuda:"):
        raise FdmError(f"unknown device {choice!r}; expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise FdmError(f"--device {choice} was asked for, but PyTorch sees no CUDA GPU (use cpu or auto)")
    device = torch.device(choice) if ":" in choice else torch.device("cuda", local_rank)
    if device.index >= torch.cuda.device_count():
        raise FdmError(f"{device} does not exist: only {torch.cuda.device_count()} GPU(s) visible")
    return device


def device_for(gpus: int | None, choice: str | None) -> str | None:
    """The device choice of a job given ``gpus`` GPUs: a pipeline job given none runs on the CPU even on a
    machine with GPUs (unless a device was named); None (not said) leaves ``choice`` as it is."""
    return "cpu" if gpus == 0 and choice in (None, "auto") else choice


def join(device_choice: str | None = None) -> World:
    """Join the ``torchrun`` process group if there is one; pick this process's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_choice, int(os.environ.get("LOCAL_RANK", "0")))
    if size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return World(rank=rank, size=size, device=device)


def leave(world: World) -> None:
    """Leave the process group joined by ``join``."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def processes(device_choice: str | None = None) -> Iterator[World]:
    """``join`` for the duration of a block, then ``leave``."""
    world = join(device_choice)
    try:
        yield world
    finally:
        leave(world)


def relaunch(processes_wanted: int | None, argv: Sequence[str] | None = None) -> None:
    """Start this command again under ``torchrun`` with ``processes_wanted`` processes, unless it already
    runs under torchrun or one process is wanted; does not return when it relaunches."""
    if processes_wanted is None or processes_wanted <= 1 or "WORLD_SIZE" in os.environ:
        return
    argv = list(sys.argv if argv is None else argv)
    script = shutil.which(argv[0]) or argv[0]
    print(f"fdm: starting {processes_wanted} processes under torchrun", file=sys.stderr, flush=True)
    sys.stdout.flush()
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes_wanted}",
    ]
    os.execv(sys.executable, [*torchrun, script, *argv[1:]])


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; a no-op in a single process."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather(obj, world: World) -> list | None:
    """Every rank's ``obj`` as a list on rank 0, None elsewhere; ``[obj]`` in a single process."""
    if world.size == 1:
        return [obj]
    gathered = [None] * world.size if world.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def shard(items: Sequence, world: World) -> list:
    """This rank's share of ``items``: ``items[rank::size]``; every rank must get at least one."""
    if len(items) < world.size:
        raise FdmError(f"{len(items)} items cannot be shared among {world.size} processes")
    return list(items)[world.rank :: world.size]

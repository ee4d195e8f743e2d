"""Processes, devices and numerics settings for training: one process, or many under ``torchrun``.

``torchrun --nproc_per_node=N`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``init_world`` then joins the
process group (NCCL on CUDA, gloo on the CPU). Without those variables training runs in one
process and needs no process group. Gradients are summed across processes with one
``all_reduce`` per optimizer step (see ``fdm.training.loop``), not through DistributedDataParallel,
so the arithmetic is the same whatever the process count, up to the order of the float additions.
"""

from __future__ import annotations

import dataclasses
import os

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


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``; CUDA without a GPU is a clear error."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise FdmError("--device cuda was asked for, but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    if choice in ("cuda", "auto") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise FdmError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible")
        return torch.device("cuda", local_rank)
    if choice == "auto":
        return torch.device("cpu")
    raise FdmError(f"unknown device {choice!r}; expected auto, cpu or cuda")


def init_world(device_choice: str) -> World:
    """Join the ``torchrun`` process group if there is one; pick this process's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return World(rank=rank, size=size, device=device)


def close_world(world: World) -> None:
    """Leave the process group joined by ``init_world``."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; a no-op in a single process."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def configure_numerics(deterministic: bool, tf32: bool) -> None:
    """Deterministic kernels (unless opted out) and exact fp32 matmuls/convolutions unless ``tf32``.

    Process-wide settings. ``CUBLAS_WORKSPACE_CONFIG`` is set for older CUDA/PyTorch pairs that need
    it for deterministic cuBLAS (ecosystem notes, section 6), before CUDA starts; it is harmless elsewhere.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # PyTorch >= 2.9
        precision = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32

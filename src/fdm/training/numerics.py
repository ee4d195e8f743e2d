"""Numerics of training: deterministic kernels unless opted out, and exact fp32 unless TF32 is allowed."""

from __future__ import annotations

import os

import torch


def configure_numerics(deterministic: bool, tf32: bool) -> None:
    """Deterministic kernels (unless opted out) and exact fp32 matmuls/convolutions unless ``tf32``.

    Process-wide settings. ``CUBLAS_WORKSPACE_CONFIG`` is set for older CUDA/PyTorch pairs that need
    it for deterministic cuBLAS (https://docs.pytorch.org/docs/stable/notes/randomness.html), before CUDA
    starts; it is harmless elsewhere. Deterministic mode would also fill every new tensor with NaN (to
    expose reads of memory no kernel wrote); the kernels write all of it, so that filling changes no
    result and is switched off: it cost about a tenth of a training step on the CPU.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # PyTorch >= 2.9
        precision = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32

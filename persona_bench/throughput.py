"""Throughput references: the device's dense matmul rate, and model FLOPs per token.

Scoring speed is reported against what the hardware allows: a forward pass costs
about 2 x (non-embedding parameters) FLOPs per token, so tokens/s x that, divided by
the measured matmul rate, is the share of the machine the scorer uses.
"""

from __future__ import annotations

import time

import torch

from .models import TORCH_DTYPES


def matmul_tflops(dtype: str = "bf16", device: str = "cpu", n: int = 2048, seconds: float = 1.0) -> float:
    """Dense n x n matmul rate in TFLOP/s, best of repeated timings for about `seconds`."""
    dev = torch.device(device)
    dt = TORCH_DTYPES[dtype]
    a = torch.randn(n, n, device=dev).to(dt)
    b = torch.randn(n, n, device=dev).to(dt)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.matmul(a, b)  # warm-up
    sync()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == float("inf"):
        t = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def utilisation(tokens_per_s: float, non_embedding_params: float, tflops: float) -> float:
    """Achieved model FLOP rate (2 x params per token) over the matmul rate."""
    return tokens_per_s * 2 * non_embedding_params / (tflops * 1e12) if tflops > 0 else 0.0

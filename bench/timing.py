"""Timing shared by the benchmark scripts: wall-clock seconds of device work."""

from __future__ import annotations

import time
from typing import Callable, Iterable

import torch


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[..., object], args: Iterable[tuple], warmup: int,
                     device: torch.device) -> float:
    """Mean seconds of `fn(*a)` over `args` after the first `warmup`, which are untimed."""
    args = list(args)
    for a in args[:warmup]:
        fn(*a)
    sync(device)
    start = time.perf_counter()
    for a in args[warmup:]:
        fn(*a)
    sync(device)
    return (time.perf_counter() - start) / (len(args) - warmup)

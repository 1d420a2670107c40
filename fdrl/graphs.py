"""A call captured once as a CUDA graph and replayed after: the trainer's flow on CUDA
(`fdrl.flow.CapturedFlow`) and `precision: auto`'s timing of it (`fdrl.precision.fastest`)."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def capture(fn: Callable[[], T], device: torch.device, warmup: int = 3
            ) -> tuple[torch.cuda.CUDAGraph, T]:
    """`fn` captured as a CUDA graph on `device`, after `warmup` runs on a side stream (which
    set up the libraries' workspaces and kernels, as capturing requires), and what the captured
    call returned: tensors whose memory each `graph.replay()` writes again.

    Errors are thread-local: another thread (a data loader pinning memory, NCCL's watchdog) may
    touch CUDA during the capture."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = fn()
    return graph, out

"""A call captured once as a CUDA graph and replayed after: the trainer's flow on CUDA
(`fdrl.flow.CapturedFlow`) and `precision: auto`'s timing of it (`fdrl.precision.fastest`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


@contextmanager
def cudnn_autotuned(enabled: bool) -> Iterator[None]:
    """cuDNN's autotuning (`torch.backends.cudnn.benchmark`) set to `enabled` for the context,
    and set back after: with it, the first call of a convolution of a new shape times cuDNN's
    algorithms and every later call runs the fastest."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def capture(fn: Callable[[], T], device: torch.device, warmup: int = 3, autotune: bool = True
            ) -> tuple[torch.cuda.CUDAGraph, T]:
    """`fn` captured as a CUDA graph on `device`, after `warmup` runs on a side stream (which
    set up the libraries' workspaces and kernels, as capturing requires), and what the captured
    call returned: tensors whose memory each `graph.replay()` writes again.

    With `autotune`, cuDNN times its algorithms for each convolution during the warm-up, and the
    graph holds the fastest: the shapes never change between replays, so the timing is paid
    once. The process's own autotuning setting is left as it was.

    Errors are thread-local: another thread (a data loader pinning memory, NCCL's watchdog) may
    touch CUDA during the capture."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with cudnn_autotuned(autotune):
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = fn()
    return graph, out

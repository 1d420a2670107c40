"""Arithmetic precision and memory layout of the network's forward passes (docs/design.md#precision).

The flow's K forward passes and input gradients are the whole cost of FDRL, at training and at
sampling. `Precision` says how they run:

- `fp32`: everything in float32.
- `bf16`: the network's forward (and so its backward) under `torch.autocast` with bfloat16, on
  CUDA and on CPU alike. Only the network runs in bf16: its output is cast back to float32
  before f' (Eq. 9) or the Bregman loss (Eq. 11) reads it, the input gradient arrives in the
  dtype of x_k, which stays float32, and the Eq. 9 update, the weights, the optimizer, the EMA
  and the FID statistics stay float32 (or float64).
- `channels_last`: 4-D weights and inputs in NHWC memory order, the layout that bf16
  convolution kernels (tensor cores, oneDNN's AMX and AVX-512 paths) run fastest in. It changes
  no value beyond the order of floating-point sums.

Whether bf16 pays depends on the device: GPUs and CPUs with AMX or AVX-512 bf16 units run it
faster than float32 (an order of magnitude for a ResNet with AMX); other CPUs emulate it, some 9x
slower. Machines of one kind can differ in this, so the setting `auto` assumes nothing: `fastest`
times one flow step of the run's own network in each precision, on the device at hand (on CUDA
replayed as a CUDA graph, as the trainer's flow runs there), and takes bf16 where it is clearly
the faster. `bench/` measures the same in detail.
"""

from __future__ import annotations

import contextlib
import copy
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from fdrl.errors import FdrlError
from fdrl.graphs import capture
from fdrl.names import PRECISIONS

AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """`dtype` of the network's arithmetic (one of PRECISIONS) and its memory layout."""

    dtype: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in PRECISIONS:
            raise FdrlError(f"precision {self.dtype!r} is not one of {', '.join(PRECISIONS)}")

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """The context the network's forward runs in."""
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[self.dtype])

    def layout(self, x: Tensor) -> Tensor:
        """A batch of images in the memory order the network expects (differentiable)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, net: nn.Module) -> nn.Module:
        """`net` with its 4-D weights in the chosen memory order (in place; returned)."""
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def forward(self, net: nn.Module, x: Tensor) -> Tensor:
        """`net(x)` in this precision and layout, as float32 (float64 stays float64: tests and
        finite differences run the math in float64)."""
        with self.autocast(x.device):
            out = net(self.layout(x))
        return out if out.dtype == torch.float64 else out.float()

    def describe(self) -> dict:
        """What results record of how they were computed."""
        return {"precision": self.dtype, "channels_last": self.channels_last}


FP32 = Precision()


def _flow_step(precision: Precision, net: nn.Module, x: Tensor, graph: bool) -> Callable[[], None]:
    """One flow step's work as a call: the network's forward and its input gradient, run
    eagerly, or (`graph`, on CUDA) replayed as a captured CUDA graph, as the trainer's flow runs
    there (`fdrl.flow.CapturedFlow`): eager, kernel launches can hide what bf16 saves."""
    z = x.detach().requires_grad_(True)

    def work() -> None:
        torch.autograd.grad(precision.forward(net, z).sum(), z)

    if graph and x.device.type == "cuda":
        return capture(work, x.device)[0].replay
    return work


def _seconds(call: Callable[[], None], device: torch.device) -> float:
    """One timing of `call`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def fastest(net: nn.Module, shape: tuple[int, ...], device: torch.device, channels_last: bool,
            graph: bool = False, rounds: int = 30, budget: float = 2.0, margin: float = 1.1
            ) -> tuple[Precision, dict[str, float]]:
    """The precision to run `net` in on `device`, for batches of `shape`, and the seconds of one
    flow step in each (the best of its timings); with `graph`, on CUDA, of its replay as a CUDA
    graph, the way the trainer runs its flow there (eager on an H200, the CIFAR-10 ResNet's bf16
    step was slower than fp32's; replayed, 1.7x faster).

    The precisions are timed in turns, so that a busy spell of the machine slows both alike,
    for `rounds` rounds or until `budget` seconds have passed (three rounds at least) after a
    round that warms up kernels and caches. bf16 is taken only when it is more than `margin`
    times as fast as fp32, the reference arithmetic: a near tie goes to fp32, so two runs on one
    machine do not part ways over timing noise. Times a copy of `net` (a forward in train mode
    updates spectral norm's vectors) on inputs of a private generator: the run's own state and
    random streams are left as they were.
    """
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device)
    precisions = {dtype: Precision(dtype, channels_last) for dtype in PRECISIONS}
    steps = {dtype: _flow_step(p, p.prepare(copy.deepcopy(net)), x, graph)
             for dtype, p in precisions.items()}
    for step in steps.values():  # the warm-up round
        _seconds(step, device)
    seconds = dict.fromkeys(precisions, float("inf"))
    start = time.perf_counter()
    for r in range(rounds):
        for dtype, step in steps.items():
            seconds[dtype] = min(seconds[dtype], _seconds(step, device))
        if r >= 2 and time.perf_counter() - start > budget:
            break
    chosen = "bf16" if seconds["fp32"] > margin * seconds["bf16"] else "fp32"
    return precisions[chosen], seconds

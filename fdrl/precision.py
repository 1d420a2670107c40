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
times one flow step of the run's own network in each precision, on the device at hand, and takes
the faster. `bench/` measures the same in detail.
"""

from __future__ import annotations

import contextlib
import copy
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fdrl.errors import FdrlError
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
        """`net(x)` in this precision and layout, as float32."""
        with self.autocast(x.device):
            return net(self.layout(x)).float()

    def describe(self) -> dict:
        """What results record of how they were computed."""
        return {"precision": self.dtype, "channels_last": self.channels_last}


FP32 = Precision()


def _seconds_per_flow_step(precision: Precision, net: nn.Module, x: Tensor, repeats: int) -> float:
    """The best of `repeats` timings of one flow step's work: forward and input gradient."""
    net = precision.prepare(net)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up kernels and caches
        z = x.detach().requires_grad_(True)
        start = time.perf_counter()
        torch.autograd.grad(precision.forward(net, z).sum(), z)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        best = min(best, time.perf_counter() - start)
    return best


def fastest(net: nn.Module, shape: tuple[int, ...], device: torch.device, channels_last: bool,
            repeats: int = 3) -> tuple[Precision, dict[str, float]]:
    """The precision whose flow step is fastest for `net` on a batch of `shape` on `device`,
    and each one's seconds. Times a copy of `net` (a forward in train mode updates spectral
    norm's vectors) on inputs of a private generator: the run's own state and random streams
    are left as they were."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device)
    seconds = {dtype: _seconds_per_flow_step(Precision(dtype, channels_last), copy.deepcopy(net), x,
                                             repeats) for dtype in PRECISIONS}
    return Precision(min(seconds, key=seconds.get), channels_last), seconds


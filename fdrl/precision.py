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

Whether bf16 pays depends on the device: GPUs and CPUs with AMX or AVX-512 bf16 units run it an
order of magnitude faster than float32; other CPUs emulate it, many times slower. `bench/`
measures both on the device at hand.
"""

from __future__ import annotations

import contextlib
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

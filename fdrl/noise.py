"""Sources of the Gaussian and uniform draws that priors and the flow consume.

`PerSampleNoise` keeps one generator per sample, seeded by that sample's own seed, so that
sample i is a function of seed i alone: the same whatever the batch it is drawn in, the chunk
it lands in, or the number of processes (the idea of EDM's `StackedRandomGenerator`).
`GeneratorNoise` draws a whole batch from one generator, which is cheaper where per-sample
reproducibility is not needed.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import torch
from torch import Tensor


class Noise(Protocol):
    """Draws `n` samples of a given shape: standard normal (`randn`) or U[0, 1) (`rand`)."""

    def randn(self, n: int, shape: tuple[int, ...]) -> Tensor: ...

    def rand(self, n: int, shape: tuple[int, ...]) -> Tensor: ...


class GeneratorNoise:
    """All draws from one `torch.Generator`; seeded, so a whole batch is reproducible."""

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def randn(self, n: int, shape: tuple[int, ...]) -> Tensor:
        return torch.randn((n, *shape), generator=self.generator, device=self.device)

    def rand(self, n: int, shape: tuple[int, ...]) -> Tensor:
        return torch.rand((n, *shape), generator=self.generator, device=self.device)


class PerSampleNoise:
    """One generator per sample: row i of every draw comes from the generator of seed i."""

    def __init__(self, seeds: Iterable[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]

    def _check(self, n: int) -> None:
        if n != len(self.generators):
            raise ValueError(f"asked for {n} samples from noise seeded for {len(self.generators)}")

    def randn(self, n: int, shape: tuple[int, ...]) -> Tensor:
        self._check(n)
        return torch.stack(
            [torch.randn(shape, generator=g, device=self.device) for g in self.generators]
        )

    def rand(self, n: int, shape: tuple[int, ...]) -> Tensor:
        self._check(n)
        return torch.stack(
            [torch.rand(shape, generator=g, device=self.device) for g in self.generators]
        )

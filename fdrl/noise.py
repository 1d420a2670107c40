"""Sources of the Gaussian and uniform draws that priors and the flow consume.

`PerSampleNoise` keeps one generator per sample, seeded by that sample's own seed, so that
sample i is a function of seed i alone: the same whatever the batch it is drawn in, the chunk
it lands in, or the number of processes (the idea of EDM's `StackedRandomGenerator`).
`GeneratorNoise` draws a whole batch from one generator, which is cheaper where per-sample
reproducibility is not needed. `SlicedNoise` is the trainer's: every draw is made for the whole
global batch from one generator seeded by (seed, step), and each rank keeps its own rows, so
global sample i gets the same numbers whatever the number of processes.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np
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


def key_seed(*key: int) -> int:
    """A 63-bit seed from a tuple of integers (seed, stream, step, ...), well mixed."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SlicedNoise:
    """Draws for a global batch of `global_n` rows from one generator; returns rows `rows` only.

    Every rank builds it with the same seed and makes the same sequence of calls, so the numbers
    of global row i do not depend on the world size; each call still costs a global-batch draw,
    which is small next to a network evaluation. `n` must be the length of this rank's slice.
    """

    def __init__(self, seed: int, global_n: int, rows: slice, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.global_n, self.rows = global_n, rows
        self.local_n = len(range(global_n)[rows])

    def _check(self, n: int) -> None:
        if n != self.local_n:
            raise ValueError(f"asked for {n} samples from noise sliced to {self.local_n} rows")

    def randn(self, n: int, shape: tuple[int, ...]) -> Tensor:
        self._check(n)
        draw = torch.randn((self.global_n, *shape), generator=self.generator, device=self.device)
        return draw[self.rows]

    def rand(self, n: int, shape: tuple[int, ...]) -> Tensor:
        self._check(n)
        draw = torch.rand((self.global_n, *shape), generator=self.generator, device=self.device)
        return draw[self.rows]


class InterpolationNoise:
    """Noise of the spherical path between the noise of two seeds (Fig. 9).

    Row j of every draw is cos(a_j) z_a + sin(a_j) z_b, where z_a and z_b are the draws of seed
    a and seed b (each from its own generator, as `PerSampleNoise`) and a_j = pi/2 t_j. For
    independent standard normals this is again exactly standard normal, so every row is a valid
    sample; t = 0 and t = 1 reproduce seed a and seed b exactly. Uniform draws are interpolated
    the same way through the normal quantile function (exactly U[0, 1) again).
    """

    def __init__(self, seed_a: int, seed_b: int, t: Tensor, device: torch.device | str = "cpu"):
        self.ends = PerSampleNoise([seed_a, seed_b], device)
        angle = (torch.pi / 2) * t.to(device=device, dtype=torch.float32)
        self.cos, self.sin = torch.cos(angle), torch.sin(angle)

    def _mix(self, z: Tensor) -> Tensor:
        shape = (-1,) + (1,) * (z.dim() - 1)
        return self.cos.view(shape) * z[:1] + self.sin.view(shape) * z[1:]

    def _check(self, n: int) -> None:
        if n != len(self.cos):
            raise ValueError(f"asked for {n} samples from noise interpolated at {len(self.cos)} points")

    def randn(self, n: int, shape: tuple[int, ...]) -> Tensor:
        self._check(n)
        return self._mix(self.ends.randn(2, shape))

    def rand(self, n: int, shape: tuple[int, ...]) -> Tensor:
        self._check(n)
        normal = torch.distributions.Normal(0.0, 1.0)
        u = self.ends.rand(2, shape).clamp(1e-7, 1 - 1e-7)
        return normal.cdf(self._mix(normal.icdf(u))).clamp(0.0, 1.0 - 2**-24)

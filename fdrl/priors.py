"""Priors q' that the flow starts from (Sec. 3.2, Eq. 8, and the ablation's uniform prior).

- `GaussianPrior`: the data-dependent prior N(mu_D, Sigma_D + 1e-4 I) over flattened images in
  [-1, 1] (Eq. 8), sampled through its Cholesky factor and clamped to [-1, 1]; saved as plain
  tensors so that loading runs no code (`torch.load(..., weights_only=True)`), with the SHA-256
  of the shard manifest it was fitted on (files of earlier versions lack it).
- `UniformPrior`: U[-1, 1] per pixel (FDRL-UP).
- `StandardNormalPrior`: N(0, std^2 I), for the 2-D experiments.
- `SourcePrior`: the images of a source domain (image-to-image translation, Sec. 5.3).

Every prior draws from the `Noise` it is given, so a sample is a function of that noise alone
(per seed when sampling, per global row when training; see `fdrl.noise`).
"""

from __future__ import annotations

import math
import os
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from fdrl.checkpoint import load_tensors, save_tensors
from fdrl.errors import FdrlError
from fdrl.noise import Noise

JITTER = 1e-4
_KEYS = ("mean", "cholesky", "count", "shape")
_PROVENANCE = "manifest_sha256"


class Prior(Protocol):
    """Draws n samples of shape `shape` from the noise it is given."""

    shape: tuple[int, ...]

    def sample(self, n: int, noise: Noise) -> Tensor: ...


class StandardNormalPrior:
    """N(0, std^2 I) over `shape` (std = 1: the swiss roll's prior; the Gaussians of Sec. 3.1)."""

    def __init__(self, shape: tuple[int, ...], std: float = 1.0):
        self.shape, self.std = tuple(shape), std

    def sample(self, n: int, noise: Noise) -> Tensor:
        return self.std * noise.randn(n, self.shape)


class UniformPrior:
    """U[-1, 1] over `shape` (the FDRL-UP ablation)."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def sample(self, n: int, noise: Noise) -> Tensor:
        return 2 * noise.rand(n, self.shape) - 1


class GaussianPrior:
    """The data-dependent prior N(mu_D, Sigma_D + 1e-4 I), clamped to [-1, 1] (Eq. 8)."""

    def __init__(self, mean: Tensor, cholesky: Tensor, shape: tuple[int, ...], count: int,
                 manifest_sha256: str | None = None):
        d = math.prod(shape)
        if mean.shape != (d,) or cholesky.shape != (d, d):
            raise FdrlError(
                f"prior tensors do not match the image shape {tuple(shape)}: mean is "
                f"{tuple(mean.shape)} and the Cholesky factor {tuple(cholesky.shape)}, expected "
                f"({d},) and ({d}, {d}); refit the prior with `fdrl fit-prior`"
            )
        self.mean, self.cholesky = mean, cholesky
        self.shape, self.count = tuple(int(s) for s in shape), int(count)
        self.manifest_sha256 = manifest_sha256

    @classmethod
    def from_moments(
        cls, mean: Tensor, covariance: Tensor, shape: tuple[int, ...], count: int,
        manifest_sha256: str | None = None,
    ) -> "GaussianPrior":
        """The prior of a dataset with these moments; the factorization runs in float64.

        The jitter is added to the diagonal in place and taken off again, so that a d x d
        covariance needs no copy (19 GB saved for LSUN Church 128).
        """
        cov = covariance if covariance.dtype == torch.float64 else covariance.double()
        diagonal = cov.diagonal()
        diagonal.add_(JITTER)
        try:
            cholesky = torch.linalg.cholesky(cov)
        finally:
            diagonal.sub_(JITTER)
        return cls(mean.float(), cholesky.float(), shape, count, manifest_sha256)

    def to(self, device: torch.device | str) -> "GaussianPrior":
        return GaussianPrior(self.mean.to(device), self.cholesky.to(device), self.shape, self.count,
                             self.manifest_sha256)

    @property
    def covariance(self) -> Tensor:
        """Sigma_D + 1e-4 I, rebuilt from the Cholesky factor."""
        return self.cholesky @ self.cholesky.T

    def sample(self, n: int, noise: Noise) -> Tensor:
        z = noise.randn(n, (self.mean.numel(),))
        x = self.mean + z @ self.cholesky.T
        return x.clamp(-1, 1).view(n, *self.shape)

    def save(self, path: str | os.PathLike) -> None:
        """Writes mean, Cholesky factor, count and image shape as plain tensors, atomically."""
        state = {
            "mean": self.mean.cpu(),
            "cholesky": self.cholesky.cpu(),
            "count": torch.tensor(self.count, dtype=torch.int64),
            "shape": torch.tensor(self.shape, dtype=torch.int64),
            **({_PROVENANCE: self.manifest_sha256} if self.manifest_sha256 else {}),
        }
        save_tensors(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "GaussianPrior":
        """Reads a prior written by `save`; never unpickles code."""
        if not os.path.isfile(path):
            raise FdrlError(f"no prior at {path}: fit one with `fdrl fit-prior`")
        state = load_tensors(path, "prior file", "refit it with `fdrl fit-prior`", device)
        if not isinstance(state, dict) or set(state) - {_PROVENANCE} != set(_KEYS):
            raise FdrlError(
                f"{path} is not a prior file (expected the tensors {', '.join(_KEYS)}); "
                "refit it with `fdrl fit-prior`"
            )
        shape = tuple(int(s) for s in state["shape"].tolist())
        return cls(state["mean"], state["cholesky"], shape, int(state["count"]),
                   state.get(_PROVENANCE))


class SourcePrior:
    """Images of a source domain as q' (image-to-image translation, Sec. 5.3, Cat2dog).

    `store` gives random access to uint8 (C, H, W) images (`len(store)`, `store.get(i)`, as
    `fdrl.data.ShardStore`). Row i takes a uniformly drawn image, flipped and dequantized like the
    data, all from the noise it is given: with `SlicedNoise` global row i is the same for any
    world size, and each rank decodes only its own rows.
    """

    def __init__(self, store: object, flip: bool, dequantization: float, device: torch.device):
        self.store, self.shape = store, tuple(store.shape)
        self.flip, self.dequantization, self.device = flip, dequantization, device

    def sample(self, n: int, noise: Noise) -> Tensor:
        u = noise.rand(n, (2,))
        index = (u[:, 0] * len(self.store)).long().clamp(max=len(self.store) - 1).cpu()
        images = np.stack([self.store.get(int(i)) for i in index])
        x = torch.from_numpy(images).to(self.device).float() / 127.5 - 1
        if self.flip:
            x = torch.where((u[:, 1] < 0.5)[:, None, None, None], x.flip(-1), x)
        return x + self.dequantization * noise.randn(n, self.shape)

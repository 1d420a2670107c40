"""`fdrl fit-prior`: the data-dependent prior's moments by a distributed reduction (Eq. 8).

Each rank reads its share of the shards once, accumulates count, sum x and sum x x^T in float64
on its device, the sums are all-reduced, and rank 0 factorizes Sigma_D + 1e-4 I and writes
prior.pt. x x^T is added in place (`addmm_`), in row blocks if asked, so that no rank holds more
than the d x d accumulator and one batch: for LSUN Church 128 (d = 49,152) that is 19.3 GB.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from fdrl import distributed
from fdrl.data import load_manifest, one_pass
from fdrl.errors import FdrlError
from fdrl.io import atomic_path
from fdrl.priors import GaussianPrior
from fdrl.shards import verify


class Moments:
    """Running count, sum x and sum x x^T (float64) of flattened images in [-1, 1]."""

    def __init__(self, d: int, device: torch.device, block_rows: int | None = None):
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(d, dtype=torch.float64, device=device)
        self.outer = torch.zeros(d, d, dtype=torch.float64, device=device)
        self.block_rows = block_rows or d

    def add(self, images: Tensor) -> None:
        """Adds a batch of uint8 images (B, C, H, W)."""
        x = images.to(self.sum.device).flatten(1).double() / 127.5 - 1
        self.count += len(x)
        self.sum += x.sum(0)
        for start in range(0, x.shape[1], self.block_rows):
            rows = slice(start, start + self.block_rows)
            self.outer[rows].addmm_(x[:, rows].T, x)

    def all_reduce(self) -> None:
        for t in (self.count, self.sum, self.outer):
            distributed.all_reduce_sum(t)

    def mean_and_covariance(self) -> tuple[Tensor, Tensor]:
        """mu_D and Sigma_D = E[x x^T] - mu mu^T (population covariance, Eq. 8).

        The covariance is computed in place of the x x^T accumulator (no second d x d buffer),
        which this consumes: call it once, after the last `add`.
        """
        mean = self.sum / self.count
        return mean, self.outer.div_(self.count).addr_(mean, mean, alpha=-1)


def resolve_shards(shards: list[str]) -> tuple[Path, list[Path] | None]:
    """The shard folder, and the chosen tar files if individual ones were named."""
    paths = [Path(s) for s in shards]
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].name == "manifest.json"):
        return (paths[0] if paths[0].is_dir() else paths[0].parent), None
    folders = {p.parent for p in paths}
    if len(folders) != 1 or any(p.suffix != ".tar" for p in paths):
        raise FdrlError("--shards takes one shard folder (or its manifest.json), or .tar files "
                        "of a single folder")
    return folders.pop(), paths


def fit_prior(shards: list[str], out: str | os.PathLike, block_rows: int | None = None,
              workers: int = 0, device: str | None = None,
              moments_out: str | os.PathLike | None = None) -> GaussianPrior | None:
    """Fits N(mu_D, Sigma_D + 1e-4 I) to the shards' images on every rank; rank 0 writes `out`
    (and, if asked, the float64 mean and covariance to `moments_out`)."""
    folder, files = resolve_shards(shards)
    manifest = load_manifest(folder)
    verify(folder, files)  # every shard present and intact before any heavy work
    dist = distributed.init(device)
    moments = Moments(math.prod(manifest.shape), dist.device, block_rows)
    for _, images in one_pass(folder, dist.rank, dist.world_size, workers, files=files):
        moments.add(images)
    moments.all_reduce()
    prior = None
    if dist.is_main:
        count = int(moments.count.item())
        expected = manifest.count if files is None else sum(
            s["count"] for s in manifest.shards if s["file"] in {f.name for f in files})
        if count != expected:
            raise FdrlError(f"read {count} images from {folder}, its manifest lists {expected}")
        mean, cov = moments.mean_and_covariance()
        prior = GaussianPrior.from_moments(mean, cov, manifest.shape, count)
        prior.save(out)
        if moments_out is not None:
            with atomic_path(moments_out) as tmp:
                torch.save({"mean": mean.cpu(), "covariance": cov.cpu(),
                            "count": torch.tensor(count)}, tmp)
    distributed.barrier()
    return prior

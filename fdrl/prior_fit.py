"""`fdrl fit-prior`: the data-dependent prior's moments by a distributed reduction (Eq. 8).

Each rank reads its share of the shards once and accumulates float64 moments of the images in
[-1, 1] (`fdrl.moments.Moments`, in row blocks if asked); the sums are all-reduced, and rank 0
factorizes Sigma_D + 1e-4 I and writes prior.pt.
"""

from __future__ import annotations

import math
import os

import torch

from fdrl import distributed
from fdrl.checkpoint import save_tensors
from fdrl.data import manifest_sha256, one_pass, select_shards
from fdrl.moments import Moments
from fdrl.priors import GaussianPrior
from fdrl.progress import progress


def fit_prior(shards: list[str], out: str | os.PathLike, block_rows: int | None = None,
              workers: int = 0, device: str | None = None,
              moments_out: str | os.PathLike | None = None) -> GaussianPrior | None:
    """Fits N(mu_D, Sigma_D + 1e-4 I) to the shards' images on every rank; rank 0 writes `out`
    (and, if asked, the float64 mean and covariance to `moments_out`) and returns the prior."""
    selection = select_shards(shards)
    selection.manifest.refuse_held_out("fitting the prior")
    shape = selection.manifest.shape
    dist = distributed.init(device)
    moments = Moments(math.prod(shape), dist.device, block_rows)
    with progress(selection.count_of_rank(dist.rank, dist.world_size),
                  f"fit-prior {selection.manifest.dataset}", "img", dist.is_main) as bar:
        for _, images in one_pass(selection.folder, dist.rank, dist.world_size, workers,
                                  files=selection.files):
            moments.add(images.to(dist.device).flatten(1).double() / 127.5 - 1)
            bar.update(len(images))
    moments.all_reduce()
    count = int(moments.count.item())
    selection.check_count(count)  # all-reduced: every rank fails alike, none waits forever
    prior = None
    if dist.is_main:
        mean, cov = moments.mean_and_covariance()  # the population covariance of Eq. 8
        # Fitted on all of the folder's shards, the prior is that manifest's; on some, no one's.
        fitted_on = manifest_sha256(selection.folder) if selection.files is None else None
        prior = GaussianPrior.from_moments(mean, cov, shape, count, fitted_on)
        prior.save(out)
        if moments_out is not None:
            save_tensors({"mean": mean.cpu(), "covariance": cov.cpu(),
                          "count": torch.tensor(count)}, moments_out)
    distributed.barrier()
    return prior

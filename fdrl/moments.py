"""Running first and second moments in float64, summed over ranks (after EDM's fid.py).

Both the data-dependent prior (Eq. 8) and FID's feature statistics are a mean and a covariance
of many rows read once, split over ranks. Each rank sums count, x and x x^T in float64 on its
device, the sums are all-reduced, and the covariance is formed once at the end. The float64 sums
of given rows are exact enough that the result does not depend on how the rows were split.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fdrl import distributed


class Moments:
    """Running count, sum x and sum x x^T (float64) of rows of dimension `dim`.

    x x^T is added in place (`addmm_`), `block_rows` rows of the accumulator at a time if asked,
    so that no rank holds more than the d x d accumulator and one batch: for LSUN Church 128
    (d = 49,152) the accumulator alone is 19.3 GB.
    """

    def __init__(self, dim: int, device: torch.device, block_rows: int | None = None,
                 keep_rows: bool = False):
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.block_rows = block_rows or dim
        # The rows themselves, where fewer than dim are expected: a factor of the covariance
        # smaller than it (`fid.frechet_distance`); every rank's, after `all_reduce`.
        self.keep_rows = keep_rows
        self._kept: list[Tensor] = []
        self.rows: Tensor | None = None

    def add(self, rows: Tensor) -> None:
        """Adds a batch of rows (B, dim), of any floating dtype."""
        x = rows.to(self.sum.device, torch.float64)
        self.count += len(x)
        self.sum += x.sum(0)
        for start in range(0, x.shape[1], self.block_rows):
            block = slice(start, start + self.block_rows)
            self.outer[block].addmm_(x[:, block].T, x)
        if self.keep_rows:
            self._kept.append(x)

    def all_reduce(self) -> None:
        """Sums the moments of every rank, and gathers the kept rows of all (collective: call it
        on every rank)."""
        for t in (self.count, self.sum, self.outer):
            distributed.all_reduce_sum(t)
        if self.keep_rows:
            mine = torch.cat(self._kept) if self._kept else self.sum.new_zeros(0, len(self.sum))
            self.rows = distributed.all_gather_rows(mine)

    def mean_and_covariance(self, ddof: int = 0) -> tuple[Tensor, Tensor]:
        """The mean and the covariance sum (x - mu)(x - mu)^T / (n - ddof): ddof 0 is the
        population covariance of Eq. 8, ddof 1 the unbiased one of `np.cov` (pytorch-fid's and
        clean-fid's). The covariance is formed in place of the x x^T accumulator (no second d x d
        buffer), which this consumes: call it once, after the last `add`.
        """
        n = self.count.item()
        if n <= ddof:
            raise ValueError(f"a covariance with ddof {ddof} needs more than {ddof} rows, got {int(n)}")
        mean = self.sum / self.count
        cov = self.outer.div_(self.count).addr_(mean, mean, alpha=-1)
        return mean, cov.mul_(n / (n - ddof)) if ddof else cov

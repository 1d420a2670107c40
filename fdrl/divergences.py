"""f-divergences of the flow (Table 2) and their pairing with a Bregman loss (Appendix C).

Each divergence gives `f(r)` as Table 2 prints it and `f'(r)` computed stably from the network
output `h` (Eq. 22-24). The flow (Eq. 9) only needs the gradient of `f'`, so the additive
constants are immaterial there; they are kept so that `f'` equals `df/dr` exactly, which
`max_abs_error` measures and Table 2 reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from fdrl.errors import FdrlError
from fdrl.losses import LOSSES, BregmanLoss
from fdrl.names import PAIRINGS

LOG2 = math.log(2.0)


@dataclass(frozen=True)
class Divergence:
    """An f-divergence, the one Bregman loss it pairs with, and f' from the network output."""

    name: str
    f_text: str
    f_prime_text: str
    loss: str
    f: Callable[[Tensor], Tensor]
    f_prime: Callable[[Tensor], Tensor]


DIVERGENCES: dict[str, Divergence] = {
    # LSIF: r = h, so f'(r) = 2(r - 1) = 2(h - 1).
    "pearson": Divergence(
        "pearson", "(r - 1)^2", "2(r - 1)", "lsif",
        f=lambda r: (r - 1).square(),
        f_prime=lambda h: 2 * (h - 1),
    ),
    # LR: log r = h.
    "kl": Divergence(
        "kl", "r log r", "log r + 1", "lr",
        f=lambda r: r * torch.log(r),
        f_prime=lambda h: h + 1,  # Eq. 22
    ),
    "js": Divergence(
        "js", "r log r - (r + 1) log((r + 1) / 2)", "log(2r / (r + 1))", "lr",
        f=lambda r: r * torch.log(r) - (r + 1) * torch.log((r + 1) / 2),
        f_prime=lambda h: LOG2 + F.logsigmoid(h),  # Eq. 23
    ),
    "logd": Divergence(
        "logd", "(r + 1) log(r + 1) - 2 log 2", "log(r + 1) + 1", "lr",
        f=lambda r: (r + 1) * torch.log(r + 1) - 2 * LOG2,
        f_prime=lambda h: F.softplus(h) + 1,  # Eq. 24: -LS(-h) + 1
    ),
}


@dataclass(frozen=True)
class Pairing:
    """A legal (Bregman loss, f-divergence) combination, named like `lsif-pearson`."""

    loss: BregmanLoss
    divergence: Divergence

    @property
    def name(self) -> str:
        return f"{self.loss.name}-{self.divergence.name}"


def pairing(name: str) -> Pairing:
    """The pairing called `name` (`lsif-pearson`, `lr-kl`, `lr-js`, `lr-logd`).

    Anything else is an FdrlError: the paper pairs LSIF only with Pearson chi^2, and LR only
    with the log-ratio divergences, for numerical stability (Appendix C).
    """
    loss, _, divergence = name.lower().partition("-")
    div = DIVERGENCES.get(divergence)
    if loss not in LOSSES or div is None or div.loss != loss:
        raise FdrlError(
            f"unknown loss-divergence pairing {name!r}: FDRL pairs LSIF with Pearson chi^2 and "
            f"LR with KL, JS or logD (Appendix C); use one of {', '.join(PAIRINGS)}"
        )
    return Pairing(LOSSES[loss], div)


def max_abs_error(div: Divergence, h: Tensor) -> float:
    """Largest |f'(h) - df/dr| over the network outputs `h`, df/dr taken by autograd on f."""
    r = LOSSES[div.loss].ratio(h.detach().double()).requires_grad_(True)
    (df_dr,) = torch.autograd.grad(div.f(r).sum(), r)
    return (div.f_prime(h.detach().double()) - df_dr).abs().max().item()

"""Bregman density-ratio losses (Sec. 2, Eq. 11 and Appendix C-D).

The network output is `h = NN(x)`. LSIF models the ratio directly (`r = h`); LR models its
logarithm (`log r = h`), so every LR quantity is written with softplus / logsigmoid and never
forms `log(exp(.))`. `xp` are data samples, `xq` flowed prior samples; the density ratio being
estimated is `r*(x) = q(x) / p(x)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class LossTerms(NamedTuple):
    """A Bregman loss and its two Monte Carlo terms (the data term and the flowed-sample term).

    `loss` carries the graph for backward; the terms are detached, for logging.
    """

    loss: Tensor
    data_term: Tensor
    flow_term: Tensor


def _terms(data: Tensor, flow: Tensor) -> LossTerms:
    data_term, flow_term = data.mean(), flow.mean()
    return LossTerms(data_term + flow_term, data_term.detach(), flow_term.detach())


def lsif_loss(h_data: Tensor, h_flow: Tensor) -> LossTerms:
    """LSIF, g(y) = (y - 1)^2 / 2, with r = h."""
    # Eq. 18: L = 1/2 E_p[r^2] - E_q[r]
    return _terms(0.5 * h_data.square(), -h_flow)


def lr_loss(h_data: Tensor, h_flow: Tensor) -> LossTerms:
    """Logistic regression, g(y) = y log y - (1 + y) log(1 + y), with log r = h."""
    # Eq. 20-21: L = -E_p[LS(-h)] - E_q[LS(h)] = E_p[softplus(h)] + E_q[softplus(-h)]
    return _terms(F.softplus(h_data), F.softplus(-h_flow))


@dataclass(frozen=True)
class BregmanLoss:
    """One choice of g: its loss and how the density ratio r is read off the network output."""

    name: str
    g: str
    ratio: Callable[[Tensor], Tensor]
    terms: Callable[[Tensor, Tensor], LossTerms]

    def __call__(self, h_data: Tensor, h_flow: Tensor) -> LossTerms:
        return self.terms(h_data, h_flow)


LOSSES: dict[str, BregmanLoss] = {
    "lsif": BregmanLoss("lsif", "(y - 1)^2 / 2", ratio=lambda h: h, terms=lsif_loss),
    "lr": BregmanLoss("lr", "y log y - (1 + y) log(1 + y)", ratio=torch.exp, terms=lr_loss),
}

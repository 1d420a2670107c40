"""Lemma 1, numerically in 1-D: with q = U[-1, 1] and gamma = 1, the stale flow of Eq. 5
(with the exact ratio r = q/p) has a stationary density that peaks where p peaks."""

import math

import pytest
import torch
from torch import nn

from fdrl.divergences import DIVERGENCES
from fdrl.flow import FlowParams, flow
from fdrl.noise import GeneratorNoise

C = 0.5  # q = U[-1, 1] has density 1 / (b - a)
# p: an asymmetric two-component mixture, overlapping enough to mix within the simulated time.
WEIGHTS, MEANS, SD = (0.7, 0.3), (0.35, -0.35), 0.3


def log_p(x):
    comps = [math.log(w) - 0.5 * ((x - m) / SD) ** 2 - math.log(SD * math.sqrt(2 * math.pi))
             for w, m in zip(WEIGHTS, MEANS)]
    return torch.logsumexp(torch.stack(comps), dim=0)


class ExactRatio(nn.Module):
    """The network output for r = C / p(x): r itself (LSIF) or log r (LR)."""

    def __init__(self, log_output):
        super().__init__()
        self.log_output = log_output

    def forward(self, x):
        log_r = math.log(C) - log_p(x[:, 0])
        return log_r if self.log_output else log_r.exp()


@pytest.mark.parametrize("name", ["kl", "pearson"])
def test_stationary_density_peaks_where_p_peaks(name):
    div = DIVERGENCES[name]
    dt = 2e-4
    # gamma = 1: Euler-Maruyama of dx = -grad f'(r) dt + sqrt(2) dW has eta = dt, nu = sqrt(2 dt).
    params = FlowParams(steps=4000, eta=dt, nu=math.sqrt(2 * dt))
    x0 = 2 * torch.rand(20_000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 1
    x = flow(ExactRatio(div.loss == "lr"), x0, div, params, GeneratorNoise(1)).squeeze(1)

    edges = torch.linspace(-1.2, 1.2, 49, dtype=torch.float64)
    hist = torch.histogram(x.float(), bins=edges.float()).hist
    centres = (edges[:-1] + edges[1:]) / 2
    grid = torch.linspace(-1.2, 1.2, 2401, dtype=torch.float64)
    p_mode = grid[log_p(grid).argmax()].item()
    assert abs(centres[hist.argmax()].item() - p_mode) <= 0.1

    # The closed form of Eq. 17: rho ~ exp(-f'(C / p)); for KL that is p itself.
    rho = torch.exp(-div.f_prime(ExactRatio(div.loss == "lr")(centres[:, None])))
    rho, emp = rho / rho.sum(), hist.double() / hist.sum()
    assert 0.5 * (rho - emp).abs().sum().item() < 0.04  # ~0.015 measured; 0.14 for the other f

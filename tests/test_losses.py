"""Bregman losses (Eq. 18-21): minimizing them over a model that contains the true ratio
recovers r* = q/p, and the LR loss stays finite where a naive log(exp(.)) would not."""

import math

import pytest
import torch
import torch.nn.functional as F

from fdrl.losses import LOSSES, lr_loss, lsif_loss

# p = N(0, 1) (data), q = N(0.5, 0.8^2) (flowed samples): log r* = log q - log p is quadratic.
MU_Q, SD_Q = 0.5, 0.8


def true_log_ratio(x):
    log_q = -0.5 * ((x - MU_Q) / SD_Q) ** 2 - math.log(SD_Q)
    log_p = -0.5 * x**2
    return log_q - log_p


def fit_log_ratio(loss_name, n=200_000):
    g = torch.Generator().manual_seed(0)
    xp = torch.randn(n, generator=g, dtype=torch.float64)
    xq = MU_Q + SD_Q * torch.randn(n, generator=g, dtype=torch.float64)
    coef = torch.zeros(3, dtype=torch.float64, requires_grad=True)

    def log_ratio(x):
        return coef[0] + coef[1] * x + coef[2] * x**2

    # LSIF models r itself; the flexible model r = exp(quadratic) contains r*. LR models log r.
    to_output = torch.exp if loss_name == "lsif" else (lambda t: t)
    opt = torch.optim.LBFGS([coef], lr=0.5, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = LOSSES[loss_name](to_output(log_ratio(xp)), to_output(log_ratio(xq))).loss
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return log_ratio


@pytest.mark.parametrize("loss_name", ["lsif", "lr"])
def test_minimizer_recovers_the_true_log_ratio(loss_name):
    log_ratio = fit_log_ratio(loss_name)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)
    err = (log_ratio(x) - true_log_ratio(x)).abs().max().item()
    # Monte Carlo error of 2e5 samples on three coefficients is ~1e-2 on [-2, 2].
    assert err < 0.06, err


def test_lsif_terms():
    h_data, h_flow = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])
    terms = lsif_loss(h_data, h_flow)
    assert terms.data_term.item() == pytest.approx(0.5 * (1 + 9) / 2)
    assert terms.flow_term.item() == pytest.approx(-3.0)
    assert terms.loss.item() == pytest.approx(2.5 - 3.0)


def test_lr_terms_match_eq_20():
    h_data = torch.randn(100, dtype=torch.float64, requires_grad=True)
    h_flow = torch.randn(100, dtype=torch.float64)
    r_data, r_flow = h_data.exp(), h_flow.exp()
    naive = -torch.log(1 / (1 + r_data)).mean() - torch.log(r_flow / (1 + r_flow)).mean()
    terms = lr_loss(h_data, h_flow)
    torch.testing.assert_close(terms.loss, naive)
    # The loss carries the graph; the logged terms do not.
    assert terms.loss.requires_grad and not terms.data_term.requires_grad


def test_lr_is_finite_for_large_outputs():
    h = torch.tensor([-100.0, 100.0], requires_grad=True)
    terms = lr_loss(h, h)
    terms.loss.backward()
    assert torch.isfinite(terms.loss) and torch.isfinite(h.grad).all()
    assert torch.allclose(F.softplus(torch.tensor(100.0)), torch.tensor(100.0))


def test_ratio_parameterizations():
    h = torch.tensor([-1.0, 0.0, 2.0])
    assert torch.equal(LOSSES["lsif"].ratio(h), h)
    assert torch.allclose(LOSSES["lr"].ratio(h), h.exp())

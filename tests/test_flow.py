"""The flow of Eq. 9 (and Eq. 31) against closed forms."""

import pytest
import torch
from torch import nn

from fdrl.divergences import DIVERGENCES
from fdrl.errors import FdrlError
from fdrl.flow import (CapturedFlow, ClassGuidance, FlowParams, captured_flow, flow, ratio_potential,
                       trajectory)
from fdrl.nets import MLP
from fdrl.noise import GeneratorNoise, PerSampleNoise


class Quadratic(nn.Module):
    """h(x) = sum_i a_i x_i^2: grad_x h = 2 a x."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.as_tensor(a, dtype=torch.float64))

    def forward(self, x):
        return (self.a * x.square()).sum(dim=1)


class Linear(nn.Module):
    """h(x) = w . x: grad_x h = w, the same everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w


def closed_form_grad(name, h, grad_h):
    """grad_x f'(r(x)) by the chain rule, written out per divergence."""
    dfprime_dh = {
        "pearson": torch.full_like(h, 2.0),   # 2(h - 1)
        "kl": torch.ones_like(h),              # h + 1
        "js": torch.sigmoid(-h),               # log 2 + logsigmoid(h)
        "logd": torch.sigmoid(h),              # softplus(h) + 1
    }[name]
    return dfprime_dh[:, None] * grad_h


@pytest.mark.parametrize("name", DIVERGENCES)
def test_noiseless_step_moves_by_minus_eta_grad_f_prime(name):
    net = Quadratic([0.3, -0.2])
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eta = 0.7
    x1 = flow(net, x0, DIVERGENCES[name], FlowParams(steps=1, eta=eta, nu=0.0), GeneratorNoise(0))
    with torch.no_grad():
        expected = x0 - eta * closed_form_grad(name, net(x0), 2 * net.a * x0)
    torch.testing.assert_close(x1, expected.to(x1.dtype))


def test_noise_increments_have_the_right_mean_and_covariance():
    w = torch.tensor([0.5, -1.0], dtype=torch.float64)
    eta, nu, n = 0.1, 0.3, 200_000
    x0 = torch.zeros(n, 2, dtype=torch.float64)
    x1 = flow(Linear(w), x0, DIVERGENCES["pearson"], FlowParams(1, eta, nu), GeneratorNoise(3))
    inc = x1 - x0
    # Pearson: f' = 2(h - 1), grad = 2w; the increment is -eta 2w + nu xi.
    torch.testing.assert_close(inc.mean(0), -eta * 2 * w, rtol=0, atol=5 * nu / n**0.5)
    torch.testing.assert_close(torch.cov(inc.T), nu**2 * torch.eye(2, dtype=torch.float64),
                               rtol=0, atol=0.02 * nu**2)


def test_same_seeds_give_the_same_particles_whatever_the_batch():
    torch.manual_seed(0)
    net = MLP()
    params = FlowParams(steps=5, eta=0.5, nu=0.1)
    seeds = [11, 12, 13, 14]
    x0 = PerSampleNoise(seeds).randn(4, (2,))
    together = flow(net, x0, DIVERGENCES["kl"], params, PerSampleNoise(seeds))
    again = flow(net, x0, DIVERGENCES["kl"], params, PerSampleNoise(seeds))
    alone = flow(net, x0[2:3], DIVERGENCES["kl"], params, PerSampleNoise(seeds[2:3]))
    assert torch.equal(together, again)
    torch.testing.assert_close(together[2:3], alone)
    other = flow(net, x0, DIVERGENCES["kl"], params, PerSampleNoise([1, 2, 3, 4]))
    assert not torch.allclose(together, other)


def test_parameters_get_no_gradient_and_are_restored():
    net = MLP().train()
    flow(net, torch.randn(8, 2), DIVERGENCES["js"], FlowParams(3, 0.1, 0.01), GeneratorNoise(0))
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    assert net.training


def test_spectral_norm_power_iteration_is_not_advanced_by_the_flow():
    net = MLP(spectral_norm=True).train()
    net(torch.randn(4, 2))  # one training-mode forward, as a training step does
    before = {k: v.clone() for k, v in net.state_dict().items() if k.endswith("_u")}
    flow(net, torch.randn(8, 2), DIVERGENCES["kl"], FlowParams(10, 0.1, 0.01), GeneratorNoise(0))
    after = net.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())


def test_the_training_flow_is_a_cuda_graph_only_on_cuda_with_steps_and_when_asked(device):
    """`captured_flow` (the trainer's choice): a CapturedFlow for a network on CUDA with K >= 1
    unless turned off; None, the eager flow, on the CPU, for K = 0 (the stale estimator) and
    with `cuda_graph: false`."""
    net, kl = MLP().to(device), DIVERGENCES["kl"]
    chosen = captured_flow(net, kl, FlowParams(3, 0.1, 0.01))
    assert isinstance(chosen, CapturedFlow) if device.type == "cuda" else chosen is None
    assert captured_flow(net, kl, FlowParams(0, 0.1, 0.01)) is None
    assert captured_flow(net, kl, FlowParams(3, 0.1, 0.01), enabled=False) is None


def test_trajectory_yields_every_step():
    net = Quadratic([1.0, 1.0])
    pot = ratio_potential(net, DIVERGENCES["kl"])
    xs = list(trajectory(pot, torch.ones(3, 2, dtype=torch.float64), FlowParams(4, 0.1, 0.0), GeneratorNoise(0)))
    assert len(xs) == 4
    # KL on h = |x|^2: each step multiplies x by (1 - 2 eta).
    torch.testing.assert_close(xs[-1], torch.full((3, 2), 0.8**4, dtype=torch.float64))


def test_class_conditional_step_matches_eq_31():
    net = Quadratic([0.3, 0.1])
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    classifier = lambda x: x @ W.T  # noqa: E731
    labels = torch.tensor([0, 1, 2, 0])
    x0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    eta, phi = 0.2, 0.1
    # grad_x log softmax(Wx)_y = W_y - sum_c p_c W_c
    p = torch.softmax(x0 @ W.T, dim=1)
    grad_log_p = W[labels] - p @ W
    for factor in (1.0, 2.0):  # c = 1: Eq. 9 and the released code (the default); 2: Eq. 31 as printed
        x1 = flow(net, x0, DIVERGENCES["kl"], FlowParams(1, eta, 0.0), GeneratorNoise(0),
                  guidance=ClassGuidance(classifier, labels, phi, factor))
        expected = x0 - factor * eta * (2 * net.a.detach() * x0 - phi * grad_log_p)
        torch.testing.assert_close(x1, expected)
    assert ClassGuidance(classifier, labels).step_factor == 1.0


def test_class_conditional_flow_needs_lr_kl():
    with pytest.raises(FdrlError, match="LR-KL"):
        flow(MLP(), torch.zeros(2, 2), DIVERGENCES["pearson"], FlowParams(1, 0.1, 0.0),
             GeneratorNoise(0), guidance=ClassGuidance(lambda x: x, torch.zeros(2, dtype=torch.long)))

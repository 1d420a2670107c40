"""Algorithm 1 (one training iteration) and the EMA of Appendix F."""

import copy

import torch

from fdrl.divergences import pairing
from fdrl.ema import EMA
from fdrl.flow import FlowParams, flow
from fdrl.nets import MLP
from fdrl.noise import GeneratorNoise
from fdrl.step import fdrl_step


def test_ema_update_is_the_papers_formula():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.9)
    before = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    for e, b, p in zip(ema.module.parameters(), before, net.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_step_trains_on_flowed_samples_without_gradient_through_the_flow():
    torch.manual_seed(0)
    net = MLP()
    reference = copy.deepcopy(net)
    pair = pairing("lsif-pearson")
    params = FlowParams(steps=5, eta=0.5, nu=0.01)
    x_data, x_prior = torch.randn(32, 2) + 1, torch.randn(32, 2)
    lr = 0.1

    result = fdrl_step(net, torch.optim.SGD(net.parameters(), lr=lr), pair, x_data, x_prior,
                       params, GeneratorNoise(7))

    # The same by hand: flow with fixed parameters, then the loss at the flowed samples.
    x_flow = flow(reference, x_prior, pair.divergence, params, GeneratorNoise(7))
    torch.testing.assert_close(result.x_flow, x_flow)
    terms = pair.loss(reference(x_data), reference(x_flow))
    grads = torch.autograd.grad(terms.loss, list(reference.parameters()))
    for p, r, g in zip(net.parameters(), reference.parameters(), grads):
        torch.testing.assert_close(p, r - lr * g)
    torch.testing.assert_close(result.loss, terms.loss.detach())
    torch.testing.assert_close(result.ratio_data, reference(x_data).mean().detach())


def test_zero_flow_steps_is_the_stale_estimator():
    net = MLP()
    x_prior = torch.randn(16, 2)
    result = fdrl_step(net, torch.optim.Adam(net.parameters()), pairing("lr-kl"),
                       torch.randn(16, 2), x_prior, FlowParams(0, 1.0, 0.01), GeneratorNoise(0))
    assert torch.equal(result.x_flow, x_prior)
    assert set(result.scalars()) == {"loss", "data_term", "flow_term", "ratio_data", "ratio_flow"}


def test_ema_follows_the_trained_network():
    net = MLP()
    ema = EMA(net, decay=0.5)
    fdrl_step(net, torch.optim.Adam(net.parameters(), lr=1e-2), pairing("lr-js"), torch.randn(8, 2),
              torch.randn(8, 2), FlowParams(2, 0.5, 0.01), GeneratorNoise(0), ema=ema)
    for e, p in zip(ema.module.parameters(), net.parameters()):
        assert not torch.equal(e, p)


def test_fdrl_carries_particles_to_a_nearby_gaussian():
    # A small Fig. 3: q' = N(0, 0.1 I), p = N(1, 0.1 I); the flowed mean should approach 1.
    torch.manual_seed(0)
    net = MLP()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    noise, pair, params = GeneratorNoise(0), pairing("lr-kl"), FlowParams(20, 0.05, 0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        x_data = 1 + 0.1**0.5 * torch.randn(256, 2, generator=g)
        result = fdrl_step(net, opt, pair, x_data, 0.1**0.5 * torch.randn(256, 2, generator=g),
                           params, noise)
    assert (result.x_flow.mean(0) - 1).abs().max() < 0.25, result.x_flow.mean(0)

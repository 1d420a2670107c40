"""bf16 autocast and channels-last (fdrl.precision): what runs in bf16, and what stays float32.

bf16 runs on every x86 CPU (emulated where the CPU has no bf16 units), so these tests hold on any
CPU; they compare against float32 with tolerances that bf16's 8-bit mantissa allows, never
against numbers of one CPU.
"""

import copy
import time

import pytest
import torch

from fdrl.config import load_config
from fdrl.divergences import pairing
from fdrl.ema import EMA
from fdrl.errors import FdrlError
from fdrl.flow import FlowParams, flow, ratio_potential
from fdrl.nets import MLP, build_network
from fdrl.noise import GeneratorNoise
from fdrl.precision import FP32, Precision, fastest
from fdrl.step import fdrl_step

BF16 = Precision("bf16")


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


def test_bf16_runs_the_network_in_bf16_and_returns_float32(device):
    net = torch.nn.Linear(4, 1).to(device)
    seen = []
    net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = BF16.forward(net, torch.randn(3, 4, device=device))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    x = torch.randn(3, 4, device=device)
    assert FP32.forward(net, x).dtype == torch.float32 and seen[-1] == torch.float32


@pytest.mark.parametrize("name", ["lsif-pearson", "lr-kl"])
def test_bf16_flow_keeps_x_float32_and_follows_the_float32_flow(name, device):
    torch.manual_seed(0)
    net = MLP().to(device)
    params = FlowParams(steps=20, eta=0.05, nu=0.01)
    x0 = torch.randn(256, 2).to(device)
    div = pairing(name).divergence
    x32 = flow(net, x0, div, params, GeneratorNoise(3, device))
    x16 = flow(net, x0, div, params, GeneratorNoise(3, device), precision=BF16)
    assert x16.dtype == torch.float32 and not torch.equal(x16, x32)  # bf16 did run
    # The drift of 20 steps agrees to bf16's rounding; a sign error or a bf16 state would not.
    assert relative_error(x16 - x0, x32 - x0) < 0.05
    # The input gradient itself, against float32.
    x = x0.clone().requires_grad_(True)
    (g32,) = torch.autograd.grad(ratio_potential(net, div)(x).sum(), x)
    (g16,) = torch.autograd.grad(ratio_potential(net, div, BF16)(x).sum(), x)
    assert g16.dtype == torch.float32 and relative_error(g16, g32) < 0.05


def test_bf16_step_keeps_weights_optimizer_and_ema_float32(device):
    torch.manual_seed(0)
    net = MLP().to(device)
    reference = copy.deepcopy(net)
    ema = EMA(net, 0.9)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_data, x_prior = (torch.randn(64, 2) + 1).to(device), torch.randn(64, 2).to(device)
    params = FlowParams(5, 0.5, 0.01)
    result = fdrl_step(net, optimizer, pairing("lr-kl"), x_data, x_prior, params,
                       GeneratorNoise(1, device), ema, BF16)
    assert torch.isfinite(result.loss) and result.x_flow.dtype == torch.float32
    tensors = [*net.parameters(), *ema.module.parameters(),
               *(v for s in optimizer.state.values() for v in s.values() if v.dim() > 0)]
    assert all(t.dtype == torch.float32 for t in tensors)
    # The same step in float32 moves the weights the same way (Adam's first step is lr * sign).
    ref_result = fdrl_step(reference, torch.optim.Adam(reference.parameters(), lr=1e-3),
                           pairing("lr-kl"), x_data, x_prior, params, GeneratorNoise(1, device))
    assert abs(float(result.loss - ref_result.loss)) < 0.02 * abs(float(ref_result.loss)) + 1e-3
    moved = [(p - q).detach().flatten() for p, q in zip(net.parameters(), reference.parameters())]
    assert float(torch.cat(moved).abs().max()) < 1e-2  # one Adam step of 1e-3 each, sign aside


def test_channels_last_changes_only_the_memory_order(device):
    torch.manual_seed(0)
    net = build_network("resnet8", in_channels=1).eval().to(device)
    last = Precision("fp32", channels_last=True)
    moved = last.prepare(copy.deepcopy(net))
    conv = next(m for m in moved.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x0 = (torch.rand(8, 1, 8, 8) * 2 - 1).to(device)
    div, params = pairing("lsif-pearson").divergence, FlowParams(3, 1.0, 0.01)
    # cuDNN convolves float32 in TF32 by default; full float32 here, so that only the order of
    # sums differs between the two layouts.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        a = flow(net, x0, div, params, GeneratorNoise(0, device))
        b = flow(moved, x0, div, params, GeneratorNoise(0, device), precision=last)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_precision_is_a_checked_run_setting(tmp_path):
    base = [f"data={tmp_path}", "prior=uniform"]
    cfg = load_config(None, [*base, "precision=bf16", "channels_last=true"])
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)
    assert load_config(None, base).precision == "fp32"
    assert load_config(None, [*base, "precision=auto"]).precision == "auto"
    with pytest.raises(FdrlError, match="precision: 'fp16' .* is not one of fp32, bf16, auto"):
        load_config(None, [*base, "precision=fp16"])
    with pytest.raises(FdrlError, match="precision 'fp16' is not one of"):
        Precision("fp16")


class SlowIn(torch.nn.Module):
    """A linear layer that takes 20 ms more whenever it computes in `dtype`."""

    def __init__(self, dtype):
        super().__init__()
        self.linear, self.dtype = torch.nn.Linear(4, 1), dtype

    def forward(self, x):
        y = self.linear(x)
        if y.dtype == self.dtype:
            time.sleep(0.02)
        return y


@pytest.mark.parametrize("slow, chosen", [(torch.bfloat16, "fp32"), (torch.float32, "bf16")])
def test_auto_takes_the_precision_that_runs_faster_here(slow, chosen):
    precision, seconds = fastest(SlowIn(slow), (8, 4), torch.device("cpu"), channels_last=False)
    assert precision == Precision(chosen) and set(seconds) == {"fp32", "bf16"}
    assert seconds["fp32" if chosen == "bf16" else "bf16"] > 0.02 > seconds[chosen]


@pytest.mark.parametrize("graph", [False, True])
def test_measuring_leaves_the_network_and_the_random_streams_alone(device, graph):
    """Eager, and (`graph`, which on CUDA times replays of a captured flow step, as the trainer's
    flow runs there; the CPU times eagerly either way)."""
    torch.manual_seed(0)
    # Forwards in train mode update spectral norm's vectors.
    net = build_network("resnet8", in_channels=1, spectral_norm=True).to(device)
    before, rng = copy.deepcopy(net.state_dict()), torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    precision, seconds = fastest(net, (2, 1, 8, 8), device, channels_last=True, graph=graph)
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 10 for s in seconds.values())
    assert precision.channels_last and torch.equal(torch.get_rng_state(), rng)
    if cuda_rng is not None:
        assert torch.equal(torch.cuda.get_rng_state(device), cuda_rng)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert next(net.parameters()).is_contiguous()  # the run's own weights keep their layout

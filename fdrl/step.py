"""One FDRL training iteration (Algorithm 1), shared by the trainer and the 2-D experiments.

Draw x_p ~ p and x_0 ~ q'; flow x_0 for K steps of Eq. 9 with the current parameters held
fixed; take one optimizer step on the Bregman loss between x_p and x_K. With K = 0 this is
the plain stale estimator of Sec. 3.1, trained on prior samples as they are.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from fdrl.divergences import Pairing
from fdrl.ema import EMA
from fdrl.flow import CapturedFlow, FlowParams, flow
from fdrl.noise import Noise
from fdrl.precision import FP32, Precision


class StepResult(NamedTuple):
    """Loss terms and mean density ratios of one step (detached tensors), and the x_K used."""

    loss: Tensor
    data_term: Tensor
    flow_term: Tensor
    ratio_data: Tensor
    ratio_flow: Tensor
    x_flow: Tensor

    def scalars(self) -> dict[str, float]:
        """The logged numbers as floats (this synchronizes with the device)."""
        return {k: float(v) for k, v in self._asdict().items() if k != "x_flow"}


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper, or `net` itself."""
    return net.module if isinstance(net, DistributedDataParallel) else net


def fdrl_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    pairing: Pairing,
    x_data: Tensor,
    x_prior: Tensor,
    flow_params: FlowParams,
    noise: Noise,
    ema: EMA | None = None,
    precision: Precision = FP32,
    captured: CapturedFlow | None = None,
) -> StepResult:
    """Algorithm 1, one iteration; `net` may be wrapped in DDP (only the loss backward syncs).

    The flow's forwards and the loss's forward run in `precision`; the loss itself, the
    optimizer step and the EMA update in float32. `captured`, built for the same network, flow
    parameters and precision, runs the flow as a CUDA graph instead of eagerly.
    """
    model = unwrap(net)
    if captured is None:
        x_flow = flow(model, x_prior, pairing.divergence, flow_params, noise, precision=precision)
    else:
        x_flow = captured(x_prior, noise)
    # One forward over both batches: spectral norm advances once per step, DDP sees one pass.
    h = precision.forward(net, torch.cat([x_data, x_flow]))
    h_data, h_flow = h.split([len(x_data), len(x_flow)])
    terms = pairing.loss(h_data, h_flow)
    optimizer.zero_grad(set_to_none=True)
    terms.loss.backward()
    optimizer.step()
    if ema is not None:
        ema.update(model)
    with torch.no_grad():
        ratio = pairing.loss.ratio(h.detach())
    n = len(x_data)
    return StepResult(terms.loss.detach(), terms.data_term, terms.flow_term,
                      ratio[:n].mean(), ratio[n:].mean(), x_flow)

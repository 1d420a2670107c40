"""The Euler-Maruyama flow that carries prior samples towards the data (Eq. 9, Eq. 31).

    x_{k+1} = x_k - eta * grad_x f'(r_theta(x_k)) + nu * xi_k,   xi_k ~ N(0, I)       (Eq. 9)

(The paper's typeset Eq. 9 drops the x_k term; Eq. 30-31 and the authors' code keep it.)
Training runs K steps (Algorithm 1); sampling runs K + kappa steps and clamps to [-1, 1]
(Algorithm 2). During the flow the estimator is a fixed function of x: its parameters are
excluded from autograd, and it runs in eval mode with parametrizations cached, so spectral
normalization's power iteration does not advance once per flow step. The network runs in the
given `Precision` (bf16 autocast, channels-last); x_k, its gradient and the Eq. 9 update stay
float32. On CUDA the trainer runs the same K steps as one replayed CUDA graph (`CapturedFlow`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from fdrl.divergences import Divergence
from fdrl.errors import FdrlError
from fdrl.graphs import capture
from fdrl.noise import Noise
from fdrl.precision import FP32, Precision

Potential = Callable[[Tensor], Tensor]
"""Maps a batch x to one scalar per sample; the flow descends its x-gradient."""


@dataclass(frozen=True)
class FlowParams:
    """Number of Euler-Maruyama steps, step size eta and noise scale nu of Eq. 9."""

    steps: int
    eta: float
    nu: float


STEP_FACTORS = (1.0, 2.0)
"""The step factors c of the class-conditional flow: 1 (Eq. 9, the released code), 2 (Eq. 31)."""


@dataclass(frozen=True)
class ClassGuidance:
    """Class-conditional composition with a classifier (Eq. 31, Appendix E).

    `classifier` maps x to logits over N classes; `labels` holds the target class of each
    sample; `phi` scales the classifier's gradient (0.1 in the paper). `step_factor` is the c of

        x_{k+1} = x_k - c eta grad_x (log r_theta(x_k) - phi log p(y = n | x_k)) + nu xi_k

    Eq. 31 as printed has c = 2. Eq. 9 with KL's f'(r) = log r + 1 gives c = 1 (the gradient of
    f' is that of log r), and so do the authors' released class-conditional sampler, which made
    Fig. 6: c = 1 is the default; the composed model is then exactly the flow of Eq. 9 on the
    ratio r_theta(x) / p(y = n | x)^phi.
    """

    classifier: Callable[[Tensor], Tensor]
    labels: Tensor
    phi: float = 0.1
    step_factor: float = 1.0


def ratio_potential(net: nn.Module, divergence: Divergence, precision: Precision = FP32) -> Potential:
    """f'(r_theta(x)), the potential of Eq. 9, from the network output (float32)."""
    return lambda x: divergence.f_prime(precision.forward(net, x))


def conditional_potential(net: nn.Module, guidance: ClassGuidance,
                          precision: Precision = FP32) -> Potential:
    """c (log r_theta(x) - phi log p(y = n | x)) for an LR-KL model, whose output is log r (Eq. 31)."""

    def potential(x: Tensor) -> Tensor:
        log_p = F.log_softmax(precision.forward(guidance.classifier, x), dim=1)
        log_p_y = log_p.gather(1, guidance.labels.view(-1, 1)).squeeze(1)
        return guidance.step_factor * (precision.forward(net, x) - guidance.phi * log_p_y)  # Eq. 31

    return potential


def require_log_ratio(divergence: Divergence) -> None:
    """Eq. 31 composes log r_theta with log p(y | x): only an LR-KL model outputs log r and
    flows along grad log r."""
    if divergence.name != "kl":
        raise FdrlError(f"class-conditional flow (Eq. 31) needs an LR-KL model, whose output is "
                        f"log r, not one trained for {divergence.name!r}")


def trajectory(potential: Potential, x0: Tensor, params: FlowParams, noise: Noise) -> Iterator[Tensor]:
    """Yields x_1, ..., x_K of Eq. 9, each detached from the graph."""
    x = x0.detach()
    n, shape = x.shape[0], tuple(x.shape[1:])
    for _ in range(params.steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(potential(x).sum(), x)
        # Eq. 9
        x = (x.detach() - params.eta * grad + params.nu * noise.randn(n, shape)).detach()
        yield x


@contextmanager
def frozen(*modules: object, cache: bool = True) -> Iterator[None]:
    """Modules as fixed functions of x: no parameter gradients, eval mode, and (`cache`) each
    parametrized weight, such as spectral norm's W / sigma, computed once for the context."""
    mods = [m for m in modules if isinstance(m, nn.Module)]
    params = [p for m in mods for p in m.parameters() if p.requires_grad]
    training = [m.training for m in mods]
    for p in params:
        p.requires_grad_(False)
    for m in mods:
        m.eval()
    try:
        with parametrize.cached() if cache else nullcontext():
            yield
    finally:
        for p in params:
            p.requires_grad_(True)
        for m, was_training in zip(mods, training):
            m.train(was_training)


def flow(
    net: nn.Module,
    x0: Tensor,
    divergence: Divergence,
    params: FlowParams,
    noise: Noise,
    guidance: ClassGuidance | None = None,
    precision: Precision = FP32,
) -> Tensor:
    """Flows `x0` for `params.steps` steps of Eq. 9 (or Eq. 31 with `guidance`), the network in
    `precision`.

    `net` must be the unwrapped module (never a DDP wrapper): the flow needs no gradient
    synchronization. The result is detached; clamping is the caller's (Algorithm 2).
    """
    if guidance is None:
        potential = ratio_potential(net, divergence, precision)
    else:
        require_log_ratio(divergence)
        potential = conditional_potential(net, guidance, precision)
    x = x0.detach()
    with frozen(net, guidance.classifier if guidance else None):
        for x in trajectory(potential, x0, params, noise):
            pass
    return x


class DrawnNoise:
    """The flow's noise from a buffer of all K steps' draws: step k reads row k."""

    def __init__(self, draws: Tensor):
        self.draws, self.k = draws, 0

    def randn(self, n: int, shape: tuple[int, ...]) -> Tensor:
        draw = self.draws[self.k]
        self.k += 1
        return draw


class CapturedFlow:
    """`flow` without guidance, its K steps of Eq. 9 captured as one CUDA graph and replayed.

    On a GPU a flow step of a small network is some hundred short kernels whose launches, not
    their arithmetic, set the pace: one graph of the whole K-step loop, replayed, ran Table 3's
    CIFAR-10 ResNet's flow 3.6x faster at batch 64 on an H200, and no faster at batch 500,
    where the arithmetic sets the pace (bench/RESULTS.md). The trainer's flow (batch 64 per
    GPU) uses it on CUDA (TrainConfig.cuda_graph).

    The graph is captured at the first call (`fdrl.graphs.capture`; with `autotune`, the default,
    its convolutions are the fastest of cuDNN's algorithms for their shapes, timed during the
    warm-up). It reads x_0 and the K noise draws from buffers each call fills, the draws made from
    `noise` in the order the eager flow makes them, and the network's parameters and buffers where
    they lie, so an optimizer step between calls is seen; spectral norm's W / sigma is computed
    inside the graph, once per replay. It is captured again if the batch's shape changes or any
    parameter or buffer of `net` has moved to other memory.
    """

    def __init__(self, net: nn.Module, divergence: Divergence, params: FlowParams,
                 precision: Precision = FP32, autotune: bool = True):
        if params.steps < 1:
            raise ValueError("a captured flow needs at least one step")
        self.net, self.params, self.autotune = net, params, autotune
        self.potential = ratio_potential(net, divergence, precision)
        self.key: tuple | None = None

    def __call__(self, x0: Tensor, noise: Noise) -> Tensor:
        """x_K from `x0` (the result is the caller's; the graph's own buffer is not returned)."""
        n, shape = x0.shape[0], tuple(x0.shape[1:])
        draws = torch.stack([noise.randn(n, shape) for _ in range(self.params.steps)])
        key = (x0.shape, x0.dtype, x0.device,
               tuple(t.data_ptr() for t in (*self.net.parameters(), *self.net.buffers())))
        if key != self.key:
            self._capture(x0)
            self.key = key
        self.x0.copy_(x0)
        self.draws.copy_(draws)
        self.graph.replay()
        return self.x_last.clone()

    def _run(self) -> Tensor:
        """The flow from the buffers: what the graph holds."""
        with parametrize.cached():
            for x in trajectory(self.potential, self.x0, self.params, DrawnNoise(self.draws)):
                pass
        return x

    def _capture(self, x0: Tensor) -> None:
        self.graph = None  # frees the last graph's memory first
        self.x0 = x0.detach().clone()
        self.draws = x0.new_zeros((self.params.steps, *x0.shape))
        with frozen(self.net, cache=False):
            self.graph, self.x_last = capture(self._run, x0.device, autotune=self.autotune)


def captured_flow(net: nn.Module, divergence: Divergence, params: FlowParams,
                  precision: Precision = FP32, enabled: bool = True) -> CapturedFlow | None:
    """The training flow as a `CapturedFlow` where one applies (`enabled`, `net` on a CUDA
    device, K >= 1), else None: the eager `flow`."""
    on_cuda = next(net.parameters()).device.type == "cuda"
    if not (enabled and on_cuda and params.steps):
        return None
    return CapturedFlow(net, divergence, params, precision)

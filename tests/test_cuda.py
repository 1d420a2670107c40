"""What only a CUDA device can show: the flow, training, resuming and the Inception features
give there what they give on the CPU (tests marked `gpu`, skipped without CUDA; where a check
holds on every device, its test takes the `device` fixture instead and runs on both).

cuDNN convolves float32 in TF32 by default, and the CPU sums in another order, so CUDA and CPU
agree to about 1e-3 relative, not bitwise; the tolerances below are an order above that and
orders below what a wrong device, dtype or layout would give.
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml

from fdrl.checkpoint import load_checkpoint
from fdrl.config import load_config
from fdrl.divergences import pairing
from fdrl.flow import CapturedFlow, FlowParams, flow
from fdrl.nets import build_network
from fdrl.noise import GeneratorNoise
from fdrl.precision import Precision
from fdrl.prior_fit import fit_prior
from fdrl.sampling import Sampler
from fdrl.shards import shard
from fdrl.train import train

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def relative_error(a, b):
    return float((a.cpu() - b.cpu()).norm() / b.cpu().norm())


class DrawnOnCpu:
    """The draws of a CPU generator, moved to `device`: the same noise on both devices."""

    def __init__(self, seed, device):
        self.noise, self.device = GeneratorNoise(seed), device

    def randn(self, n, shape):
        return self.noise.randn(n, shape).to(self.device)

    def rand(self, n, shape):
        return self.noise.rand(n, shape).to(self.device)


@pytest.mark.parametrize("precision, tolerance", [(Precision("fp32"), 0.01),
                                                  (Precision("bf16", channels_last=True), 0.05)])
def test_a_cifar_flow_on_cuda_follows_the_flow_on_the_cpu(precision, tolerance):
    """Table 3's CIFAR-10 ResNet, with spectral norm, K = 5 steps of Eq. 9 from the same x_0
    with the same noise: the CUDA drift x_K - x_0 matches the CPU's in float32."""
    torch.manual_seed(0)
    net = build_network("resnet32", in_channels=3, spectral_norm=True).eval()
    on_cuda = precision.prepare(copy.deepcopy(net).to(CUDA))
    x0 = torch.rand(8, 3, 32, 32) * 2 - 1
    div, params = pairing("lsif-pearson").divergence, FlowParams(5, 3.0, 0.01)
    on_cpu = flow(net, x0, div, params, DrawnOnCpu(0, "cpu"))
    x = flow(on_cuda, x0.to(CUDA), div, params, DrawnOnCpu(0, CUDA), precision=precision)
    assert x.device.type == "cuda" and x.dtype == torch.float32
    assert relative_error(x - x0.to(CUDA), on_cpu - x0) < tolerance


@pytest.mark.parametrize("precision, tolerance", [(Precision("fp32"), 0.01),
                                                  (Precision("bf16", channels_last=True), 0.01)])
def test_a_captured_flow_is_the_eager_flow_and_reads_the_weights_in_place(precision, tolerance):
    """The trainer's flow on CUDA, K = 5 steps of Eq. 9 as one replayed graph, against the eager
    flow with the same noise: alike when captured; alike again after an Adam step changed the
    weights and spectral norm's vectors in place (a graph holding the weights of its capture
    would give the old flow, which differs by far more); alike for a batch of another size
    (captured again). Capturing leaves the parameters trainable."""
    torch.manual_seed(0)
    net = precision.prepare(build_network("resnet32", in_channels=3, spectral_norm=True).to(CUDA))
    div, params = pairing("lsif-pearson").divergence, FlowParams(5, 3.0, 0.01)
    captured = CapturedFlow(net, div, params, precision)

    def drifts(x0):
        eager = flow(net, x0, div, params, GeneratorNoise(1, CUDA), precision=precision)
        return eager - x0, captured(x0, GeneratorNoise(1, CUDA)) - x0

    x0 = torch.rand(8, 3, 32, 32, device=CUDA) * 2 - 1
    before, graphed = drifts(x0)
    assert relative_error(graphed, before) < tolerance
    assert all(p.requires_grad for p in net.parameters())
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-4)  # the drift moves by about 60%
    precision.forward(net, x0).mean().backward()
    optimizer.step()
    after, graphed = drifts(x0)
    assert relative_error(after, before) > 10 * tolerance
    assert relative_error(graphed, after) < tolerance
    smaller, graphed = drifts(x0[:3])
    assert graphed.shape == (3, 3, 32, 32) and relative_error(graphed, smaller) < tolerance


@pytest.mark.parametrize("process_setting", [False, True])
def test_a_captured_flow_is_the_eager_flow_with_or_without_autotuning(process_setting):
    """cuDNN's autotuning picks other convolution algorithms, not other values: a flow captured
    with it and one captured without it both give the eager flow (bf16 + channels-last, the
    trainer's precision here); capturing leaves the process's own setting as it was."""
    precision = Precision("bf16", channels_last=True)
    torch.manual_seed(0)
    net = precision.prepare(build_network("resnet32", in_channels=3, spectral_norm=True).to(CUDA))
    div, params = pairing("lsif-pearson").divergence, FlowParams(5, 3.0, 0.01)
    x0 = torch.rand(8, 3, 32, 32, device=CUDA) * 2 - 1
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = process_setting
        eager = flow(net, x0, div, params, GeneratorNoise(1, CUDA), precision=precision) - x0
        for autotune in (True, False):
            captured = CapturedFlow(net, div, params, precision, autotune=autotune)
            graphed = captured(x0, GeneratorNoise(1, CUDA)) - x0
            assert relative_error(graphed, eager) < 0.01, autotune
            assert torch.backends.cudnn.benchmark is process_setting
    finally:
        torch.backends.cudnn.benchmark = saved


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    shard("digits", "unused", root / "shards", shard_size=1000)
    fit_prior([str(root / "shards")], root / "prior.pt", device="cuda")
    return root


def digits_config(digits, folder, steps):
    cfg = {"data": str(digits / "shards"), "prior": "data", "prior_path": str(digits / "prior.pt"),
           "network": "resnet8", "steps": steps, "batch": 16, "flow_steps": 3, "sample_steps": 4,
           "precision": "bf16", "channels_last": True, "log_every": 2, "sample_every": 4,
           "checkpoint_every": 2, "keep_checkpoints": 0}
    path = folder / f"steps-{steps}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def test_a_run_on_cuda_resumes_there_and_samples_on_the_cpu(digits, tmp_path):
    """bf16 + channels-last training on CUDA: stopped at step 4 and resumed to 8, it ends where
    an unbroken run ends (cuDNN's backward may sum in another order: to 1e-3 of each tensor);
    its weights stay float32; the CPU loads and samples the run."""
    whole = train(digits_config(digits, tmp_path, 8), tmp_path / "whole", device="cuda")
    train(digits_config(digits, tmp_path, 4), tmp_path / "broken", device="cuda")
    resumed = train(digits_config(digits, tmp_path, 8), tmp_path / "broken", device="cuda")
    a, b = load_checkpoint(whole), load_checkpoint(resumed)
    assert a["step"] == b["step"] == 8
    for name, w in a["ema"].items():
        assert w.dtype == b["ema"][name].dtype
        scale = w.float().abs().max().clamp_min(1e-12)
        assert (w.float() - b["ema"][name].float()).abs().max() <= 1e-3 * scale, name
    assert all(w.dtype == torch.float32 for w in a["ema"].values() if w.is_floating_point())
    sampler = Sampler.load(tmp_path / "whole", torch.device("cpu"))
    images = sampler.generate([0, 1, 2])
    assert images.shape == (3, 1, 8, 8) and torch.isfinite(images).all()


def test_a_run_trains_alike_with_its_flow_captured_or_eager(digits, tmp_path):
    """The trainer's flow as one CUDA graph (`cuda_graph`, the default) and eager: the same EMA
    weights after 8 steps, to 1e-3 of each tensor, so each step's graph saw that step's weights,
    prior draws and noise."""
    cfg = digits_config(digits, tmp_path, 8)
    graphed = load_checkpoint(train(cfg, tmp_path / "graphed", device="cuda"))
    eager = load_checkpoint(train(dataclasses.replace(cfg, cuda_graph=False), tmp_path / "eager",
                                  device="cuda"))
    for name, w in graphed["ema"].items():
        scale = w.float().abs().max().clamp_min(1e-12)
        assert (w.float() - eager["ema"][name].float()).abs().max() <= 1e-3 * scale, name


def test_inception_features_on_cuda_equal_the_cpus(random_weights):
    """The three Inception backends (seeded random weights) on CUDA and on the CPU, float32 as
    the FID protocol has it, from the same uint8 images: the CUDA code path (preprocessing,
    devices, the TorchScript model) gives the CPU's features. TF32 off: rounded to 10 bits in
    each of Inception's many convolutions, the features would drift by an amount that grows with
    the depth, and a loose tolerance would hide the path's errors."""
    from fdrl.features import load_extractor

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32),
                                                                dtype=np.uint8))
    for backend in ("pytorch-fid", "torchvision-inception", "clean-fid"):
        on_cpu = load_extractor(backend, random_weights, "cpu")(images)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            on_cuda = load_extractor(backend, random_weights, "cuda")(images)
        assert on_cuda.device.type == "cuda" and on_cuda.dtype == torch.float32
        assert relative_error(on_cuda, on_cpu) < 1e-3, backend

"""Seconds per FDRL training step (Algorithm 1) for one network, batch, K and device, as JSON.

    python bench/train_step.py --network resnet32 --batch 64 --flow-steps 100 --device cuda
    python bench/train_step.py --network resnet8 --image-size 8 --channels 1 --batch 64 --flow-steps 100
    python bench/train_step.py --network mlp_digits --channels 1 --flow-steps 100 --precision bf16

Random data and a uniform prior: the step's cost does not depend on what the images show. The
step is exactly the trainer's (`fdrl.step.fdrl_step`: K flow steps on the unwrapped module, one
Adam step, the EMA update); one process, no DDP. Used to compare against the authors' code.
"""

from __future__ import annotations

import argparse
import json

import torch

from fdrl.divergences import pairing
from fdrl.ema import EMA
from fdrl.flow import FlowParams
from fdrl.nets import count_parameters
from fdrl.noise import GeneratorNoise
from fdrl.priors import UniformPrior
from fdrl.step import fdrl_step
import workload
from timing import seconds_per_call


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    workload.add_arguments(p)
    p.add_argument("--steps", type=int, default=10, help="timed steps" + workload.DEFAULT)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first" + workload.DEFAULT)
    args = p.parse_args()
    workload.check(p, args)
    return args


def main() -> None:
    args = parse()
    net, shape, precision, device = workload.build(args)
    ema, pair = EMA(net, workload.EMA_DECAY), pairing(args.pairing)
    optimizer = torch.optim.Adam(net.parameters(), lr=workload.LR)
    noise, prior = GeneratorNoise(0, device), UniformPrior(shape)
    params = FlowParams(args.flow_steps, workload.ETA, workload.NU)
    x_data = 2 * torch.rand((args.batch, *shape), device=device) - 1

    def step() -> None:
        fdrl_step(net, optimizer, pair, x_data, prior.sample(args.batch, noise), params, noise, ema,
                  precision)

    seconds = seconds_per_call(step, [()] * (args.warmup + args.steps), args.warmup, device)
    print(json.dumps({
        "network": args.network, "parameters": count_parameters(net), "image_shape": list(shape),
        "batch": args.batch, "flow_steps": args.flow_steps, "pairing": args.pairing,
        "spectral_norm": args.spectral_norm, "self_attention": args.self_attention,
        **precision.describe(), "device": str(device), "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda" else "cpu", "torch": torch.__version__, "threads":
        torch.get_num_threads(), "steps": args.steps, "seconds_per_step": seconds,
        "images_per_second": args.batch / seconds,
    }))


if __name__ == "__main__":
    main()

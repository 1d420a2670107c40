"""Seconds per flow of K steps (Eq. 9) three ways: eager, with `torch.compile` of the potential,
and (CUDA only) as one CUDA graph of the whole K-step loop; each result checked against eager.

    python bench/flow_capture.py --device cuda --network resnet32 --spectral-norm \
        --batch 64 --flow-steps 100 --precision bf16 --channels-last
    python bench/flow_capture.py --device cpu --network mlp_digits --channels 1 --batch 64 \
        --flow-steps 50 --ways eager,compile
    python bench/flow_capture.py --device cuda --spectral-norm --precision bf16 --channels-last \
        --ways eager,graph --no-cudnn-benchmark

The flow is the whole cost of FDRL (K steps per training step, K + kappa per sample), and a flow
step of a small network is many short kernels: on a GPU their launches, not their arithmetic, can
set the pace. `compile` runs `fdrl.flow.trajectory` on the potential compiled by inductor (forward
and, through AOTAutograd, its input gradient); `graph` is the trainer's `fdrl.flow.CapturedFlow`,
the K steps of `trajectory`, potential and Eq. 9 update alike, captured once and replayed. On CUDA,
cuDNN autotunes the convolutions (`--cudnn-benchmark`, the default, as the trainer's captured flow
does; for the eager ways the process's setting); with `--no-cudnn-benchmark`, cuDNN's heuristics
pick them. All three run the network as `fdrl.flow.flow` does (frozen: eval mode, spectral-norm
weights computed once per flow, no parameter gradients) in the given precision, from the same x_0
with the same noise, drawn for all K steps first. Rounds interleave the ways; the medians and the
cost of compiling or capturing are printed, then the JSON record.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import Tensor, nn

from fdrl.divergences import pairing
from fdrl.flow import CapturedFlow, DrawnNoise, FlowParams, frozen, ratio_potential, trajectory
from fdrl.io import write_text_atomic
from fdrl.nets import count_parameters
import workload
from timing import sync

WAYS = ("eager", "compile", "graph")


def last(net: nn.Module, potential, x0: Tensor, params: FlowParams, draws: Tensor) -> Tensor:
    """x_K of `trajectory`, `net` frozen as `fdrl.flow.flow` freezes it."""
    x = x0
    with frozen(net):
        for x in trajectory(potential, x0, params, DrawnNoise(draws)):
            pass
    return x


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    workload.add_arguments(p)
    p.add_argument("--rounds", type=int, default=5, help="timed flows per way" + workload.DEFAULT)
    p.add_argument("--ways", default=None,
                   help=f"comma-separated, of {', '.join(WAYS)} (default: all that the device runs)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                   help="on CUDA, cuDNN times its convolution algorithms and runs the fastest, "
                        "as the trainer's captured flow does" + workload.DEFAULT)
    p.add_argument("--json", help="also write the JSON record to this file")
    args = p.parse_args()
    workload.check(p, args)
    runnable = WAYS if args.device == "cuda" else WAYS[:2]
    args.ways = args.ways.split(",") if args.ways else list(runnable)
    if bad := [w for w in args.ways if w not in runnable]:
        p.error(f"--ways {bad[0]!r}: on {args.device} choose from {', '.join(runnable)}"
                + (" (a CUDA graph needs CUDA)" if bad[0] == "graph" else ""))
    return args


def main() -> None:
    args = parse()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    net, shape, precision, device = workload.build(args)
    params = FlowParams(args.flow_steps, workload.ETA, workload.NU)
    x0 = torch.rand((args.batch, *shape), device=device) * 2 - 1
    draws = torch.randn((args.flow_steps, args.batch, *shape), device=device)
    divergence = pairing(args.pairing).divergence
    potential = ratio_potential(net, divergence, precision)
    setup, flows = {}, {}
    for way in args.ways:
        sync(device)
        start = time.perf_counter()
        if way == "graph":
            captured = CapturedFlow(net, divergence, params, precision, args.cudnn_benchmark)
            flows[way] = lambda x, d: captured(x, DrawnNoise(d))
        else:
            fn = potential if way == "eager" else torch.compile(potential)
            flows[way] = lambda x, d, fn=fn: last(net, fn, x, params, d)
        flows[way](x0, draws)  # untimed: kernels picked (eager), compiled, or captured
        sync(device)
        setup[way] = time.perf_counter() - start
    seconds = {way: [] for way in args.ways}
    for _ in range(args.rounds):
        for way, run in flows.items():
            sync(device)
            start = time.perf_counter()
            run(x0, draws)
            sync(device)
            seconds[way].append(time.perf_counter() - start)
    reference = last(net, potential, x0, params, draws)
    drift = (reference - x0).norm()
    differs = {way: float((run(x0, draws) - reference).norm() / drift)
               for way, run in flows.items()}
    medians = {way: statistics.median(t) for way, t in seconds.items()}
    record = {
        "network": args.network, "parameters": count_parameters(net), "image_shape": list(shape),
        "spectral_norm": args.spectral_norm, "batch": args.batch, "flow_steps": args.flow_steps,
        "pairing": args.pairing, **precision.describe(), "device": str(device),
        "cudnn_benchmark": args.cudnn_benchmark if device.type == "cuda" else None,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds,
        "seconds_per_flow": seconds, "median_seconds_per_flow": medians,
        "seconds_per_flow_step": {w: m / max(1, args.flow_steps) for w, m in medians.items()},
        "setup_seconds": setup, "speedup_over_eager": {w: medians.get("eager", m) / m
                                                       for w, m in medians.items()},
        "drift_relative_difference_from_eager": differs,
    }
    for way in args.ways:
        print(f"{way:8s} {medians[way]:.4g} s per flow of {args.flow_steps} steps, "
              f"{record['speedup_over_eager'][way]:.3g}x eager; setup {setup[way]:.3g} s; "
              f"x_K - x_0 differs from eager's by {differs[way]:.2g} (relative)")
    text = json.dumps(record)
    if args.json:
        write_text_atomic(args.json, text + "\n")
    print(text)


if __name__ == "__main__":
    main()

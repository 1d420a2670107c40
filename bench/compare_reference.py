"""Seconds per FDRL training step (Algorithm 1), the authors' released code against ours.

    python bench/compare_reference.py --reference ~/src/FDRL --device cuda
    python bench/compare_reference.py --reference ~/src/FDRL --device cuda \
        --precisions fp32,fp32+cl,bf16,bf16+cl --json compare_cuda.json
    OMP_NUM_THREADS=2 python bench/compare_reference.py --reference ~/src/FDRL --device cpu \
        --batch 8 --flow-steps 5 --rounds 2 --steps 2 --sample-images 16

`--reference` is a checkout of the authors' code (github.com/ajrheng/FDRL, MIT). Their `src`
package is imported and their step is their train loop's body, done by their own functions: their
`flow`, two forwards of their model, their `get_loss`, Adam, their `EMAHelper.update`. Ours is
`fdrl.step.fdrl_step`, in each precision of `--precisions` on its own copy of the network, its
flow on CUDA one replayed CUDA graph as the trainer runs it (`--no-cuda-graph`: eager). Both
train the same Table 3 network (the same parameter shapes in the same order; theirs starts from
our initial weights) on the same U[-1, 1] data and prior draws, with the paper's CIFAR-10 settings
(eta 3, nu 0.01, Adam 1e-4, EMA 0.998). Spectral normalization is on by default, as in their
released CIFAR-10 config.

Rounds interleave the contenders (theirs, then ours in each precision), so a drift of the
machine's speed touches all alike; medians over rounds are compared. Then: the sampling
throughput of ours (Algorithm 2, eager) in the precision whose flow is fastest at the sampling
batch, which need not be the training step's fastest, and the FLOP floor, the FLOPs of one of our
steps over the device's measured matmul peak. The last line of stdout is the JSON record.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import importlib
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fdrl.divergences import Pairing, pairing
from fdrl.ema import EMA
from fdrl.errors import FdrlError
from fdrl.flow import FlowParams, captured_flow, flow
from fdrl.io import write_text_atomic
from fdrl.names import PAIRINGS, PRECISIONS
from fdrl.nets import build_network, count_parameters
from fdrl.noise import GeneratorNoise
from fdrl.precision import Precision
from fdrl.priors import UniformPrior
from fdrl.step import fdrl_step
from timing import seconds_per_call, sync
from workload import EMA_DECAY, ETA, LR, NU
# Our pairings as their config names them: (loss_function, f_divergence).
THEIR_PAIRINGS = {"lsif-pearson": ("LSIF", "Pearson"), "lr-kl": ("LR", "KL"),
                  "lr-js": ("LR", "JS"), "lr-logd": ("LR", "logD")}
# Our Table 3 networks as their get_model picks them: (img_size, model).
THEIR_NETWORKS = {"resnet32": (32, "resnet"), "resnet64": (64, "resnet"),
                  "resnet128": (128, "resnet"), "resnet64_shallow": (64, "resnetshallow")}
REFERENCE_MODULES = ("models", "model_utils", "ema")  # never their utils.py: it needs wandb
LAYOUTS = {"": False, "+cl": True}

Step = Callable[[Tensor, Tensor], object]


def parse_precisions(text: str) -> dict[str, Precision]:
    """`fp32,bf16+cl` as {label: Precision}; `+cl` asks for channels-last."""
    labels = {f"{dtype}{suffix}": Precision(dtype, cl) for dtype in PRECISIONS
              for suffix, cl in LAYOUTS.items()}
    chosen = [label.strip() for label in text.split(",")]
    if unknown := [label for label in chosen if label not in labels]:
        raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not one of {', '.join(labels)}")
    return {label: labels[label] for label in chosen}


def integer(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`."""

    def check(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return int(text)
    return check


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the device-dependent defaults filled in."""
    dflt = " (default: %(default)s)"
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", type=Path, required=True,
                   help="a checkout of the authors' FDRL code, which holds src/models.py")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   default="cuda" if torch.cuda.is_available() else "cpu", help=dflt)
    p.add_argument("--network", choices=list(THEIR_NETWORKS), default="resnet32", help=dflt)
    p.add_argument("--batch", type=integer(1), default=64, help="images per step" + dflt)
    p.add_argument("--flow-steps", type=integer(0), default=100, help="K" + dflt)
    p.add_argument("--pairing", choices=PAIRINGS, default="lsif-pearson", help=dflt)
    p.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=True,
                   help="on in their released CIFAR-10 config" + dflt)
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=True,
                   help="on CUDA, our flow as one CUDA graph, as the trainer runs it" + dflt)
    p.add_argument("--rounds", type=integer(1), default=3, help=">= 1" + dflt)
    p.add_argument("--steps", type=integer(1), default=5,
                   help="timed steps per contender and round" + dflt)
    p.add_argument("--warmup", type=integer(0), default=1,
                   help="untimed steps before them" + dflt)
    p.add_argument("--precisions", type=parse_precisions, default="fp32,bf16+cl",
                   help="ours', comma-separated: fp32, fp32+cl, bf16, bf16+cl (+cl: "
                        "channels-last)" + dflt)
    p.add_argument("--sample-steps", type=integer(1), default=120,
                   help="K + kappa of Algorithm 2" + dflt)
    p.add_argument("--sample-batch", type=integer(1), help="default: 256 on CUDA, 64 on CPU")
    p.add_argument("--sample-images", type=integer(1), help="default: one batch")
    p.add_argument("--matmul-size", type=integer(1), help="n of the n x n matmuls that time "
                   "the peak; default: 4096 on CUDA, 1024 on CPU")
    p.add_argument("--json", type=Path, help="also write the JSON record to this file")
    args = p.parse_args(argv)
    on_cuda = args.device == "cuda"
    args.sample_batch = args.sample_batch or (256 if on_cuda else 64)
    args.sample_images = args.sample_images or args.sample_batch
    args.matmul_size = args.matmul_size or (4096 if on_cuda else 1024)
    return args


def load_reference(path: Path) -> SimpleNamespace:
    """The authors' `src.models`, `src.model_utils` and `src.ema`, imported from checkout `path`."""
    root = path.expanduser().resolve()
    if not all((root / "src" / f"{name}.py").is_file() for name in REFERENCE_MODULES):
        raise FdrlError(f"--reference {path} is not a checkout of the authors' FDRL code: it must "
                        f"contain src/models.py, src/model_utils.py and src/ema.py")
    sys.path.insert(0, str(root))
    try:
        modules = {name: importlib.import_module(f"src.{name}") for name in REFERENCE_MODULES}
    except ImportError as err:
        raise FdrlError(f"importing the authors' code from {path} failed: {err}") from None
    finally:
        sys.path.remove(str(root))
    for module in modules.values():
        if not Path(module.__file__).resolve().is_relative_to(root):
            raise FdrlError(f"another package named src ({module.__file__}) shadows the one in "
                            f"{path}; run from a directory that does not hold one")
    return SimpleNamespace(**modules)


def build_networks(args: argparse.Namespace, ref: SimpleNamespace,
                   device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Their network and ours, on `device`: the same parameter shapes in the same order (else an
    FdrlError), theirs starting from our initial weights."""
    size, model = THEIR_NETWORKS[args.network]
    theirs = ref.models.get_model({"img_size": size, "n_channels": 3, "model": model,
                                   "self_attn": False, "spectral_norm": args.spectral_norm,
                                   "device": str(device)})
    ours = build_network(args.network, spectral_norm=args.spectral_norm, self_attention=False)
    if [p.shape for p in theirs.parameters()] != [p.shape for p in ours.parameters()]:
        raise FdrlError(f"their {type(theirs).__name__} ({count_parameters(theirs):,} parameters) "
                        f"and our {args.network} ({count_parameters(ours):,}) differ in the shapes "
                        f"of their parameters, so they are not the same network")
    with torch.no_grad():
        for a, b in zip(theirs.parameters(), ours.parameters()):
            a.copy_(b)
    return theirs.to(device), ours.to(device)


def their_step(ref: SimpleNamespace, net: nn.Module, args: argparse.Namespace) -> Step:
    """One iteration of their train loop's body, done by their functions."""
    loss_function, f_divergence = THEIR_PAIRINGS[args.pairing]
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, betas=(0.9, 0.999))
    ema = ref.ema.EMAHelper(mu=EMA_DECAY)
    ema.register(net)

    def step(x_data: Tensor, x_prior: Tensor) -> None:
        x_flow = ref.model_utils.flow(x_prior, net, args.flow_steps, ETA, NU, f_divergence)
        loss = ref.model_utils.get_loss(loss_function, net(x_flow), net(x_data))[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(net)

    return step


def our_step(net: nn.Module, precision: Precision, args: argparse.Namespace,
             device: torch.device) -> tuple[Step, EMA]:
    """Our trainer's step in `precision` on its own copy of `net`, and that copy's EMA."""
    model = precision.prepare(copy.deepcopy(net))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    ema, pair = EMA(model, EMA_DECAY), pairing(args.pairing)
    params, noise = FlowParams(args.flow_steps, ETA, NU), GeneratorNoise(1, device)
    captured = captured_flow(model, pair.divergence, params, precision, args.cuda_graph)

    def step(x_data: Tensor, x_prior: Tensor) -> None:
        fdrl_step(model, optimizer, pair, x_data, x_prior, params, noise, ema, precision, captured)

    return step, ema


def time_rounds(contenders: dict[str, Step], args: argparse.Namespace, shape: tuple[int, ...],
                device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each contender in each round, the contenders taking turns; all train
    on the same U[-1, 1] data and prior draws (a step's cost does not depend on what they show)."""
    noise, uniform = GeneratorNoise(0, device), UniformPrior(shape)
    batches = [(uniform.sample(args.batch, noise), uniform.sample(args.batch, noise))
               for _ in range(args.warmup + args.steps)]
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, step in contenders.items():
            times[name].append(seconds_per_call(step, batches, args.warmup, device))
        print(f"round {r + 1}/{args.rounds}, s/step: "
              + ", ".join(f"{name} {t[-1]:.4g}" for name, t in times.items()), flush=True)
    return times


def sampling_rate(nets: dict[str, nn.Module], args: argparse.Namespace, shape: tuple[int, ...],
                  device: torch.device) -> dict:
    """Images per second of Algorithm 2 (K + kappa flow steps, then the clamp), in the precision
    of `args.precisions` whose flow is fastest at the sampling batch (timed over a few steps
    each; `nets` holds each one's copy of the network)."""
    divergence = pairing(args.pairing).divergence
    noise, prior = GeneratorNoise(2, device), UniformPrior(shape)

    def generate(label: str, n: int, steps: int) -> Tensor:
        x0 = prior.sample(n, noise)
        params = FlowParams(steps, ETA, NU)
        return flow(nets[label], x0, divergence, params, noise,
                    precision=args.precisions[label]).clamp(-1, 1)

    probe = {label: seconds_per_call(generate, [(label, args.sample_batch, 3)] * 3, 1, device)
             for label in nets}  # the first call picks the kernels for this batch shape
    label = min(probe, key=probe.get)
    sync(device)
    start, done = time.perf_counter(), 0
    while done < args.sample_images:
        done += len(generate(label, min(args.sample_batch, args.sample_images - done),
                             args.sample_steps))
    sync(device)
    seconds = time.perf_counter() - start
    return {"precision": label, "seconds_per_3_steps": probe, "steps": args.sample_steps,
            "batch": args.sample_batch, "images": done, "seconds": seconds,
            "images_per_second": done / seconds, "seconds_for_50000": 50_000 * seconds / done}


class GlobalOnly(contextlib.nullcontext):
    """Stands in for FlopCounterMode's module tracker, which counts every FLOP as the model's
    alone ("Global"). The tracker hooks every module's inputs, and those hooks break
    torch.autograd.grad with respect to a leaf input, the flow's x_k (pytorch/pytorch#131753)."""

    parents = {"Global"}


def step_flops(net: nn.Module, pair: Pairing, x_data: Tensor, x_prior: Tensor,
               flow_steps: int) -> int:
    """FLOPs of one of our training steps on a copy of `net`: the K flow forwards and input
    gradients, and the loss's forward and backward over both batches. FlopCounterMode counts
    matmuls and convolutions only: the optimizer's and the EMA's elementwise work is left out."""
    model = copy.deepcopy(net)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = GlobalOnly()
    with counter:
        fdrl_step(model, optimizer, pair, x_data, x_prior, FlowParams(flow_steps, ETA, NU),
                  GeneratorNoise(0, x_data.device))
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, n: int, device: torch.device) -> float:
    """FLOP/s of n x n matmuls in `dtype`, the best of five timings."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    out = torch.mm(a, b)  # untimed: the first call picks and loads the kernel
    repeats, best = (20 if device.type == "cuda" else 1), math.inf
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b, out=out)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best


def device_info(device: torch.device) -> dict:
    """The device's name, and whether the CPU lists bf16 matmul units (None: no /proc/cpuinfo)."""
    fields: dict[str, str] = {}
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields["flags"].split()) if "flags" in fields else None
    cpu = fields.get("model name") or platform.processor()
    return {"device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
            "cpu": cpu,
            **{f: None if flags is None else f in flags for f in ("amx_bf16", "avx512_bf16")},
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def floor(net: nn.Module, args: argparse.Namespace, shape: tuple[int, ...], device: torch.device,
          medians: dict[str, float]) -> dict:
    """The FLOPs of one step over the faster measured matmul peak, and each median as a multiple."""
    noise, uniform = GeneratorNoise(3, device), UniformPrior(shape)
    x_data, x_prior = uniform.sample(args.batch, noise), uniform.sample(args.batch, noise)
    flops = step_flops(net, pairing(args.pairing), x_data, x_prior, args.flow_steps)
    peaks = {name: matmul_peak(dtype, args.matmul_size, device)
             for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    # The floor takes the faster peak: a CPU without bf16 units emulates bf16, slower than fp32.
    fastest = max(peaks, key=peaks.get)
    seconds = flops / peaks[fastest]
    return {"flops_per_step": flops, "matmul_size": args.matmul_size, "peak_flops": peaks,
            "floor_peak": fastest, "floor_seconds": seconds,
            "multiple_of_floor": {name: t / seconds for name, t in medians.items()}}


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark, as the JSON record."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FdrlError("--device cuda, but torch sees no CUDA device here; use --device cpu")
    ref = load_reference(args.reference)
    torch.manual_seed(0)
    theirs, ours = build_networks(args, ref, device)
    n = count_parameters(ours)
    print(f"{args.network}: {n:,} parameters in both, the same shapes in the same order",
          flush=True)
    shape = (3, THEIR_NETWORKS[args.network][0], THEIR_NETWORKS[args.network][0])
    contenders, emas = {"authors": their_step(ref, theirs, args)}, {}
    for label, precision in args.precisions.items():
        contenders[f"ours {label}"], emas[label] = our_step(ours, precision, args, device)
    times = time_rounds(contenders, args, shape, device)
    medians = {name: statistics.median(t) for name, t in times.items()}
    speedup = {label: medians["authors"] / medians[f"ours {label}"] for label in args.precisions}
    fastest = min(args.precisions, key=lambda label: medians[f"ours {label}"])
    sampling = sampling_rate({label: ema.module for label, ema in emas.items()}, args, shape,
                             device)
    settings = {k: v for k, v in vars(args).items()
                if k not in ("reference", "json", "precisions")}
    return {**device_info(device), "date": datetime.date.today().isoformat(),
            "reference": str(args.reference), **settings, "precisions": list(args.precisions),
            "eta": ETA, "nu": NU, "lr": LR, "ema": EMA_DECAY,
            "parameters": {"authors": count_parameters(theirs), "ours": n},
            "seconds_per_step": times, "median_seconds_per_step": medians,
            "speedup_authors_over_ours": speedup, "fastest_precision": fastest,
            "sampling": sampling,
            **floor(ours, args, shape, device, medians)}


def summary(r: dict) -> list[str]:
    """The record in a few lines for a person."""
    flags = ", ".join(f"{f} {'?' if r[f] is None else 'yes' if r[f] else 'no'}"
                      for f in ("amx_bf16", "avx512_bf16"))
    median, speedup = r["median_seconds_per_step"], r["speedup_authors_over_ours"]
    s, peaks = r["sampling"], r["peak_flops"]
    return [
        f"{r['device']} ({r['device_name']}), {flags}, torch {r['torch']}, {r['threads']} threads",
        f"{r['network']}, batch {r['batch']}, K {r['flow_steps']}, {r['pairing']}, spectral norm "
        f"{'on' if r['spectral_norm'] else 'off'}, our flow "
        f"{'one CUDA graph' if r['device'] == 'cuda' and r['cuda_graph'] else 'eager'}; "
        f"medians of {r['rounds']} rounds x "
        f"{r['steps']} steps",
        f"  authors      {median['authors']:.4g} s/step",
        *(f"  ours {label:<7} {median['ours ' + label]:.4g} s/step, speed-up {speedup[label]:.3g}x"
          for label in r["precisions"]),
        f"fastest of ours here: {r['fastest_precision']}",
        f"sampling ({s['precision']}, the fastest flow at its batch; K + kappa = {s['steps']}, "
        f"batch {s['batch']}): "
        f"{s['images_per_second']:.4g} images/s, 50,000 images in "
        f"{s['seconds_for_50000'] / 3600:.3g} h",
        f"FLOPs per step {r['flops_per_step'] / 1e9:.4g} G; matmul peak ({r['matmul_size']}^2) "
        f"bf16 {peaks['bf16'] / 1e9:.4g}, fp32 {peaks['fp32'] / 1e9:.4g} GFLOP/s; floor "
        f"{r['floor_seconds']:.3g} s at the {r['floor_peak']} peak",
        "step time / floor: "
        + ", ".join(f"{name} {m:.3g}x" for name, m in r["multiple_of_floor"].items()),
    ]


def main() -> None:
    args = parse()
    try:
        record = run(args)
    except FdrlError as err:
        raise SystemExit(f"compare_reference: error: {err}") from None
    print("\n".join(summary(record)))
    text = json.dumps(record)
    if args.json:
        write_text_atomic(args.json, text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""What a benchmark script times, from its command line: the network, its image shape, the
precision it runs in and the device (shared by train_step.py and flow_capture.py); and the
paper's CIFAR-10 flow and optimizer settings every benchmark uses."""

from __future__ import annotations

import argparse
from typing import NamedTuple

import torch
from torch import nn

from fdrl.config import TrainConfig
from fdrl.names import PAIRINGS, PRECISIONS
from fdrl.nets import IMAGE_NETWORKS, build_network
from fdrl.precision import Precision

DEFAULT = " (default: %(default)s)"
# The paper's CIFAR-10 settings (Appendix F), which are TrainConfig's defaults.
ETA, NU, LR, EMA_DECAY = TrainConfig.eta, TrainConfig.nu, TrainConfig.lr, TrainConfig.ema


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The network, batch, K, pairing, precision and device options."""
    p.add_argument("--network", choices=list(IMAGE_NETWORKS), default="resnet32", help=DEFAULT)
    p.add_argument("--image-size", type=int, help="default: the network's (Table 3)")
    p.add_argument("--channels", type=int, default=3, help=DEFAULT)
    p.add_argument("--spectral-norm", action="store_true")
    p.add_argument("--self-attention", action="store_true")
    p.add_argument("--batch", type=int, default=64, help="images" + DEFAULT)
    p.add_argument("--flow-steps", type=int, default=100, help="K" + DEFAULT)
    p.add_argument("--pairing", choices=PAIRINGS, default="lsif-pearson", help=DEFAULT)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=DEFAULT)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   default="cuda" if torch.cuda.is_available() else "cpu", help=DEFAULT)


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses --device cuda where torch sees no CUDA device."""
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device here; use --device cpu")


class Workload(NamedTuple):
    net: nn.Module
    shape: tuple[int, int, int]
    precision: Precision
    device: torch.device


def build(args: argparse.Namespace) -> Workload:
    """The network of `args` (seeded: the same weights every run) in its precision and layout,
    on its device."""
    device = torch.device(args.device)
    size = args.image_size or IMAGE_NETWORKS[args.network].image_size
    torch.manual_seed(0)
    precision = Precision(args.precision, args.channels_last)
    net = build_network(args.network, in_channels=args.channels, spectral_norm=args.spectral_norm,
                        self_attention=args.self_attention)
    return Workload(precision.prepare(net.to(device)), (args.channels, size, size), precision,
                    device)

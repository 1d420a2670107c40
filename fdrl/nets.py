"""Density-ratio estimators: the MLP of the 2-D experiments and the ResNets of Table 3.

Every network maps a batch to one scalar per sample, `h = NN(x)` of shape (B,): the ratio r
itself for LSIF, log r for LR. LeakyReLU(0.2) throughout (Appendix F). Spectral normalization
and self-attention are switches. The ResNets are built from the layer lists of Table 3, so the
table the code prints (`fdrl table table3`) is the structure the code runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from fdrl.errors import FdrlError

SLOPE = 0.2


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return _spectral_norm(module) if enabled else module


class MLP(nn.Module):
    """Input layer, `depth` hidden layers of width `width`, scalar output (2-D experiments)."""

    def __init__(self, in_dim: int = 2, width: int = 64, depth: int = 3, spectral_norm: bool = False):
        super().__init__()
        dims = [in_dim] + [width] * (depth + 1)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [_sn(nn.Linear(a, b), spectral_norm), nn.LeakyReLU(SLOPE)]
        layers.append(_sn(nn.Linear(width, 1), spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; `down` halves the resolution."""

    def __init__(self, c_in: int, c_out: int, down: bool, spectral_norm: bool):
        super().__init__()
        stride = 2 if down else 1
        self.conv1 = _sn(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), spectral_norm)
        self.conv2 = _sn(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), spectral_norm)
        self.shortcut = (
            _sn(nn.Conv2d(c_in, c_out, 1, stride, bias=False), spectral_norm)
            if down or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(x), SLOPE))
        return F.leaky_relu(out + self.shortcut(x), SLOPE)


class SelfAttention(nn.Module):
    """SAGAN self-attention over spatial positions, added through a gate initialized at 0."""

    def __init__(self, channels: int, spectral_norm: bool):
        super().__init__()
        inner = channels // 8
        self.query = _sn(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.key = _sn(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.value = _sn(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.out = _sn(nn.Conv2d(inner, channels, 1), spectral_norm)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q, k, v = (f(x).flatten(2).transpose(1, 2) for f in (self.query, self.key, self.value))
        attended = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, HW, C/8)
        return x + self.gate * self.out(attended.transpose(1, 2).reshape(b, -1, h, w))


# Table 3 as layer lists: (kind, channels, repeats). "attn" is present only with self-attention.
Layer = tuple[str, int, int]


@dataclass(frozen=True)
class ResNetSpec:
    """One column of Table 3 and the switches it uses by default."""

    image_size: int
    layers: tuple[Layer, ...]
    spectral_norm: bool = False
    self_attention: bool = False
    in_table3: bool = True


RESNETS: dict[str, ResNetSpec] = {
    "resnet32": ResNetSpec(32, (
        ("conv", 128, 1), ("res", 128, 3), ("attn", 128, 1),
        ("down", 256, 1), ("res", 256, 2), ("down", 256, 1), ("res", 256, 2),
        ("down", 256, 1), ("res", 256, 2),
    )),
    "resnet64": ResNetSpec(64, (
        ("conv", 64, 1), ("down", 64, 1), ("down", 128, 1), ("res", 128, 1), ("attn", 128, 1),
        ("down", 256, 1), ("res", 256, 1), ("down", 256, 1), ("res", 256, 1),
    )),
    "resnet128": ResNetSpec(128, (
        ("conv", 64, 1), ("down", 64, 1), ("down", 128, 1), ("attn", 128, 1),
        ("down", 128, 1), ("res", 128, 1), ("down", 256, 1), ("res", 256, 1),
        ("down", 256, 1), ("res", 256, 1),
    )),
    # Cat2dog: shallower to avoid overfitting 771 cats, with spectral norm and attention.
    "resnet64_shallow": ResNetSpec(64, (
        ("conv", 64, 1), ("down", 64, 1), ("down", 128, 1), ("attn", 128, 1),
        ("down", 128, 1), ("down", 256, 1),
    ), spectral_norm=True, self_attention=True),
    # Not in the paper: the 8x8 handwritten digits of the demo, in the style of the others.
    "resnet8": ResNetSpec(8, (
        ("conv", 64, 1), ("res", 64, 1), ("down", 128, 1), ("res", 128, 1), ("attn", 128, 1),
        ("down", 256, 1),
    ), in_table3=False),
}


class ResNet(nn.Module):
    """A Table 3 network: 3x3 conv, residual blocks, global mean pooling, dense to 1."""

    def __init__(self, spec: ResNetSpec, in_channels: int = 3, spectral_norm: bool | None = None,
                 self_attention: bool | None = None):
        super().__init__()
        sn = spec.spectral_norm if spectral_norm is None else spectral_norm
        attn = spec.self_attention if self_attention is None else self_attention
        self.layers = tuple(l for l in spec.layers if attn or l[0] != "attn")
        blocks: list[nn.Module] = []
        c = in_channels
        for kind, width, repeats in self.layers:
            for _ in range(repeats):
                if kind == "conv":
                    blocks += [_sn(nn.Conv2d(c, width, 3, 1, 1, bias=False), sn), nn.LeakyReLU(SLOPE)]
                elif kind == "attn":
                    blocks.append(SelfAttention(c, sn))
                else:
                    blocks.append(ResBlock(c, width, kind == "down", sn))
                c = width
        self.features = nn.Sequential(*blocks)
        self.dense = _sn(nn.Linear(c, 1), sn)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(self.features(x).mean(dim=(2, 3))).squeeze(-1)

    def describe(self) -> list[str]:
        """The layer list as Table 3 prints it."""
        names = {"conv": "3x3 Conv2d, {c}", "res": "ResBlock {c}", "down": "ResBlock Down {c}",
                 "attn": "Self Attention {c}"}
        lines = [(f"{n} x " if n > 1 else "") + names[k].format(c=c) for k, c, n in self.layers]
        return lines + ["Global Mean Pooling", "Dense -> 1"]


class ImageMLP(nn.Module):
    """An MLP over flattened images: the demo's estimator for the 8x8 digits (not in the paper;
    on a CPU a ResNet's K = 100 flow steps per training step cost 10x more)."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, width: int = 256, depth: int = 3,
                 spectral_norm: bool = False, self_attention: bool = False):
        super().__init__()
        if self_attention:
            raise FdrlError("the image MLP has no self-attention; set self_attention: false")
        self.mlp = MLP(in_channels * image_size**2, width, depth, spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x.flatten(1))


@dataclass(frozen=True)
class ImageNetwork:
    """An estimator for images: its resolution, default switches, and its constructor."""

    image_size: int
    spectral_norm: bool
    self_attention: bool
    build: Callable[..., nn.Module]  # (in_channels=, spectral_norm=, self_attention=)


IMAGE_NETWORKS: dict[str, ImageNetwork] = {
    **{name: ImageNetwork(s.image_size, s.spectral_norm, s.self_attention,
                          lambda spec=s, **kw: ResNet(spec, **kw)) for name, s in RESNETS.items()},
    "mlp_digits": ImageNetwork(8, False, False, ImageMLP),
}


def build_network(name: str, **kwargs) -> nn.Module:
    """An image network by name (one of IMAGE_NETWORKS: a Table 3 ResNet, or `mlp_digits`),
    with `in_channels=`, `spectral_norm=` and `self_attention=` as keyword arguments."""
    if name not in IMAGE_NETWORKS:
        raise FdrlError(f"unknown network {name!r}; choose one of {', '.join(IMAGE_NETWORKS)}")
    return IMAGE_NETWORKS[name].build(**kwargs)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable scalars (spectral norm's vectors u, v are buffers, not counted)."""
    return sum(p.numel() for p in net.parameters())

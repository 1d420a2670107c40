"""Exponential moving average of the estimator's weights, used for sampling (Appendix F)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """theta' <- m theta' + (1 - m) theta after every optimizer step; buffers are copied."""

    def __init__(self, net: nn.Module, decay: float = 0.998):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), net.parameters()):
            ema_p.lerp_(p, 1.0 - self.decay)
        for ema_b, b in zip(self.module.buffers(), net.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)

"""`fdrl sample`: Algorithm 2 with a trained run's EMA weights, addressed by seeds.

Prior draw and flow noise of image i come from a generator seeded by seed i alone
(`PerSampleNoise`), so image i is the same whatever the batch it is drawn in, the chunk it is
written to, or the number of processes (up to float32 rounding: the network's kernels may sum in
another order for another batch shape). Images are flowed K + kappa steps (Sec. 4.1), clamped to
[-1, 1], and written as a sample chunk (`fdrl.chunks`): uint8 NHWC images, their seeds, and the
run info that FID results and Table 1 carry on. The network runs in the run's precision and
layout (`fdrl.precision`) unless the caller names others; the run info records which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fdrl import distributed
from fdrl.checkpoint import load_final
from fdrl.chunks import write_chunk
from fdrl.config import build_model, build_prior, config_hash, make_config, run_precision
from fdrl.divergences import Divergence, pairing
from fdrl.errors import FdrlError
from fdrl.flow import FlowParams, flow, frozen, ratio_potential, trajectory
from fdrl.images import to_uint8
from fdrl.noise import InterpolationNoise, Noise, PerSampleNoise
from fdrl.precision import Precision
from fdrl.priors import Prior
from fdrl.progress import progress


def parse_seeds(text: str) -> list[int]:
    """`0-999`, `5`, `0-9,20,30-32` as a list of seeds (ranges inclusive)."""
    seeds = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise FdrlError(f"--seeds takes ranges and numbers like 0-999 or 0-9,20; not {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise FdrlError(f"--seeds {text!r} names no non-negative seed")
    return seeds


@dataclass
class Sampler:
    """A trained run, ready to flow prior samples: EMA network, prior, divergence, flow params
    and the precision the network runs in."""

    model: nn.Module
    prior: Prior
    divergence: Divergence
    params: FlowParams
    device: torch.device
    run_info: dict
    precision: Precision

    @classmethod
    def load(cls, run: str | os.PathLike, device: torch.device, steps: int | None = None,
             precision: str | None = None, channels_last: bool | None = None) -> "Sampler":
        """The run's final.pt; `steps` overrides K + kappa (Fig. 5 varies it), `precision` and
        `channels_last` the run's own (None keeps them)."""
        state = load_final(Path(run) / "final.pt", device)
        cfg = make_config(state["config"], f"{run}/final.pt")
        shape = tuple(state["image_shape"])
        own = run_precision(cfg)
        chosen = Precision(own.dtype if precision is None else precision,
                           own.channels_last if channels_last is None else channels_last)
        model = chosen.prepare(build_model(cfg, shape).to(device))
        model.load_state_dict(state["ema"])
        steps = cfg.sample_steps if steps is None else steps
        if steps < 0:
            raise FdrlError(f"--steps must not be negative, got {steps}")
        info = {"run": cfg.name or Path(run).name, "dataset": state["dataset"], "prior": cfg.prior,
                "pairing": cfg.pairing, "train_steps": int(state["step"]),
                "flow_steps": cfg.flow_steps, "steps": steps, "spectral_norm": cfg.spectral_norm,
                "config_hash": config_hash(state["config"]), **chosen.describe()}
        return cls(model.eval(), build_prior(cfg, shape, device), pairing(cfg.pairing).divergence,
                   FlowParams(steps, cfg.eta, cfg.nu), device, info, chosen)

    def prior_samples(self, seeds: list[int]) -> tuple[Tensor, PerSampleNoise]:
        """x_0 of each seed, and the noise that continues each seed's stream."""
        noise = PerSampleNoise(seeds, self.device)
        return self.prior.sample(len(seeds), noise), noise

    def _flow(self, n: int, noise: Noise) -> Tensor:
        x0 = self.prior.sample(n, noise)
        return flow(self.model, x0, self.divergence, self.params, noise,
                    precision=self.precision).clamp(-1, 1)

    def generate(self, seeds: list[int]) -> Tensor:
        """Algorithm 2 for these seeds: images in [-1, 1], (N, C, H, W)."""
        return self._flow(len(seeds), PerSampleNoise(seeds, self.device))

    def interpolate(self, seed_a: int, seed_b: int, points: int) -> Tensor:
        """Images along the spherical path in prior space from seed a's sample to seed b's (Fig.
        9): the prior draw and the flow noise are interpolated alike (`InterpolationNoise`), so
        the ends are exactly the images `generate` makes for the two seeds."""
        t = torch.linspace(0, 1, points)
        return self._flow(points, InterpolationNoise(seed_a, seed_b, t, self.device))

    def process(self, seeds: list[int], every: int) -> list[Tensor]:
        """x_0 and every `every`-th flow step up to K + kappa (Fig. 8), clamped for display."""
        x0, noise = self.prior_samples(seeds)
        frames = [x0]
        with frozen(self.model):
            potential = ratio_potential(self.model, self.divergence, self.precision)
            for k, x in enumerate(trajectory(potential, x0, self.params, noise), start=1):
                if k % every == 0 or k == self.params.steps:
                    frames.append(x.clamp(-1, 1))
        return frames


def sample(run: str | os.PathLike, seeds: list[int], out: str | os.PathLike, batch: int = 256,
           steps: int | None = None, device: str | None = None, precision: str | None = None,
           channels_last: bool | None = None) -> None:
    """Generates the images of `seeds` into the chunk `out`; under torchrun ranks split the seeds.
    `precision` / `channels_last` None: the run's own."""
    d = distributed.init(device)
    sampler = Sampler.load(run, d.device, steps, precision, channels_last)
    mine = seeds[d.rank::d.world_size]
    images = []
    with progress(len(mine), f"sample {sampler.run_info['run']}", "img", d.is_main) as bar:
        for i in range(0, len(mine), batch):
            images.append(to_uint8(sampler.generate(mine[i:i + batch])))
            bar.update(len(images[-1]))
    local = np.concatenate(images) if images else np.zeros((0, *_nhwc(sampler)), np.uint8)
    parts = [(mine, local)]
    if d.world_size > 1:
        parts = [None] * d.world_size
        torch.distributed.all_gather_object(parts, (mine, local))
    if d.is_main:
        all_seeds = np.concatenate([np.asarray(s, dtype=np.int64) for s, _ in parts])
        order = np.argsort(all_seeds, kind="stable")
        all_images = np.concatenate([im for _, im in parts])
        write_chunk(out, all_images[order], all_seeds[order], sampler.run_info)
    distributed.barrier()


def _nhwc(sampler: Sampler) -> tuple[int, int, int]:
    c, h, w = sampler.prior.shape
    return h, w, c

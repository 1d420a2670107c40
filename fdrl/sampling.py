"""`fdrl sample`: Algorithm 2 with a trained run's EMA weights, addressed by seeds.

Prior draw and flow noise of image i come from a generator seeded by seed i alone
(`PerSampleNoise`), so image i is the same whatever the batch it is drawn in, the chunk it is
written to, or the number of processes (up to float32 rounding: the network's kernels may sum in
another order for another batch shape). Images are flowed K + kappa steps (Sec. 4.1), clamped to
[-1, 1], and written as a sample chunk (`fdrl.chunks`): uint8 NHWC images, their seeds, and the
run info that FID results and Table 1 carry on. The network runs in the run's precision and
layout (`fdrl.precision`) unless the caller names others; the run info records which.

With a guide classifier (`fdrl.guides`) the flow is class-conditional (Eq. 31): seed i is
conditioned on class `classes[i % len(classes)]`, and the chunk stores that label with each
image. `write_generated` is the one place images of seeds are made over ranks and written,
for samples and for translations (`fdrl.translation`).

Fig. 5 samples the same seeds at several total flow lengths (`sample_lengths`): seed i's flow
of L steps is the first L steps of its longer flow (the same prior draw, the same noise
stream), so one flow of the longest length, its x_L clamped and kept at each length L, gives
every chunk at the cost of the longest alone, image for image the chunks separate flows make.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fdrl import distributed
from fdrl.checkpoint import load_final
from fdrl.chunks import write_chunk
from fdrl.config import build_model, build_prior, config_hash, make_config, run_precision
from fdrl.divergences import Divergence, pairing
from fdrl.errors import FdrlError
from fdrl.flow import (STEP_FACTORS, ClassGuidance, FlowParams, flow, frozen, ratio_potential,
                       require_log_ratio, trajectory)
from fdrl.guides import Guide, load_guide
from fdrl.images import to_uint8
from fdrl.noise import InterpolationNoise, Noise, PerSampleNoise
from fdrl.precision import Precision
from fdrl.priors import Prior
from fdrl.progress import progress


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """`0-999`, `5`, `0-9,20,30-32` as a list of seeds (ranges inclusive); `option` names the
    option in errors (seeds, classes and image indices are written alike)."""
    seeds = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            if sep and int(hi) < int(lo):
                raise FdrlError(f"{option} {text!r}: the range {part.strip()} runs backwards; "
                                f"write it {hi}-{lo}")
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise FdrlError(f"{option} takes ranges and numbers like 0-999 or 0-9,20; not {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise FdrlError(f"{option} {text!r} names no non-negative number")
    if len(set(seeds)) != len(seeds):
        raise FdrlError(f"{option} {text!r} names a number twice")
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
        try:
            model.load_state_dict(state["ema"])
        except RuntimeError as err:
            raise FdrlError(f"{run}/final.pt holds weights of another network than its config "
                            f"names ({str(err).strip().splitlines()[-1].strip()[:160]}); train "
                            "the run again (`fdrl train`)") from None
        steps = cfg.sample_steps if steps is None else steps
        if steps < 0:
            raise FdrlError(f"--steps must not be negative, got {steps}")
        info = {"run": cfg.name or Path(run).name, "dataset": state["dataset"], "prior": cfg.prior,
                "pairing": cfg.pairing, "train_steps": int(state["step"]),
                "flow_steps": cfg.flow_steps, "steps": steps, "spectral_norm": cfg.spectral_norm,
                "config_hash": config_hash(state["config"]),
                "data_manifest_sha256": (state.get("provenance") or {}).get("data_manifest_sha256"),
                **chosen.describe()}
        return cls(model.eval(), build_prior(cfg, shape, device), pairing(cfg.pairing).divergence,
                   FlowParams(steps, cfg.eta, cfg.nu), device, info, chosen)

    def prior_samples(self, seeds: list[int]) -> tuple[Tensor, PerSampleNoise]:
        """x_0 of each seed, and the noise that continues each seed's stream."""
        noise = PerSampleNoise(seeds, self.device)
        return self.prior.sample(len(seeds), noise), noise

    def flow_from(self, x0: Tensor, noise: Noise, guidance: ClassGuidance | None = None) -> Tensor:
        """Algorithm 2 from the given x_0: K + kappa steps, clamped to [-1, 1]."""
        return flow(self.model, x0, self.divergence, self.params, noise, guidance,
                    precision=self.precision).clamp(-1, 1)

    def generate(self, seeds: list[int], guidance: ClassGuidance | None = None) -> Tensor:
        """Algorithm 2 for these seeds: images in [-1, 1], (N, C, H, W); with `guidance`, the
        flow of Eq. 31 towards its labels."""
        x0, noise = self.prior_samples(seeds)
        return self.flow_from(x0, noise, guidance)

    def interpolate(self, seed_a: int, seed_b: int, points: int) -> Tensor:
        """Images along the spherical path in prior space from seed a's sample to seed b's (Fig.
        9): the prior draw and the flow noise are interpolated alike (`InterpolationNoise`), so
        the ends are exactly the images `generate` makes for the two seeds."""
        t = torch.linspace(0, 1, points)
        noise = InterpolationNoise(seed_a, seed_b, t, self.device)
        return self.flow_from(self.prior.sample(points, noise), noise)

    def generate_lengths(self, seeds: list[int], lengths: Sequence[int]) -> list[Tensor]:
        """Algorithm 2 for these seeds at each total flow length of `lengths` (none above this
        sampler's K + kappa), from one flow: each is what `generate` makes at that length."""
        x0, noise = self.prior_samples(seeds)
        kept = self._snapshots(x0, noise, set(lengths))
        return [kept[n] for n in lengths]

    def process(self, seeds: list[int], every: int, x0: Tensor | None = None) -> list[Tensor]:
        """x_0 (the seeds' prior samples, or the given images) and every `every`-th flow step up
        to K + kappa (Figs. 7, 8), clamped for display."""
        if x0 is None:
            x0, noise = self.prior_samples(seeds)
        else:
            noise = PerSampleNoise(seeds, self.device)
        last = self.params.steps
        kept = self._snapshots(x0, noise, {k for k in range(1, last + 1) if k % every == 0 or k == last})
        return [x0, *(kept[k] for k in sorted(kept))]

    def _snapshots(self, x0: Tensor, noise: Noise, at: set[int]) -> dict[int, Tensor]:
        """{k: x_k clamped to [-1, 1]} for each k in `at`, from one flow of max(at) steps."""
        if not at:
            return {}
        if max(at) > self.params.steps:
            raise FdrlError(f"flow length {max(at)} is beyond this sampler's {self.params.steps}")
        kept = {0: x0.clamp(-1, 1)} if 0 in at else {}
        params = FlowParams(max(at), self.params.eta, self.params.nu)
        with frozen(self.model):
            potential = ratio_potential(self.model, self.divergence, self.precision)
            for k, x in enumerate(trajectory(potential, x0, params, noise), start=1):
                if k in at:
                    kept[k] = x.clamp(-1, 1)
        return kept

    def guidance(self, guide: Guide, seeds: list[int], classes: list[int], phi: float,
                 step_factor: float) -> ClassGuidance:
        """Eq. 31's guidance of these seeds: seed i towards class classes[i % len(classes)]."""
        labels = torch.as_tensor(class_labels(seeds, classes), device=self.device)
        return ClassGuidance(guide.net, labels, phi, step_factor)


def class_labels(seeds, classes: list[int]) -> np.ndarray:
    """The class each seed is conditioned on: classes[seed % len(classes)]."""
    return np.asarray(classes, dtype=np.int64)[np.asarray(seeds, dtype=np.int64) % len(classes)]


def write_generated(d: distributed.Dist, outs: Sequence[tuple[str | os.PathLike, dict]],
                    seeds: list[int], make: Callable[[list[int]], Sequence[Tensor]], batch: int,
                    shape: tuple[int, int, int], labels: Callable[[np.ndarray], np.ndarray] | None,
                    desc: str) -> None:
    """Images `make(seeds)` (in [-1, 1]; one batch per chunk of `outs`, each a (path, run info))
    in batches, the seeds split over ranks; rank 0 writes each chunk, ordered by seed, with
    `labels(seeds)` if given."""
    mine = seeds[d.rank::d.world_size]
    images = [[] for _ in outs]
    with progress(len(mine), desc, "img", d.is_main) as bar:
        for i in range(0, len(mine), batch):
            for kept, made in zip(images, make(mine[i:i + batch]), strict=True):
                kept.append(to_uint8(made))
            bar.update(len(images[0][-1]))
    c, h, w = shape
    local = [np.concatenate(kept) if kept else np.zeros((0, h, w, c), np.uint8) for kept in images]
    parts = [(mine, local)]
    if d.world_size > 1:
        parts = [None] * d.world_size
        torch.distributed.all_gather_object(parts, (mine, local))
    if d.is_main:
        all_seeds = np.concatenate([np.asarray(s, dtype=np.int64) for s, _ in parts])
        order = np.argsort(all_seeds, kind="stable")
        for j, (out, run_info) in enumerate(outs):
            all_images = np.concatenate([im[j] for _, im in parts])
            write_chunk(out, all_images[order], all_seeds[order], run_info,
                        None if labels is None else labels(all_seeds[order]))
    distributed.barrier()


def sample(run: str | os.PathLike, seeds: list[int], out: str | os.PathLike, batch: int = 256,
           steps: int | None = None, device: str | None = None, precision: str | None = None,
           channels_last: bool | None = None, guide: str | os.PathLike | None = None,
           classes: list[int] | None = None, phi: float = 0.1, step_factor: float = 1.0) -> None:
    """Generates the images of `seeds` into the chunk `out`; under torchrun ranks split the seeds.
    `precision` / `channels_last` None: the run's own. With `guide`, class-conditional (Eq. 31)
    towards `classes` (default: all of the guide's), with `phi` and `step_factor`."""
    d = distributed.init(device)
    sampler = Sampler.load(run, d.device, steps, precision, channels_last)
    info, make, labels = sampler.run_info, sampler.generate, None
    if guide is not None:
        g = load_guide(guide, d.device)
        classes = list(range(g.num_classes)) if classes is None else classes
        info = {**info, "guidance": _check_guidance(sampler, g, classes, phi, step_factor)}

        def make(seeds: list[int]) -> Tensor:
            return sampler.generate(seeds, sampler.guidance(g, seeds, classes, phi, step_factor))

        def labels(seeds: np.ndarray) -> np.ndarray:
            return class_labels(seeds, classes)

    write_generated(d, [(out, info)], seeds, lambda s: [make(s)], batch, sampler.prior.shape,
                    labels, f"sample {info['run']}")


def sample_lengths(run: str | os.PathLike, seeds: list[int], out: str | os.PathLike,
                   lengths: Sequence[int],
                   batch: int = 256, device: str | None = None, precision: str | None = None,
                   channels_last: bool | None = None) -> None:
    """Generates the images of `seeds` at each total flow length K + kappa of `lengths` (Fig. 5),
    one chunk each at `out` with `{steps}` replaced by the length, from one flow of the longest
    (see the module docstring)."""
    out = str(out)
    if not lengths or len(set(lengths)) != len(lengths) or min(lengths) < 0:
        raise FdrlError(f"flow lengths {list(lengths)}: give distinct non-negative numbers")
    if len(lengths) > 1 and "{steps}" not in out:
        raise FdrlError(f"--out {out} names one chunk for {len(lengths)} flow lengths; put "
                        "{steps} in it where each chunk's length goes, e.g. steps-{steps}/chunk.npz")
    d = distributed.init(device)
    sampler = Sampler.load(run, d.device, max(lengths), precision, channels_last)
    outs = [(out.replace("{steps}", str(n)), {**sampler.run_info, "steps": n}) for n in lengths]
    write_generated(d, outs, seeds, lambda s: sampler.generate_lengths(s, lengths), batch,
                    sampler.prior.shape, None,
                    f"sample {sampler.run_info['run']} at {len(lengths)} flow lengths")


def _check_guidance(sampler: Sampler, guide: Guide, classes: list[int], phi: float,
                    step_factor: float) -> dict:
    """Refuses a guide, classes or settings the run cannot use; returns what the chunk records."""
    require_log_ratio(sampler.divergence)
    if guide.image_shape != sampler.prior.shape:
        raise FdrlError(f"the guide {guide.info['path']} takes images of shape {guide.image_shape}, "
                        f"the run {sampler.run_info['run']} makes {sampler.prior.shape}")
    guide.check_labels(classes)
    if not phi >= 0 or step_factor not in STEP_FACTORS:
        raise FdrlError(f"--phi must be non-negative and --step-factor one of "
                        f"{', '.join(f'{c:g}' for c in STEP_FACTORS)}; got {phi} and {step_factor}")
    return {**guide.info, "phi": phi, "step_factor": step_factor, "classes": classes}

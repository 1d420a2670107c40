"""FDRL training (Algorithm 1) from one CPU process to many GPUs: `fdrl train`.

    fdrl train --config RUN.yaml --out RUN_DIR                          # one process (CPU or GPU)
    torchrun --nproc_per_node 4 -m fdrl train --config RUN.yaml --out RUN_DIR    # one node
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-endpoint HOST:29500 -m fdrl train ...
    fdrl launch --nodes 2 --gpus-per-node 8 -- train --config RUN.yaml --out RUN_DIR  # SLURM

The weights do not depend on the number of processes (DESIGN.md sec. 9): the data batch, the
prior samples and the flow noise of global step t are drawn for the whole global batch from
generators seeded by (seed, t) and each rank keeps its rows (`TrainStream`, `SlicedNoise`), DDP
averages the gradient of equal slices, and nothing else consumes randomness. So a run resumed
from the checkpoint after step k continues exactly where it stopped, without replaying anything.

RUN_DIR receives config.yaml (the resolved config), metrics.jsonl (one JSON line per log
interval), samples/step-NNNNNN.png (EMA sample grids), checkpoints/step-NNNNNN.pt and final.pt.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fdrl.config import coerce, expected
from fdrl.divergences import pairing
from fdrl.errors import FdrlError

PRIORS = ("data", "uniform", "source")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the defaults are the paper's CIFAR10 settings (DESIGN.md sec. 3).

    Paths are taken as written (relative ones from the working directory). `prior` is `data`
    (the Gaussian of Eq. 8 read from `prior_path`, written by `fdrl fit-prior`), `uniform`
    (U[-1, 1]) or `source` (images of the shard folder `source`: the Cat2dog translation
    setting). `spectral_norm` / `self_attention` left empty take the network's Table 3 default;
    `lr_milestones` left empty decays x0.1 at steps - 20k and steps - 10k (those > 0).
    """

    data: str = ""
    name: str = ""
    prior: str = "data"
    prior_path: str = ""
    source: str = ""
    network: str = "resnet32"
    spectral_norm: bool | None = None
    self_attention: bool | None = None
    pairing: str = "lsif-pearson"
    steps: int = 100_000
    batch: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_milestones: tuple[int, ...] | None = None
    flow_steps: int = 100
    sample_steps: int = 120
    eta: float = 3.0
    nu: float = 0.01
    ema: float = 0.998
    flip: bool = True
    dequantization: float = 0.03
    seed: int = 0
    log_every: int = 100
    sample_every: int = 5000
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2

    def to_dict(self) -> dict:
        """Plain YAML/JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def config_from_mapping(mapping: object, source: str = "the config") -> TrainConfig:
    """A validated, resolved TrainConfig from a mapping; a bad key or value is an FdrlError."""
    if not isinstance(mapping, dict):
        raise FdrlError(f"{source} must be a mapping of keys to values, not {type(mapping).__name__}")
    hints = typing.get_type_hints(TrainConfig)
    values = {}
    for key, value in mapping.items():
        if key not in hints:
            raise FdrlError(f"unknown key {key!r} in {source}; valid keys: {', '.join(hints)}")
        try:
            values[key] = coerce(value, hints[key])
        except (ValueError, TypeError):
            raise FdrlError(f"{key}: {value!r} in {source} is not {expected(hints[key])}") from None
    cfg = TrainConfig(**values)
    validate(cfg, source)
    return resolve(cfg)


def load_config(path: str | os.PathLike | None, assignments: list[str] = ()) -> TrainConfig:
    """A run's YAML file (see TrainConfig) with `KEY=VALUE` overrides, validated and resolved.

    Each VALUE is read as YAML (`lr=1e-4`, `betas=[0.9,0.999]`, `spectral_norm=true`), so the
    workflow can describe a run entirely on the command line (`path` None).
    """
    import yaml

    mapping: object = {}
    if path is not None:
        if not os.path.isfile(path):
            raise FdrlError(f"no config file at {path}")
        try:
            mapping = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:
            raise FdrlError(f"{path} is not valid YAML ({err})") from None
    if not isinstance(mapping, dict):
        raise FdrlError(f"{path} must be a mapping of keys to values")
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise FdrlError(f"--set takes KEY=VALUE, not {assignment!r}")
        mapping[key] = yaml.safe_load(text)
    return config_from_mapping(mapping, str(path) if path else "the --set options")


def validate(cfg: TrainConfig, source: str = "the config") -> None:
    """Checks every value's range and the keys that depend on each other."""
    from fdrl.nets import IMAGE_NETWORKS

    def bad(key: str, why: str) -> FdrlError:
        return FdrlError(f"{key}: {getattr(cfg, key)!r} in {source} {why}")

    if not cfg.data:
        raise bad("data", "must name the shard folder of the training images")
    if cfg.prior not in PRIORS:
        raise bad("prior", f"is not one of {', '.join(PRIORS)}")
    if cfg.prior == "data" and not cfg.prior_path:
        raise bad("prior_path", "must name the prior.pt of `fdrl fit-prior` when prior is data")
    if cfg.prior == "source" and not cfg.source:
        raise bad("source", "must name the shard folder of the source domain when prior is source")
    if cfg.network not in IMAGE_NETWORKS:
        raise bad("network", f"is not one of {', '.join(IMAGE_NETWORKS)}")
    try:
        pairing(cfg.pairing)
    except FdrlError as err:
        raise FdrlError(f"pairing in {source}: {err}") from None
    if not all(math.isfinite(getattr(cfg, k)) for k in ("lr", "eta", "nu", "dequantization")):
        raise FdrlError(f"lr, eta, nu and dequantization in {source} must be finite")
    positive = ("steps", "batch", "lr", "eta", "log_every", "sample_every", "checkpoint_every")
    for key in positive:
        if not getattr(cfg, key) > 0:
            raise bad(key, "must be positive")
    for key in ("flow_steps", "sample_steps", "nu", "dequantization", "keep_checkpoints"):
        if not getattr(cfg, key) >= 0:
            raise bad(key, "must not be negative")
    if not all(0 <= b < 1 for b in cfg.betas):
        raise bad("betas", "must lie in [0, 1)")
    if not 0 <= cfg.ema < 1:
        raise bad("ema", "must lie in [0, 1)")
    ms = cfg.lr_milestones
    if ms is not None and (any(m <= 0 for m in ms) or list(ms) != sorted(set(ms))):
        raise bad("lr_milestones", "must be positive and strictly increasing")


def resolve(cfg: TrainConfig, run_dir: str | os.PathLike | None = None) -> TrainConfig:
    """Fills the defaults that depend on other keys (and the name from the run folder)."""
    from fdrl.nets import IMAGE_NETWORKS

    spec = IMAGE_NETWORKS[cfg.network]
    milestones = cfg.lr_milestones
    if milestones is None:  # the paper's decays at T - 20k and T - 10k
        milestones = tuple(m for m in (cfg.steps - 20_000, cfg.steps - 10_000) if m > 0)
    return dataclasses.replace(
        cfg,
        name=cfg.name or (Path(run_dir).name if run_dir else ""),
        spectral_norm=spec.spectral_norm if cfg.spectral_norm is None else cfg.spectral_norm,
        self_attention=spec.self_attention if cfg.self_attention is None else cfg.self_attention,
        lr_milestones=milestones,
    )


class SourcePrior:
    """Images of a source domain as q' (image-to-image translation, Sec. 5.3, Cat2dog).

    Row i takes a uniformly drawn image, flipped and dequantized like the data, all from the
    noise it is given: with `SlicedNoise` global row i is the same for any world size, and
    each rank decodes only its own rows.
    """

    def __init__(self, store: object, flip: bool, dequantization: float, device: torch.device):
        self.store, self.shape = store, tuple(store.shape)
        self.flip, self.dequantization, self.device = flip, dequantization, device

    def sample(self, n: int, noise: object) -> Tensor:
        u = noise.rand(n, (2,))
        index = (u[:, 0] * len(self.store)).long().clamp(max=len(self.store) - 1).cpu()
        images = np.stack([self.store.get(int(i)) for i in index])
        x = torch.from_numpy(images).to(self.device).float() / 127.5 - 1
        if self.flip:
            x = torch.where((u[:, 1] < 0.5)[:, None, None, None], x.flip(-1), x)
        return x + self.dequantization * noise.randn(n, self.shape)


def build_prior(cfg: TrainConfig, shape: tuple[int, ...], device: torch.device) -> object:
    """The prior q' the config names, checked against the data's image shape."""
    from fdrl.data import ShardStore
    from fdrl.priors import GaussianPrior, UniformPrior

    if cfg.prior == "uniform":
        return UniformPrior(shape)
    if cfg.prior == "data":
        prior, where = GaussianPrior.load(cfg.prior_path, device), cfg.prior_path
    else:
        store = ShardStore(cfg.source)
        prior, where = SourcePrior(store, cfg.flip, cfg.dequantization, device), cfg.source
    if tuple(prior.shape) != tuple(shape):
        raise FdrlError(f"the prior {where} is for images of shape {tuple(prior.shape)}, but the "
                        f"data {cfg.data} holds {tuple(shape)}")
    return prior


def save_grid(images: Tensor, path: str | os.PathLike, columns: int = 8, min_size: int = 32) -> None:
    """Images in [-1, 1], (N, C, H, W), as one PNG grid; small images are enlarged (nearest)."""
    from PIL import Image

    from fdrl.io import atomic_path

    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    scale = max(1, math.ceil(min_size / max(h, w)))
    x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    rows = math.ceil(n / columns)
    pad = torch.zeros((rows * columns - n, *x.shape[1:]), dtype=torch.uint8)
    x = torch.cat([x, pad]).view(rows, columns, c, h * scale, w * scale)
    grid = x.permute(0, 3, 1, 4, 2).reshape(rows * h * scale, columns * w * scale, c).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(grid[..., 0] if c == 1 else grid).save(tmp, format="PNG")


def train(cfg: TrainConfig, out: str | os.PathLike, resume: str = "auto",
          device: str | None = None) -> Path:
    """Trains `cfg` into the run folder `out` (see the module docstring); returns final.pt.

    `resume`: `auto` continues from the newest checkpoint in out/checkpoints (or starts fresh
    if there is none); `never` starts fresh and refuses a folder that already holds checkpoints.
    Works alike as one process and under torchrun or submitit (one process per device).
    """
    from fdrl import distributed
    from fdrl.trainer import Trainer

    if resume not in ("auto", "never"):
        raise FdrlError(f"--resume must be auto or never, not {resume!r}")
    validate(cfg)
    cfg = resolve(cfg, out)
    d = distributed.init(device)
    try:
        return Trainer(cfg, Path(out), d).run(resume)
    finally:
        distributed.shutdown()

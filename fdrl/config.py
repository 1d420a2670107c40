"""Typed settings: dataclasses whose defaults are the paper's values (docs/design.md#hyperparameters).

One path for every setting. A mapping (a YAML file, `--set KEY=VALUE` options whose VALUE is read
as YAML, or the resolved config a run stored) becomes a dataclass through `typed`, which names an
unknown key or a value of the wrong type. A training run's mapping goes through `make_config`,
which validates every value and fills the defaults that depend on other keys, once;
`build_model` and `build_prior` make the network and the prior q' a config names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from fdrl.data import ShardStore
from fdrl.divergences import pairing
from fdrl.errors import FdrlError
from fdrl.names import PRECISION_SETTINGS, PRIORS
from fdrl.precision import Precision
from fdrl.nets import IMAGE_NETWORKS, build_network
from fdrl.priors import GaussianPrior, Prior, SourcePrior, UniformPrior

T = TypeVar("T")


# --- typed values from YAML ---------------------------------------------------------------------

def coerce(value: object, kind: object) -> object:
    """`value` (as YAML reads it) as the field type `kind`; ValueError if it is not one.

    Numeric strings are numbers: PyYAML reads `1e-4` (no dot) as a string.
    """
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return coerce(value, kind)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise ValueError
        return tuple(coerce(v, args[0]) for v in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError
    if kind is str:
        if not isinstance(value, str):
            raise ValueError
        return value
    number = float(value)
    if kind is int:
        if not number.is_integer():
            raise ValueError
        return int(number)
    return number


_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"),
          bool: ("true or false", "booleans"), str: ("a string", "strings")}


def expected(kind: object) -> str:
    """A field type as a user reads it."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        return f"a list of {_NAMES[args[0]][1]} ([1, 2])"
    if type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return f"{expected(inner)} (or empty)"
    return _NAMES[kind][0]


def typed(cls: type[T], mapping: object, source: str) -> T:
    """The dataclass `cls` from a mapping of its field names to values; an unknown key or a
    value of the wrong type is an FdrlError naming it and `source`."""
    if not isinstance(mapping, dict):
        raise FdrlError(f"{source} must be a mapping of keys to values, not {type(mapping).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        if key not in hints:
            raise FdrlError(f"unknown key {key!r} in {source}; valid keys: {', '.join(hints)}")
        try:
            values[key] = coerce(value, hints[key])
        except (ValueError, TypeError):
            raise FdrlError(f"{key}: {value!r} in {source} is not {expected(hints[key])}") from None
    return cls(**values)


def parse_assignments(assignments: list[str]) -> dict:
    """`KEY=VALUE` strings as a mapping, each VALUE read as YAML (`lr=1e-4`, `betas=[0.9, 0.999]`,
    `flip=false`)."""
    import yaml

    values = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise FdrlError(f"--set takes KEY=VALUE, not {assignment!r}")
        try:
            values[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise FdrlError(f"--set {assignment!r}: {text!r} is not a YAML value (write lists as "
                            "[1, 2])") from None
    return values


def override(config: T, assignments: list[str]) -> T:
    """A copy of the dataclass `config` with each `KEY=VALUE` applied, typed and checked."""
    mapping = {**dataclasses.asdict(config), **parse_assignments(assignments)}
    return typed(type(config), mapping, "the --set options")


def help_text(config: object) -> str:
    """One line per field: name, type and default, for `--help`."""
    hints = typing.get_type_hints(type(config))
    lines = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        shown = json.dumps(list(value)) if isinstance(value, tuple) else value
        lines.append(f"  {field.name}={shown}  ({expected(hints[field.name])})")
    return "\n".join(lines)


def config_hash(config: dict) -> str:
    """A short fingerprint of a resolved config (12 hex digits of the SHA-256 of its sorted JSON):
    tables name the exact settings each computed row came from."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- a training run -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """One training run; the defaults are the paper's CIFAR10 settings.

    Paths are taken as written (relative ones from the working directory). `prior` is `data`
    (the Gaussian of Eq. 8 read from `prior_path`, written by `fdrl fit-prior`), `uniform`
    (U[-1, 1]) or `source` (images of the shard folder `source`: the Cat2dog translation
    setting). `spectral_norm` / `self_attention` left empty take the network's Table 3 default;
    `lr_milestones` left empty decays x0.1 at steps - 20k and steps - 10k (those > 0).
    `precision` (fp32, bf16, or auto: the faster of the two on the device, measured when
    training starts) and `channels_last` say how the network's forwards run (`fdrl.precision`);
    the run's config.yaml and final.pt record the precision it trained in, and a run may resume
    under another one, as on another device. `cuda_graph`: on a CUDA device, each training
    step's K-step flow is one replayed CUDA graph (`fdrl.flow.CapturedFlow`), which gives the
    eager flow's result with a fraction of its kernel launches; ignored on the CPU.
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
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graph: bool = True

    def to_dict(self) -> dict:
        """Plain YAML/JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def load_config(path: str | os.PathLike | None, assignments: list[str] = (), *,
                run_dir: str | os.PathLike | None = None, max_steps: int | None = None) -> TrainConfig:
    """A run's YAML file (see TrainConfig) with `KEY=VALUE` overrides, through `make_config`.

    With `path` None the `--set` options describe the whole run (as the workflow does).
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
    source = str(path) if path is not None else "the --set options"
    if not isinstance(mapping, dict):
        raise FdrlError(f"{source} must be a mapping of keys to values")
    return make_config({**mapping, **parse_assignments(assignments)}, source, run_dir=run_dir,
                       max_steps=max_steps)


def make_config(mapping: object, source: str = "the config", *,
                run_dir: str | os.PathLike | None = None, max_steps: int | None = None) -> TrainConfig:
    """The validated, resolved TrainConfig of a mapping: the one place both happen.

    `run_dir` names a run whose config has no `name`. `max_steps` stops training after that many
    steps in all, while the learning-rate schedule stays the full run's: the default decays are
    resolved from the config's `steps` first, and only then is `steps` replaced. Resolving a
    resolved config (as `final.pt` stores it) changes nothing.
    """
    cfg = typed(TrainConfig, mapping, source)
    _validate(cfg, source)
    if max_steps is not None and max_steps < 1:
        raise FdrlError(f"--max-steps must be positive, got {max_steps}")
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
        steps=cfg.steps if max_steps is None else max_steps,
    )


def _validate(cfg: TrainConfig, source: str) -> None:
    """Checks every value's range and the keys that depend on each other."""

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
    if cfg.precision not in PRECISION_SETTINGS:
        raise bad("precision", f"is not one of {', '.join(PRECISION_SETTINGS)}")
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


def build_model(cfg: TrainConfig, shape: tuple[int, ...]) -> nn.Module:
    """The density-ratio estimator a resolved config names, for images of `shape` (C, H, W)."""
    return build_network(cfg.network, in_channels=shape[0], spectral_norm=cfg.spectral_norm,
                         self_attention=cfg.self_attention)


def run_precision(cfg: TrainConfig) -> Precision:
    """How a trained run's network runs its forwards (its config holds the precision it trained
    in, never `auto`)."""
    return Precision(cfg.precision, cfg.channels_last)


def build_prior(cfg: TrainConfig, shape: tuple[int, ...], device: torch.device) -> Prior:
    """The prior q' the config names, checked against the image shape of its data."""
    if cfg.prior == "uniform":
        return UniformPrior(shape)
    if cfg.prior == "data":
        prior, where = GaussianPrior.load(cfg.prior_path, device), cfg.prior_path
    else:
        prior = SourcePrior(ShardStore(cfg.source), cfg.flip, cfg.dequantization, device)
        where = cfg.source
    if tuple(prior.shape) != tuple(shape):
        raise FdrlError(f"the prior {where} is for images of shape {tuple(prior.shape)}, but the "
                        f"data {cfg.data} holds {tuple(shape)}")
    return prior

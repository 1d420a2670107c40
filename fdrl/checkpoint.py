"""Training checkpoints and the exported sampling weights (docs/design.md#formats).

`RUN_DIR/checkpoints/step-000123.pt` is the state after 123 completed steps: the state_dicts of
the unwrapped model, the EMA, Adam and the learning-rate schedule, the step, the torch / numpy /
python (and CUDA) RNG states of every rank, the image shape and the resolved config. Everything
is a plain tensor or container, so files load with `torch.load(..., weights_only=True)` and
loading runs no code. Rank 0 writes each file to a temporary name and renames it (atomic), so a
run killed at any instant leaves only whole checkpoints. `RUN_DIR/final.pt` holds the EMA weights,
the image shape and the resolved config: what sampling needs, and nothing of the optimizer.
"""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from fdrl.errors import FdrlError
from fdrl.io import atomic_path, check_zip

FORMAT = 1
_NAME = re.compile(r"^step-(\d{6,})\.pt$")

# Keys of the resolved config that fix the network's parameter shapes.
ARCHITECTURE_KEYS = ("network", "spectral_norm", "self_attention")
# Keys a resumed run may change: they do not alter the trajectory of the weights (paths may
# move with the results folder; `steps` may grow to extend a run), or alter it only by rounding,
# as a move to another device does (`precision`, `channels_last`, `cuda_graph`).
RESUMABLE_KEYS = ("name", "data", "prior_path", "source", "steps", "sample_steps", "log_every",
                  "sample_every", "checkpoint_every", "keep_checkpoints", "precision",
                  "channels_last", "cuda_graph")


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint after `step` completed steps lives."""
    return Path(folder) / f"step-{step:06d}.pt"


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in `folder`, oldest first (temporary files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder)
             if (m := _NAME.match(name))]
    return sorted(found)


def prune(folder: str | os.PathLike, keep: int) -> None:
    """Deletes all but the newest `keep` checkpoints (`keep` = 0 keeps them all)."""
    if keep > 0:
        for _, path in list_checkpoints(folder)[:-keep]:
            path.unlink(missing_ok=True)


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """This process's torch, CUDA, numpy and python RNG states, as tensors."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, mt, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(gauss, dtype=torch.float64),
        "python": torch.tensor([version, *mt], dtype=torch.int64),
        "python_gauss": torch.tensor([] if gauss_next is None else [gauss_next], dtype=torch.float64),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    """Restores what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss = state["numpy_pos"].tolist()
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, pos, has_gauss, float(state["numpy_gauss"])))
    version, *mt = state["python"].tolist()
    gauss = state["python_gauss"].tolist()
    random.setstate((version, tuple(mt), gauss[0] if gauss else None))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng_states(device: torch.device) -> list[dict[str, Tensor]]:
    """Every rank's RNG states, in rank order (collective: call it on every rank)."""
    mine = rng_state(device)
    if not dist.is_initialized():
        return [mine]
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def save_checkpoint(path: str | os.PathLike, *, step: int, model: nn.Module, ema: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: object, rng: list[dict],
                    image_shape: tuple[int, ...], config: dict, provenance: dict) -> None:
    """Writes one checkpoint atomically (rank 0 only; `model` is the unwrapped module), with the
    `provenance` of its data and prior."""
    state = {
        "format": FORMAT,
        "step": step,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "image_shape": list(image_shape),
        "config": config,
        "provenance": provenance,
    }
    save_tensors(state, path)


def save_tensors(obj: object, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path` atomically (`fdrl.io.atomic_path`). Serialized in memory, then
    written: the file's bytes then depend on `obj` alone (saved to a path, torch names the
    archive's root folder after the file, here a temporary name with a PID), and a failed write
    is the OSError that says why (torch's writer reports any as "unexpected pos")."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())


def load_tensors(path: str | os.PathLike, what: str, fix: str,
                 map_location: torch.device | str = "cpu") -> object:
    """`torch.load(path, weights_only=True)`: tensors and plain containers, never code, after
    `check_zip`. Any failure (truncated, corrupt, empty, a pickled object) is one sentence naming
    the file, what it should have been, and `fix`."""
    try:
        check_zip(path)
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # every way a file can fail to load means the same to the user
        raise FdrlError(f"{path} is not a readable {what} ({reason(err)}); {fix}") from None


def reason(err: Exception) -> str:
    """An exception as a short parenthetical: its type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Reads a checkpoint written by `save_checkpoint`; never unpickles code."""
    state = load_tensors(path, "training checkpoint", "delete it to resume from the one before")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FdrlError(f"{path} is not an fdrl training checkpoint (format {FORMAT})")
    return state


def check_architecture(state: dict, config: dict, image_shape: tuple[int, ...], path: Path) -> None:
    """Refuses a checkpoint whose network or image shape differs from what `config` builds."""
    saved = state["config"]
    arch = [k for k in ARCHITECTURE_KEYS if saved.get(k) != config.get(k)]
    if arch or tuple(state["image_shape"]) != tuple(image_shape):
        was = ", ".join(f"{k}={saved.get(k)}" for k in ARCHITECTURE_KEYS)
        now = ", ".join(f"{k}={config.get(k)}" for k in ARCHITECTURE_KEYS)
        raise FdrlError(
            f"checkpoint {path} is from another architecture ({was}, images "
            f"{tuple(state['image_shape'])}); this config builds {now}, images {tuple(image_shape)}."
            " Train it in a new run folder")


def check_compatible(state: dict, config: dict, image_shape: tuple[int, ...], path: Path) -> None:
    """Refuses to resume a checkpoint whose network or training settings differ from `config`."""
    check_architecture(state, config, image_shape, path)
    saved = state["config"]
    changed = [k for k in config if k not in RESUMABLE_KEYS and saved.get(k) != config[k]]
    if changed:
        diff = "; ".join(f"{k}: {saved.get(k)!r} -> {config[k]!r}" for k in changed)
        raise FdrlError(f"checkpoint {path} was trained with other settings ({diff}); resume with "
                        "the same config, or start a new run from it with other settings: "
                        "`fdrl train --fork-from CHECKPOINT --out NEW_RUN_DIR`")


def check_provenance(state: dict, provenance: dict, path: Path) -> None:
    """Refuses to resume a checkpoint trained on other data or from another prior than the run
    names now (the SHA-256 of the shard manifest and of the prior)."""
    saved = state.get("provenance") or {}
    changed = [k for k, v in provenance.items() if saved.get(k) not in (None, v)]
    if changed:
        diff = "; ".join(f"{k} {saved[k][:12]}... -> {provenance[k] and provenance[k][:12]}..."
                         for k in changed)
        raise FdrlError(f"checkpoint {path} was trained on other data or from another prior "
                        f"({diff}); resume with the data and prior it was trained on, or train "
                        "in a new run folder")


def restore(state: dict, path: Path, model: nn.Module, ema: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: object | None) -> None:
    """Loads the state_dicts of a checkpoint (the schedule's only if `scheduler` is given); a
    mismatch of parameters is a clear error."""
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[:2]
        raise FdrlError(f"checkpoint {path} is from another architecture: "
                        f"{' '.join(first)}") from None
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])


def save_final(path: str | os.PathLike, *, ema: nn.Module, step: int,
               image_shape: tuple[int, ...], config: dict, dataset: str,
               provenance: dict) -> None:
    """Writes the sampling weights (EMA), the image shape, the training set's name, the resolved
    config and the provenance of the data and prior, atomically."""
    state = {"format": FORMAT, "step": step, "ema": ema.state_dict(),
             "image_shape": list(image_shape), "config": config, "dataset": dataset,
             "provenance": provenance}
    save_tensors(state, path)


def load_final(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """Reads `final.pt`: keys `ema` (state_dict), `step`, `image_shape`, `config`, `dataset`."""
    if not os.path.isfile(path):
        raise FdrlError(f"no trained weights at {path}: run `fdrl train` first")
    state = load_tensors(path, "final.pt", "train the run again (`fdrl train`)", device)
    if not isinstance(state, dict) or state.get("format") != FORMAT or "ema" not in state:
        raise FdrlError(f"{path} is not an fdrl final.pt (format {FORMAT}); train the run again "
                        "(`fdrl train`)")
    if "dataset" not in state:
        raise FdrlError(f"{path} was written by an older fdrl that did not record the training "
                        "set's name; train the run again")
    return state

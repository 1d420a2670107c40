"""FDRL training (Algorithm 1) from one CPU process to many GPUs: `fdrl train`.

    fdrl train --config RUN.yaml --out RUN_DIR                          # one process (CPU or GPU)
    torchrun --nproc_per_node 4 -m fdrl train --config RUN.yaml --out RUN_DIR    # one node
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-endpoint HOST:29500 -m fdrl train ...
    fdrl launch --nodes 2 --gpus-per-node 8 -- train --config RUN.yaml --out RUN_DIR  # SLURM

The weights do not depend on the number of processes (docs/design.md#distributed-execution): the
data batch, the prior samples and the flow noise of global step t are drawn for the whole global
batch from generators seeded by (seed, t) and each rank keeps its rows (`TrainStream`,
`SlicedNoise`), DDP averages the gradient of equal slices, and nothing else consumes randomness:
the global RNGs are seeded once, for the initialization. So a run resumed from the checkpoint
after step k continues exactly where it stopped, without replaying anything. The RNG states are
still saved per rank and restored on resume, so that any future consumer of the global RNGs
resumes exactly too.

RUN_DIR receives config.yaml (the resolved config), metrics.jsonl (one JSON line per log
interval), samples/step-NNNNNN.png (EMA sample grids), checkpoints/step-NNNNNN.pt and final.pt.
Rank 0 alone writes files and logs; the other ranks wait at a barrier. Rank 0 holds the run
folder's lock (`fdrl.runlock`) from start to end, so a second writer of the folder stops at once.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fdrl import checkpoint as ckpt
from fdrl import distributed
from fdrl.config import TrainConfig, build_model, build_prior, run_precision
from fdrl.data import ShardStore, TrainStream, load_manifest, manifest_sha256, verify
from fdrl.distributed import Dist, all_reduce_sum, barrier
from fdrl.divergences import pairing
from fdrl.ema import EMA
from fdrl.errors import FdrlError
from fdrl.flow import FlowParams, captured_flow, flow
from fdrl.images import save_grid
from fdrl.io import sha256, write_text_atomic
from fdrl.nets import count_parameters
from fdrl.noise import GeneratorNoise, SlicedNoise, key_seed
from fdrl.precision import Precision, fastest
from fdrl.progress import progress
from fdrl.runlock import requeue_wait, run_lock
from fdrl.step import fdrl_step

NOISE_STREAM, GRID_STREAM = 2, 3  # streams 0 and 1 of the seed are the data's (fdrl.data)
GRID_SIZE = 64
STATS = ("loss", "data_term", "flow_term", "ratio_data", "ratio_flow")


def seed_all(seed: int) -> None:
    """Seeds torch (CPU and CUDA), numpy and python: the network's initialization."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def provenance(cfg: TrainConfig) -> dict:
    """The SHA-256 of the run's shard manifest and of its prior (prior.pt, or the source
    domain's manifest), after checking every shard of both against its manifest: a swapped,
    truncated or edited shard stops the run before it reads a byte of it."""
    verify(cfg.data)
    prior = None
    if cfg.prior == "data":
        prior = sha256(cfg.prior_path) if os.path.isfile(cfg.prior_path) else None
    elif cfg.prior == "source":
        verify(cfg.source)
        prior = manifest_sha256(cfg.source)
    return {"data_manifest_sha256": manifest_sha256(cfg.data), "prior_sha256": prior}


class Meter:
    """Sums the global step statistics of one log interval."""

    def __init__(self) -> None:
        self.sums, self.count, self.seconds, self.lr = [0.0] * len(STATS), 0, 0.0, 0.0

    def add(self, values: list[float], lr: float, seconds: float) -> None:
        self.sums = [s + v for s, v in zip(self.sums, values)]
        self.count, self.seconds, self.lr = self.count + 1, self.seconds + seconds, lr

    def flush(self, step: int, batch: int) -> dict:
        """The interval's record (means over its steps), and a fresh interval."""
        n, secs = max(self.count, 1), max(self.seconds, 1e-12)
        record = {"step": step, **{k: s / n for k, s in zip(STATS, self.sums)}, "lr": self.lr,
                  "seconds_per_step": secs / n, "images_per_second": batch * n / secs}
        self.__init__()
        return record


class Trainer:
    """One run's model, EMA, optimizer, schedule, data and prior on one rank."""

    def __init__(self, cfg: TrainConfig, out: Path, d: Dist):
        self.cfg, self.out, self.d = cfg, out, d
        self.provenance = provenance(cfg)  # every rank checks the shards before reading them
        self.store = ShardStore(cfg.data)
        self.store.manifest.refuse_held_out("training")
        if cfg.prior == "source":
            load_manifest(cfg.source).refuse_held_out("training")
        self.shape = tuple(self.store.shape)
        self.stream = TrainStream(self.store, cfg.batch, d.rank, d.world_size, cfg.seed,
                                  cfg.flip, cfg.dequantization)
        self.prior = build_prior(cfg, self.shape, d.device)
        fitted_on = getattr(self.prior, "manifest_sha256", None)
        if fitted_on not in (None, self.provenance["data_manifest_sha256"]):
            raise FdrlError(f"the prior {cfg.prior_path} was fitted on other shards than the run's "
                            f"data {cfg.data}; refit it with `fdrl fit-prior --shards {cfg.data}`")
        self.pair = pairing(cfg.pairing)
        self.flow_params = FlowParams(cfg.flow_steps, cfg.eta, cfg.nu)
        seed_all(cfg.seed)
        self.model = build_model(cfg, self.shape).to(d.device)
        self.precision = self._precision()
        self.model = self.precision.prepare(self.model)
        self.ema = EMA(self.model, cfg.ema)
        self.captured = captured_flow(self.model, self.pair.divergence, self.flow_params,
                                      self.precision, cfg.cuda_graph)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, list(cfg.lr_milestones), gamma=0.1)
        self.config = {**cfg.to_dict(), "precision": self.precision.dtype}  # never `auto`
        self.checkpoints = out / "checkpoints"
        self.step = 0

    def _precision(self) -> Precision:
        """The config's precision; `auto` times one flow step of the run's network at this rank's
        batch on this device (`fastest`; on CUDA replayed as a graph if the flow will be), and
        every rank takes rank 0's choice."""
        if self.cfg.precision != "auto":
            return run_precision(self.cfg)
        chosen, seconds = fastest(self.model, (self.cfg.batch // self.d.world_size, *self.shape),
                                  self.d.device, self.cfg.channels_last, self.cfg.cuda_graph)
        times = ", ".join(f"{dtype} {s * 1e3:.2f} ms" for dtype, s in seconds.items())
        self.print0(f"fdrl train: precision auto -> {chosen.dtype} (one flow step here: {times})")
        return distributed.from_main(chosen)

    def print0(self, text: str) -> None:
        if self.d.is_main:
            print(text, flush=True)

    def run(self, resume: str, fork_from: Path | None = None) -> Path:
        """Resumes (per `resume`) or, in a folder without checkpoints, forks from `fork_from`;
        trains to `cfg.steps`, writes final.pt; returns its path."""
        if not self._resume(resume, fork_from) and fork_from is not None:
            self._fork(fork_from)
        self.print0(f"fdrl train: {self.cfg.name}: {self.cfg.network} "
                    f"({count_parameters(self.model):,} parameters), {self.cfg.pairing}, "
                    f"{self.precision.dtype}{' channels-last' if self.precision.channels_last else ''}, "
                    f"{self.d.world_size} x {self.d.device}, steps {self.step} -> {self.cfg.steps}")
        net = self.model
        if self.d.world_size > 1:
            ids = [self.d.device] if self.d.device.type == "cuda" else None
            net = DistributedDataParallel(self.model, device_ids=ids)
        if self.d.is_main:
            import yaml

            write_text_atomic(self.out / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
            _truncate_metrics(self.out / "metrics.jsonl", self.step)
        barrier()
        self._loop(net)
        if self.d.is_main:
            ckpt.save_final(self.out / "final.pt", ema=self.ema.module, step=self.step,
                            image_shape=self.shape, config=self.config,
                            dataset=self.store.manifest.dataset, provenance=self.provenance)
        barrier()
        return self.out / "final.pt"

    def _newest(self) -> tuple[int, Path | None]:
        """The newest checkpoint as rank 0 sees it, agreed by every rank."""
        found = ckpt.list_checkpoints(self.checkpoints)
        newest = [found[-1][0] if found else -1]
        if dist.is_initialized():
            dist.broadcast_object_list(newest, src=0)
        step = newest[0]
        return (step, ckpt.checkpoint_path(self.checkpoints, step)) if step >= 0 else (0, None)

    def _resume(self, mode: str, fork_from: Path | None) -> bool:
        """Continues from the folder's newest checkpoint, if any (then True). A forked run's
        checkpoints carry its origin: a `fork_from` given again must be that one."""
        step, path = self._newest()
        if path is None:
            return False
        if mode == "never":
            raise FdrlError(f"{self.out} already holds checkpoints up to step {step}: resume them "
                            "with --resume auto, or train in a new run folder")
        state = ckpt.load_checkpoint(path)
        ckpt.check_compatible(state, self.config, self.shape, path)
        ckpt.check_provenance(state, self.provenance, path)
        origin = state["config"].get("fork_from")
        if fork_from is not None and not _same_origin(origin, fork_from):
            raise FdrlError(f"{self.out} already holds checkpoints of its own, not forked from "
                            f"{fork_from}; resume it without --fork-from, or fork into a new run "
                            "folder")
        if origin is not None:
            self.config["fork_from"] = origin
        if state["step"] > self.cfg.steps:
            raise FdrlError(f"{path} is past the {self.cfg.steps} steps asked for; raise steps or "
                            "--max-steps, or train in a new run folder")
        ckpt.restore(state, path, self.model, self.ema, self.optimizer, self.scheduler)
        rng = state["rng"]
        if len(rng) == self.d.world_size:
            ckpt.set_rng_state(rng[self.d.rank], self.d.device)
        else:  # nothing consumes the global RNGs after the initialization (module docstring)
            self.print0(f"note: {path} was written by {len(rng)} processes, not "
                        f"{self.d.world_size}: the global RNG states are not restored")
        self.step = state["step"]
        self.print0(f"resuming {self.out} from {path}")
        return True

    def _fork(self, path: Path) -> None:
        """Starts this run from another run's checkpoint `path`: its weights, EMA, Adam moments
        and step, with this config's settings (lr, betas, milestones, flow, data, prior: the
        deliberate change a resume refuses); only the architecture must match. The schedule is
        this config's at that step. config.yaml and every checkpoint record the origin."""
        if not path.is_file():
            raise FdrlError(f"--fork-from {path}: no such file; name a checkpoint, "
                            "RUN_DIR/checkpoints/step-NNNNNN.pt")
        state = ckpt.load_checkpoint(path)
        ckpt.check_architecture(state, self.config, self.shape, path)
        step = state["step"]
        if step >= self.cfg.steps:
            raise FdrlError(f"--fork-from {path} is at step {step}, not before the {self.cfg.steps} "
                            "steps asked for; raise steps")
        ckpt.restore(state, path, self.model, self.ema, self.optimizer, None)
        lr = self.cfg.lr * 0.1 ** sum(m <= step for m in self.cfg.lr_milestones)
        for group in self.optimizer.param_groups:
            group.update(lr=lr, initial_lr=self.cfg.lr, betas=self.cfg.betas)
        schedule = self.scheduler.state_dict()
        self.scheduler.load_state_dict({**schedule, "last_epoch": step, "_last_lr": [lr]})
        self.config["fork_from"] = {"checkpoint": str(path), "sha256": sha256(path), "step": step}
        self.step = step
        self.print0(f"forking {self.out} from {path} (step {step}) with this config's settings")

    def _loop(self, net: torch.nn.Module) -> None:
        meter = Meter()
        with progress(self.cfg.steps, self.cfg.name or "train", "step", self.d.is_main,
                      initial=self.step) as bar:
            for t in range(self.step, self.cfg.steps):
                start = time.perf_counter()
                values, lr = self._train_step(net, t)
                self.step = t + 1
                meter.add(values, lr, time.perf_counter() - start)
                self._periodic(meter, bar)
                bar.update(1)

    def _train_step(self, net: torch.nn.Module, t: int) -> tuple[list[float], float]:
        """Algorithm 1 on global batch t; returns the global statistics and the lr used."""
        cfg, dev = self.cfg, self.d.device
        x_data = self.stream.batch(t).to(dev, non_blocking=True)
        # One generator per step for the prior draw and the K flow steps, global rows sliced.
        noise = SlicedNoise(key_seed(cfg.seed, NOISE_STREAM, t), cfg.batch, self.stream.local, dev)
        x_prior = self.prior.sample(len(x_data), noise)
        lr = self.optimizer.param_groups[0]["lr"]
        result = fdrl_step(net, self.optimizer, self.pair, x_data, x_prior, self.flow_params,
                           noise, self.ema, self.precision, self.captured)
        self.scheduler.step()
        stats = torch.stack([getattr(result, k).float() for k in STATS])
        values = (all_reduce_sum(stats) / self.d.world_size).tolist()  # equal slices: the global mean
        if not all(math.isfinite(v) for v in values):
            found = ckpt.list_checkpoints(self.checkpoints)
            kept = (f"the newest checkpoint, {found[-1][1]}, predates it" if found
                    else "no checkpoint was written")
            terms = ", ".join(f"{k} {v:.4g}" for k, v in zip(STATS, values))
            fix = (f"Start a new run from it with a lower lr or eta: `fdrl train --config RUN.yaml "
                   f"--fork-from {found[-1][1]} --set lr=... --out NEW_RUN_DIR`" if found else
                   "Train again with a lower lr or eta")
            raise FdrlError(f"the loss is not finite at step {t + 1} ({terms}); training stopped "
                            f"and {kept}. {fix}, or check the data")
        return values, lr

    def _periodic(self, meter: Meter, bar: object) -> None:
        s, cfg = self.step, self.cfg
        last = s == cfg.steps
        if s % cfg.log_every == 0 or last:
            record = meter.flush(s, cfg.batch)
            bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            if self.d.is_main:
                with open(self.out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
        if s % cfg.sample_every == 0 or last:
            self._grid()
        if s % cfg.checkpoint_every == 0 or last:
            self._checkpoint()

    def _grid(self) -> None:
        """Algorithm 2 with the EMA weights from fixed prior draws: samples/step-NNNNNN.png."""
        if self.d.is_main:
            cfg = self.cfg
            noise = GeneratorNoise(key_seed(cfg.seed, GRID_STREAM), self.d.device)
            x0 = self.prior.sample(GRID_SIZE, noise)
            x = flow(self.ema.module, x0, self.pair.divergence,
                     FlowParams(cfg.sample_steps, cfg.eta, cfg.nu), noise, precision=self.precision)
            save_grid(x.clamp(-1, 1), self.out / "samples" / f"step-{self.step:06d}.png")
        barrier()

    def _checkpoint(self) -> None:
        rng = ckpt.gather_rng_states(self.d.device)  # collective: every rank
        if self.d.is_main:
            ckpt.save_checkpoint(ckpt.checkpoint_path(self.checkpoints, self.step), step=self.step,
                                 model=self.model, ema=self.ema.module, optimizer=self.optimizer,
                                 scheduler=self.scheduler, rng=rng, image_shape=self.shape,
                                 config=self.config, provenance=self.provenance)
            ckpt.prune(self.checkpoints, self.cfg.keep_checkpoints)
        barrier()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops the records past `step` (written before a kill, redone after the resume)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short by the kill
    write_text_atomic(path, "".join(keep))


def _same_origin(origin: dict | None, path: Path) -> bool:
    """Whether a run forked from `origin` (its config's record) was forked from `path`: the
    same SHA-256, or the same name once the file is gone (pruned by its own run)."""
    if origin is None:
        return False
    if path.is_file():
        return sha256(path) == origin["sha256"]
    return str(path) == origin["checkpoint"]


def train(cfg: TrainConfig, out: str | os.PathLike, resume: str = "auto",
          device: str | None = None, fork_from: str | os.PathLike | None = None) -> Path:
    """Trains the resolved config `cfg` (`fdrl.config.make_config`) into the run folder `out`
    (see the module docstring); returns the path of final.pt.

    `resume`: `auto` continues from the newest checkpoint in out/checkpoints (or starts fresh
    if there is none); `never` starts fresh and refuses a folder that already holds checkpoints.
    `fork_from`: a checkpoint of another run to start from, with `cfg`'s settings, when `out`
    holds no checkpoint of its own (`Trainer._fork`).
    Works alike as one process and under torchrun or submitit (one process per device).
    """
    if resume not in ("auto", "never"):
        raise FdrlError(f"--resume must be auto or never, not {resume!r}")
    d = distributed.init(device)
    try:
        with _sole_writer(Path(out), d):
            return Trainer(cfg, Path(out), d).run(resume, None if fork_from is None else Path(fork_from))
    finally:
        distributed.shutdown()


@contextmanager
def _sole_writer(out: Path, d: Dist) -> Iterator[None]:
    """Rank 0 holds the run folder's lock (`fdrl.runlock`) while the block runs; if another
    process holds it, every rank stops with the same sentence."""
    with ExitStack() as stack:
        problem = None
        if d.is_main:
            try:
                stack.enter_context(run_lock(out, requeue_wait()))
            except FdrlError as err:
                problem = str(err)
        problem = distributed.from_main(problem)
        if problem:
            raise FdrlError(problem)
        yield

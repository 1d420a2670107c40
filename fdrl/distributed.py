"""One process-group helper for every launcher (docs/design.md#distributed-execution;
after EDM's torch_utils).

`init()` works alike under torchrun (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR set), inside a
SLURM job started by submitit (its environment exported first), and as one plain process (no
process group at all). The backend is NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank, the world size, and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and logs."""
        return self.rank == 0


def _export_submitit_env() -> None:
    """Inside a submitit job, export MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK."""
    if "SUBMITIT_EXECUTOR" in os.environ and "RANK" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def pick_device(device: str | None = None, local_rank: int = 0) -> torch.device:
    """`device` (cpu or cuda), by default cuda if available; a process's GPU is its local rank."""
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(kind, local_rank) if kind == "cuda" else torch.device(kind)


def init(device: str | None = None) -> Dist:
    """Joins the process group if launched as one; picks the device (`cuda` if available)."""
    _export_submitit_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return Dist(rank, world_size, local_rank, dev)


def barrier() -> None:
    """Waits for every rank (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sums `t` over ranks in place (no-op in a single process) and returns it."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (n_r, d) of `t`, concatenated in rank order, on every rank (itself in a
    single process). Ranks may hold different numbers of rows: each sends its rows padded to the
    largest count."""
    if not dist.is_initialized():
        return t
    world = dist.get_world_size()
    counts = [torch.zeros((), dtype=torch.int64, device=t.device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor(len(t), dtype=torch.int64, device=t.device))
    counts = [int(c) for c in counts]
    padded = t.new_zeros((max(counts), *t.shape[1:]))
    padded[:len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def from_main(obj: object) -> object:
    """Rank 0's `obj` on every rank (itself in a single process): one choice for all ranks."""
    if dist.is_initialized():
        objs = [obj]
        dist.broadcast_object_list(objs, src=0)
        return objs[0]
    return obj


def shutdown() -> None:
    """Leaves the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()

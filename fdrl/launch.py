"""`fdrl launch`: run any fdrl verb on several processes, locally or as a SLURM job.

    fdrl launch --gpus-per-node 8 -- train --config RUN.yaml --out RUN_DIR               # torchrun
    fdrl launch --launcher submitit --nodes 2 --gpus-per-node 8 --partition P --account A \\
        --time 2880 -- train --config RUN.yaml --out RUN_DIR                               # SLURM

torchrun starts one process per GPU (per `--nproc` on CPU) on this machine; where that is one
process, the verb runs in this one instead (torchrun would add only its own start-up: an agent
process importing torch, and a rendezvous, a few seconds a job). submitit submits one
job with one task per GPU on every node; each task joins the process group from submitit's
environment (`fdrl.distributed.init`). On preemption or time-out SLURM signals the job,
submitit requeues it, and the verb starts again: `fdrl train` resumes from its newest checkpoint
(`--resume auto`, its default), so nothing but the steps since that checkpoint is repeated.
The launcher is kept apart from the trainer: the trainer knows nothing of SLURM.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import submitit

from fdrl.errors import FdrlError


@dataclass(frozen=True)
class Resources:
    """What one launch asks for."""

    nodes: int = 1
    gpus_per_node: int = 0
    nproc: int = 1  # processes per node where there are no GPUs
    cpus_per_task: int = 4
    mem_gb: float = 32
    time_min: int = 60
    partition: str | None = None
    account: str | None = None
    max_requeues: int = 10

    @property
    def tasks_per_node(self) -> int:
        return self.gpus_per_node or self.nproc


class FdrlJob(submitit.helpers.Checkpointable):
    """One task of a submitit job: runs `main(ARGV)` in-process (`main`: the `fdrl` command's).

    `Checkpointable.checkpoint` resubmits the same call on preemption; the verb's own resume
    (the newest checkpoint on disk) does the rest, so the signal handler writes nothing itself.
    """

    def __init__(self, main: Callable[[list[str]], int], argv: list[str]):
        self.main, self.argv = main, argv

    def __call__(self) -> int:
        _forget_earlier_attempt()
        status = self.main(self.argv)
        if status:
            raise RuntimeError(f"`fdrl {' '.join(self.argv)}` exited with status {status}")
        return status


def _forget_earlier_attempt() -> None:
    """Deletes the result file that an earlier attempt of this requeued task left behind.

    When a job is requeued, rank 0 exits first and the other ranks fail on its closed
    connection; submitit records that failure as their result. The submitting process waits
    for every task's result file, so it could read such a stale error before the last attempt
    overwrites it, and report a job that succeeded as failed. Each attempt starts without one.
    """
    if "SUBMITIT_FOLDER" not in os.environ:  # not started by submitit's job runner
        return
    try:
        paths = submitit.JobEnvironment().paths
    except RuntimeError:  # no submitit environment after all
        return
    paths.result_pickle.unlink(missing_ok=True)


def torchrun(argv: list[str], res: Resources) -> int:
    """Runs `fdrl ARGV` under torchrun on this machine; returns its exit status."""
    if res.nodes != 1:
        raise FdrlError("torchrun launches on this machine only; use --launcher submitit for "
                        f"{res.nodes} nodes")
    # `--` keeps torchrun's parser off the verb's options: it would take `--run` for its own
    # `--run-path` (argparse prefix matching), and fail.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(res.tasks_per_node), "-m", "fdrl", "--", *argv]
    return subprocess.run(cmd).returncode


def submit(main: Callable[[list[str]], int], argv: list[str], res: Resources, folder: Path,
           cluster: str | None = None, wait: bool = True) -> int:
    """Submits `main(ARGV)` through submitit (SLURM, or `cluster="local"`); 0 if it succeeded."""
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                     slurm_max_num_timeout=res.max_requeues)
    params = dict(nodes=res.nodes, tasks_per_node=res.tasks_per_node, timeout_min=res.time_min,
                  cpus_per_task=res.cpus_per_task, mem_gb=res.mem_gb, name=f"fdrl-{argv[0]}")
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.partition:
        params["slurm_partition"] = res.partition
    if res.account:
        params["slurm_account"] = res.account
    executor.update_parameters(**params)
    job = executor.submit(FdrlJob(main, argv))
    print(f"submitted job {job.job_id}; logs in {folder}", flush=True)
    if not wait:
        return 0
    try:
        job.results()
    except Exception as err:  # submitit re-raises the task's failure with its log excerpt
        print(f"job {job.job_id} failed: {err}", file=sys.stderr)
        return 1
    return 0


def launch(main: Callable[[list[str]], int], argv: list[str], res: Resources, launcher: str,
           folder: Path | None, cluster: str | None = None, wait: bool = True) -> int:
    """Runs `fdrl ARGV` with `launcher`: torchrun starts `python -m fdrl ARGV` per process (one
    process: `main(ARGV)` here); submitit runs `main(ARGV)` in each task (`main` is the `fdrl`
    command's entry point)."""
    if not argv or argv[0] == "launch":
        raise FdrlError("name the fdrl verb to launch after `--`, e.g. `fdrl launch -- train ...`")
    if launcher == "torchrun":
        alone = res.nodes == 1 and res.tasks_per_node == 1
        return main(argv) if alone else torchrun(argv, res)
    return submit(main, argv, res, folder or Path(os.getcwd()) / "submitit", cluster, wait)

"""`fdrl launch --launcher submitit` on a real SLURM cluster: a 2-task gloo DDP training job gives
torchrun's weights, and a job interrupted twice (a preemption signal, then `scontrol requeue`)
resumes from its newest checkpoint each time and still ends with the uninterrupted weights."""

import os
import re
import subprocess
import sys
import time

import pytest

from slurm_helpers import PARTITION, assert_same_weights, fdrl, train_args

pytestmark = pytest.mark.slurm

# One task per process, little memory: the test cluster is one node of 2 CPUs.
SLURM_LAUNCH = ["launch", "--launcher", "submitit", "--cluster", "slurm", "--nproc", "2",
                "--cpus-per-task", "1", "--mem-gb", "2", "--time", "20", "--partition", PARTITION]


def torchrun(args):
    """`torchrun --standalone --nproc_per_node 2 -m fdrl -- ARGS` (`--` keeps torchrun's parser
    off the verb's options); the finished process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fdrl", "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def task_logs(folder, job_id):
    """submitit's stdout of each task of the job, rank order (every attempt appends to it)."""
    return [(folder / f"{job_id}_{rank}_log.out").read_text() for rank in range(2)]


def test_submitit_slurm_job_equals_torchrun(digits_prior, tmp_path):
    ref = torchrun(train_args(digits_prior, tmp_path / "torchrun"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    jobs = tmp_path / "jobs"
    proc = fdrl(*SLURM_LAUNCH, "--folder", str(jobs), "--",
                *train_args(digits_prior, tmp_path / "slurm"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = re.search(r"submitted job (\d+)", proc.stdout)[1]
    assert_same_weights(tmp_path / "torchrun" / "final.pt", tmp_path / "slurm" / "final.pt")
    logs = task_logs(jobs, job_id)  # two SLURM tasks ran; rank 0 alone reported
    assert all("Job completed successfully" in log for log in logs)
    assert ["fdrl train:" in log for log in logs] == [True, False]


def newest_checkpoint(run):
    steps = [int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.pt")]
    return max(steps, default=-1)


def wait_for_checkpoint(run, at_least, launcher, timeout=300):
    """Waits until `run` holds a checkpoint of step >= at_least; returns that step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = newest_checkpoint(run)
        if step >= at_least:
            return step
        assert not (run / "final.pt").exists(), "the run ended before it could be interrupted"
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of step >= {at_least} in {run} after {timeout} s")


def test_interrupted_job_resumes_and_equals_an_uninterrupted_run(digits_prior, tmp_path):
    # Checkpoints every 40 steps, and long enough (about 15 s of training on 2 CPUs) to be
    # interrupted twice early on: after `scontrol requeue` the tasks run on for SLURM's KillWait
    # (5 s on the test cluster) before they are killed, and must not finish meanwhile.
    steps = 600
    changes = dict(steps=steps, batch=8, flow_steps=20, checkpoint_every=40, log_every=40,
                   sample_every=steps, lr_milestones="[400,500]")
    ref = torchrun(train_args(digits_prior, tmp_path / "uninterrupted", **changes))
    assert ref.returncode == 0, ref.stderr[-3000:]

    jobs, run, job_id = tmp_path / "jobs", tmp_path / "interrupted", None
    launcher = subprocess.Popen(
        [sys.executable, "-m", "fdrl", *SLURM_LAUNCH, "--folder", str(jobs), "--",
         *train_args(digits_prior, run, **changes)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        first = launcher.stdout.readline()  # "submitted job ID; logs in FOLDER"
        submitted = re.match(r"submitted job (\d+)", first)
        assert submitted, first + launcher.communicate()[1][-3000:]
        job_id = submitted[1]
        # 1. Preemption as SLURM signals it: SIGTERM, then submitit's USR2. Rank 0 checkpoints
        #    the call (FdrlJob.checkpoint) and requeues the job with `scontrol requeue`.
        stop1 = wait_for_checkpoint(run, 40, launcher)
        for signal in ("TERM", "USR2"):
            subprocess.run(["scancel", f"--signal={signal}", job_id], check=True, timeout=60)
        # 2. An administrator's (or a preempting job's) requeue, once the second attempt has
        #    written a checkpoint of its own (the first left at most stop1 + 40).
        stop2 = wait_for_checkpoint(run, stop1 + 80, launcher)
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)
        out, err = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if launcher.returncode != 0 and job_id:
            subprocess.run(["scancel", job_id], timeout=60)
    assert launcher.returncode == 0, out[-3000:] + err[-3000:]

    restarts = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                              text=True, timeout=60).stdout
    assert "Restarts=2" in restarts, restarts
    rank0 = task_logs(jobs, job_id)[0]
    resumed = [int(s) for s in re.findall(r"resuming \S+ from \S+step-(\d+)\.pt", rank0)]
    assert len(resumed) == 2 and stop1 <= resumed[0] < stop2 <= resumed[1] < steps, rank0[-3000:]
    assert_same_weights(tmp_path / "uninterrupted" / "final.pt", run / "final.pt")

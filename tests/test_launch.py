"""`fdrl launch`: torchrun on this machine, and a 2-task job through submitit's local executor
(the executor that stands in for SLURM here); both must give the single-process result."""

import os
import subprocess
import sys

import pytest
import torch

from fdrl.shards import shard


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    shard("digits", "unused", out, shard_size=400)
    return out


def fdrl(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fdrl", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def fit(digits, out, *launch):
    args = ["fit-prior", "--shards", str(digits), "--out", str(out / "prior.pt"),
            "--moments-out", str(out / "m.pt"), "--device", "cpu"]
    proc = fdrl("launch", *launch, "--", *args) if launch else fdrl(*args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return torch.load(out / "m.pt", weights_only=True)


@pytest.mark.parametrize("launch", [
    ["--nproc", "2"],
    ["--launcher", "submitit", "--cluster", "local", "--nproc", "2"],
], ids=["torchrun", "submitit-local"])
def test_two_processes_give_the_single_process_result(digits, tmp_path, launch):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = fit(digits, tmp_path / "one")
    folder = ["--folder", str(tmp_path / "jobs")] if "submitit" in launch else []
    double = fit(digits, tmp_path / "two", *launch, *folder)
    assert int(double["count"]) == 1498
    torch.testing.assert_close(double["covariance"], single["covariance"], rtol=1e-12, atol=1e-14)
    if folder:  # two tasks ran, rank 0 alone reported
        logs = sorted((tmp_path / "jobs").glob("*_log.out"))
        assert len(logs) == 2
        assert sum("written to" in log.read_text() for log in logs) == 1


def test_one_process_runs_the_verb_here_without_torchrun(monkeypatch):
    from fdrl import launch as launching

    monkeypatch.setattr(launching, "torchrun", lambda argv, res: pytest.fail("torchrun started"))
    calls = []
    one = launching.Resources()
    assert launching.launch(lambda argv: calls.append(argv) or 3, ["sample", "--x"], one,
                            "torchrun", None) == 3
    assert launching.launch(lambda argv: calls.append(argv) or 0, ["train"],
                            launching.Resources(gpus_per_node=1), "torchrun", None) == 0
    assert calls == [["sample", "--x"], ["train"]]
    monkeypatch.setattr(launching, "torchrun", lambda argv, res: res.tasks_per_node)
    assert launching.launch(pytest.fail, ["train"], launching.Resources(nproc=2), "torchrun",
                            None) == 2


def test_launch_needs_a_verb():
    proc = fdrl("launch", "--nproc", "2")
    assert proc.returncode == 1 and "name the fdrl verb" in proc.stderr


def train_args(digits, out):
    prior = out.parent / "prior.pt"
    if not prior.exists():
        assert fdrl("fit-prior", "--shards", str(digits), "--out", str(prior), "--device", "cpu").returncode == 0
    sets = {"data": digits, "prior": "data", "prior_path": prior, "network": "mlp_digits",
            "steps": 4, "batch": 8, "flow_steps": 3, "sample_steps": 3, "log_every": 2,
            "sample_every": 4, "checkpoint_every": 2}
    return ["train", "--out", str(out), "--device", "cpu",
            *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]


def test_submitit_training_job_equals_torchrun(digits, tmp_path):
    via_torchrun = fdrl("launch", "--nproc", "2", "--", *train_args(digits, tmp_path / "a"))
    assert via_torchrun.returncode == 0, via_torchrun.stderr[-2000:]
    via_submitit = fdrl("launch", "--launcher", "submitit", "--cluster", "local", "--nproc", "2",
                        "--folder", str(tmp_path / "jobs"), "--", *train_args(digits, tmp_path / "b"))
    assert via_submitit.returncode == 0, via_submitit.stdout[-2000:] + via_submitit.stderr[-2000:]
    a = torch.load(tmp_path / "a" / "final.pt", weights_only=True)["ema"]
    b = torch.load(tmp_path / "b" / "final.pt", weights_only=True)["ema"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7)


def test_a_requeued_job_resumes_from_the_newest_checkpoint(digits, tmp_path, capsys):
    # What submitit does on preemption: in the signal handler it calls the job's `checkpoint`,
    # pickles the DelayedSubmission that returns, and the requeued job unpickles and runs it.
    # Here the first attempt ended after step 2 (its newest checkpoint; no final.pt); the
    # resubmission must resume from that checkpoint and end with an uninterrupted run's weights.
    from submitit.core.utils import DelayedSubmission

    from fdrl.cli import main
    from fdrl.launch import FdrlJob

    # Every attempt runs in this process, with the same threads, so weights compare bitwise.
    assert main(train_args(digits, tmp_path / "whole")) == 0
    run = tmp_path / "run"
    argv = train_args(digits, run)
    assert main([*argv, "--max-steps", "2"]) == 0  # what a preempted attempt leaves: step 2
    (run / "final.pt").unlink()
    capsys.readouterr()
    FdrlJob(main, argv).checkpoint().dump(tmp_path / "submission.pkl")
    assert DelayedSubmission.load(tmp_path / "submission.pkl").result() == 0
    out = capsys.readouterr().out
    assert f"resuming {run} from {run / 'checkpoints' / 'step-000002.pt'}" in out, out
    assert "steps 2 -> 4" in out, out
    a = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)
    b = torch.load(run / "final.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["ema"][k], v) for k, v in b["ema"].items())


def test_a_requeued_task_forgets_the_result_of_its_earlier_attempt(tmp_path, monkeypatch):
    # When a requeued job's rank 0 exits, rank 1 fails on the closed connection and submitit
    # stores that error as rank 1's result; the next attempt must not leave it for the submitting
    # process to read (it would report the job failed even though the last attempt succeeds).
    from fdrl.launch import _forget_earlier_attempt

    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SUBMITIT_FOLDER": str(tmp_path),
                        "SLURM_JOB_ID": "42", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}.items():
        monkeypatch.setenv(name, value)
    stale, other = tmp_path / "42_1_result.pkl", tmp_path / "42_0_result.pkl"
    stale.write_bytes(b"stale error")
    other.write_bytes(b"rank 0's")
    _forget_earlier_attempt()
    assert not stale.exists() and other.exists()
    monkeypatch.delenv("SUBMITIT_FOLDER")
    _forget_earlier_attempt()  # outside a submitit job: nothing to do

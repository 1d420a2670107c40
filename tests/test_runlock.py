"""One writer per run folder (`fdrl.runlock`): a second `fdrl train` into a folder another
process is writing stops at once and names the holder; a lock whose process died is free; a
requeued job waits for its previous attempt."""

import os
import signal
import subprocess
import sys
import time

import pytest

from fdrl.cli import main
from fdrl.errors import FdrlError
from fdrl.prior_fit import fit_prior
from fdrl.runlock import REQUEUE_WAIT, requeue_wait, run_lock
from fdrl.shards import shard

HOLD = "import sys, time\nfrom fdrl.runlock import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n"


def holder(folder, seconds=120):
    """A process holding the folder's lock for `seconds`, started and holding on return."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lockdata")
    shard("digits", "unused", root / "shards", shard_size=1000)
    fit_prior([str(root / "shards")], root / "prior.pt", device="cpu")
    return root


def train_args(data, out):
    sets = {"data": data / "shards", "prior_path": data / "prior.pt", "network": "mlp_digits",
            "steps": 2, "batch": 8, "flow_steps": 2, "sample_steps": 2, "log_every": 1,
            "sample_every": 2, "checkpoint_every": 2}
    return ["train", "--out", str(out), "--device", "cpu",
            *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]


def test_a_second_writer_stops_at_once_naming_the_holder(data, tmp_path, capsys):
    out = tmp_path / "run"
    proc = holder(out)
    try:
        assert main(train_args(data, out)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"PID {proc.pid} on " in err and "since" in err, err
        assert not (out / "metrics.jsonl").exists() and not (out / "config.yaml").exists()
    finally:
        proc.kill()
        proc.wait()
    # The holder died by SIGKILL: its lock went with it, and the run trains.
    assert main(train_args(data, out)) == 0
    assert (out / "final.pt").exists()


def test_the_lock_is_taken_when_the_holder_lets_go_within_the_wait(tmp_path):
    proc = holder(tmp_path, seconds=1.0)
    with pytest.raises(FdrlError, match=f"PID {proc.pid}"):
        with run_lock(tmp_path):
            pass
    start = time.monotonic()
    with run_lock(tmp_path, wait=30):
        assert time.monotonic() - start < 20
    proc.wait()


def test_a_lock_left_by_a_killed_process_is_free(tmp_path):
    proc = holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert str(proc.pid) in (tmp_path / ".lock").read_text()  # the file stays; the lock does not
    with run_lock(tmp_path):
        assert str(os.getpid()) in (tmp_path / ".lock").read_text()


def test_only_a_requeued_job_waits(monkeypatch):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeue_wait() == 0
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert requeue_wait() == 0
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert requeue_wait() == REQUEUE_WAIT

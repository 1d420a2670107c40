"""Fault injection: each long verb killed with SIGKILL at seeded random moments, then rerun.

For each verb (`train` under 1 and 2 processes, `fit-prior`, `sample`, `fid-ref`, `fid`) an
uninterrupted baseline runs first. The same command then runs in another folder and is killed,
with its whole process tree (torchrun's agent and workers too, as `scancel` or a lost node would),
`len(KILLS[verb])` times: at a random moment of the work it has left, or, for `train`, while it
writes its 1st, 2nd or 3rd checkpoint (a failpoint, tests/failpoint/sitecustomize.py, stops the
writer with the checkpoint's temporary file written but not yet renamed, and the kill lands
there). Each kill is followed by the same command again; the last one runs to the end. Asserted:

- after every kill, each file under its final name is byte for byte the baseline's: nothing
  half-written, nor anything else, is ever visible under a finished name;
- after the last run, the folder holds exactly the baseline's files, byte for byte (the
  records of `metrics.jsonl` without their timings): the results are bitwise those of an
  uninterrupted run, and no temporary file is left behind.

21 kills in all, in about 2-3 minutes on 2 cores. `FDRL_FAULT_ROUNDS=N` repeats every verb's
kills N times with other seeds (21 N kills), for a longer search.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from fdrl.classifier import train_classifier
from fdrl.prior_fit import fit_prior
from fdrl.shards import shard

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("FDRL_FAULT_ROUNDS", "1"))
STEPS, EVERY = 100, 10
KILLS = {  # "moment": a random moment of the remaining work; "checkpoint": while writing one
    "train": ["moment", "checkpoint"] * 3,
    "train x2": ["moment", "checkpoint", "moment"],
    "fit-prior": ["moment"] * 3,
    "sample": ["moment"] * 3,
    "fid-ref": ["moment"] * 3,
    "fid": ["moment"] * 3,
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAILPOINT = Path(__file__).resolve().parent / "failpoint"  # its sitecustomize.py
FDRL = [sys.executable, "-m", "fdrl"]
TEMP = re.compile(r"^\..+\.tmp$")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Digits shards, their prior, a training config and a (one-epoch) digits classifier."""
    root = tmp_path_factory.mktemp("inputs")
    shard("digits", "unused", root / "shards", shard_size=1000)
    fit_prior([str(root / "shards")], root / "prior.pt", device="cpu")
    train_classifier(root / "classifier.pt", epochs=1)
    (root / "run.yaml").write_text(yaml.safe_dump({
        "network": "mlp_digits", "pairing": "lsif-pearson", "steps": STEPS, "batch": 64,
        "lr": 1e-4, "flow_steps": 5, "sample_steps": 10, "eta": 1.0, "nu": 0.01, "seed": 3,
        "log_every": 5, "sample_every": 40, "checkpoint_every": EVERY, "keep_checkpoints": 0,
        "data": str(root / "shards"), "prior": "data", "prior_path": str(root / "prior.pt")}))
    return root


def commands(inputs: Path, base: Path) -> dict:
    """Each verb's command, writing into the folder OUT it is given (`base`: the baselines)."""
    cls = ["--backend", "classifier", "--weights", str(inputs / "classifier.pt")]
    train = ["train", "--config", str(inputs / "run.yaml"), "--device", "cpu", "--out"]
    return {
        "train": lambda out: [*FDRL, *train, str(out / "run")],
        "train x2": lambda out: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node", "2", "-m", "fdrl", *train, str(out / "run")],
        "fit-prior": lambda out: [*FDRL, "fit-prior", "--shards", str(inputs / "shards"),
                                  "--device", "cpu", "--out", str(out / "prior.pt")],
        "sample": lambda out: [*FDRL, "sample", "--run", str(base / "train" / "run"), "--seeds",
                               "0-2999", "--batch", "300", "--device", "cpu",
                               "--out", str(out / "chunk.npz")],
        "fid-ref": lambda out: [*FDRL, "fid-ref", "--shards", str(inputs / "shards"), *cls,
                                "--device", "cpu", "--out", str(out / "ref.npz")],
        "fid": lambda out: [*FDRL, "fid", "--samples", str(base / "sample" / "chunk.npz"), "--ref",
                            str(base / "fid-ref" / "ref.npz"), *cls, "--device", "cpu",
                            "--out", str(out / "fid.json")],
    }


def descendants(pid: int) -> list[int]:
    """The ids of every process below `pid` (Linux /proc)."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def process_state(pid: int) -> str | None:
    """The state letter of process `pid` (R, S, D, T, Z, ...); None if it is gone."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def kill_tree(proc: subprocess.Popen, known: list[int]) -> bool:
    """SIGKILLs `proc` and every process below it (`known` first, at once: a checkpoint write
    lasts milliseconds, a scan of /proc about as long), and waits until all are gone; False if
    `proc` had already ended."""
    pids = [proc.pid, *known]
    pids += [pid for pid in descendants(proc.pid) if pid not in pids]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed = proc.wait() == -signal.SIGKILL
    deadline = time.monotonic() + 30
    for pid in pids[1:]:  # the workers: gone, or zombies awaiting their reaper
        while time.monotonic() < deadline:
            if process_state(pid) in (None, "Z"):
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"process {pid} outlived SIGKILL")
    return killed


class Attempt:
    """One run of a command; `working` is set when its progress bar first draws (the verb's
    work begins: imports, argument checks and loading are done)."""

    def __init__(self, argv: list[str], log: Path, stop_at_checkpoint: int = 0):
        """`stop_at_checkpoint` N > 0: the attempt stops itself at the failpoint of its N-th
        checkpoint (tests/failpoint/sitecustomize.py)."""
        env = ENV
        if stop_at_checkpoint:
            path = os.pathsep.join(filter(None, [str(FAILPOINT), ENV.get("PYTHONPATH")]))
            env = {**ENV, "PYTHONPATH": path, "FDRL_STOP_AT_CHECKPOINT": str(stop_at_checkpoint)}
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.PIPE)
        self.working, self.working_since, self.stderr = threading.Event(), None, b""
        self.tree: list[int] = []  # the processes below it once it works (torchrun's workers)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for block in iter(lambda: self.proc.stderr.read1(4096), b""):
            self.stderr += block
            if not self.working.is_set() and b"%|" in self.stderr:
                self.working_since = time.monotonic()
                self.tree = descendants(self.proc.pid)
                self.working.set()

    def finish(self) -> str:
        self.proc.wait()
        self.reader.join()
        self.log.close()
        return self.stderr.decode(errors="replace")


def log(folder: Path) -> Path:
    """Where a folder's attempts write their stdout: beside it, not in it."""
    return folder.parent / f"{folder.name}.log"


def final_files(folder: Path) -> dict[str, Path]:
    """The files under their final names (relative path -> path), without the run lock."""
    return {str(p.relative_to(folder)): p for p in folder.rglob("*")
            if p.is_file() and not TEMP.match(p.name) and p.name != ".lock"}


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP.match(p.name)]


def records(path: Path) -> list[dict]:
    """metrics.jsonl without its timings (the only part of a run that is not reproducible)."""
    timing = ("seconds_per_step", "images_per_second")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in path.read_text().splitlines()]


def equal(a: object, b: object) -> bool:
    """Equal content: tensors of the same dtype and shape, bit for bit; the rest by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
            torch.equal(*(t.contiguous().view(-1).view(torch.uint8) for t in (a, b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(equal, a, b))
    return a == b


def same_file(a: Path, b: Path) -> bool:
    """The same bytes; for torch files, the same content (pickle's bytes depend on the order in
    which dicts were filled, which a resume changes: Adam's state is loaded, not built)."""
    if a.suffix == ".pt":
        return equal(torch.load(a, weights_only=True), torch.load(b, weights_only=True))
    return a.read_bytes() == b.read_bytes()


def assert_same_as_baseline(folder: Path, base: Path, complete: bool) -> None:
    """Every file under a final name is the baseline's (all of them if `complete`)."""
    mine, theirs = final_files(folder), final_files(base)
    assert set(mine) <= set(theirs), f"not in the baseline: {sorted(set(mine) - set(theirs))}"
    for name, path in mine.items():
        if name.endswith("metrics.jsonl"):  # appended line by line, cut to the resume point
            if complete:
                assert records(path) == records(theirs[name]), name
        else:
            assert same_file(path, theirs[name]), f"{name} differs from the baseline"
    if complete:
        assert set(mine) == set(theirs), f"missing: {sorted(set(theirs) - set(mine))}"
        assert not temps(folder), f"temporary files left: {temps(folder)}"


def newest_checkpoint(folder: Path) -> int:
    steps = [int(p.name[5:11]) for p in (folder / "run" / "checkpoints").glob("step-*.pt")]
    return max(steps, default=0)


def room(folder: Path, kills: int) -> int:
    """How many of the checkpoints a training run in `folder` has yet to write are spare: beyond
    one for each kill still planned (`kills`, this one included) and one more. A kill takes at
    most room + 1 of them, so the room stays >= 0: every later kill finds a checkpoint to write,
    and no kill waits on the run's last one, after which the run ends (a kill could miss it)."""
    return (STEPS - newest_checkpoint(folder)) // EVERY - kills - 1


def wait_for_checkpoints(attempt: Attempt, folder: Path, step: int,
                         deadline: float = float("inf")) -> bool:
    """Waits until this attempt has written its checkpoint of `step`, or `deadline` (monotonic
    time) has passed; False if it ended first."""
    while attempt.proc.poll() is None:
        if newest_checkpoint(folder) >= step or time.monotonic() >= deadline:
            return True
        time.sleep(0.0005)
    return False


def wait_until_stopped(attempt: Attempt) -> bool:
    """Waits until a process of this attempt has stopped itself at the failpoint (a checkpoint
    written, not yet renamed); False if the attempt ended first."""
    assert attempt.working.wait(300) or attempt.proc.poll() is not None  # its tree is known
    while attempt.proc.poll() is None:
        if any(process_state(pid) in ("T", "t") for pid in [attempt.proc.pid, *attempt.tree]):
            return True
        time.sleep(0.001)
    return False


def trigger(kind: str, verb: str, attempt: Attempt, folder: Path, work: float, misses: int,
            kills: int, rng: random.Random) -> bool:
    """Waits for the moment to kill `attempt` (`kills`: the kills planned, this one included);
    False if it ended first.

    `checkpoint`: once it has stopped at its failpoint. `moment`, for `train`: a random moment of
    the interval after its 0th, 1st or 2nd new checkpoint, and before the next one is written
    however fast the attempt runs (`room`); for other verbs: a random moment of the first 70% of
    the work (shorter after a miss)."""
    if kind == "checkpoint":
        return wait_until_stopped(attempt)
    if verb.startswith("train"):
        n, start = min(rng.randint(0, 2), room(folder, kills)), newest_checkpoint(folder)
        if n and not wait_for_checkpoints(attempt, folder, start + n * EVERY):
            return False
        assert attempt.working.wait(300) or attempt.proc.poll() is not None
        deadline = time.monotonic() + rng.uniform(0, 1) * work * EVERY / STEPS
        return wait_for_checkpoints(attempt, folder, start + (n + 1) * EVERY, deadline)
    assert attempt.working.wait(300) or attempt.proc.poll() is not None
    time.sleep(rng.uniform(0.05, 0.7) * work * 0.5 ** misses)
    return attempt.proc.poll() is None


def kill_and_rerun(verb: str, command, folder: Path, base: Path, work: float,
                   rng: random.Random) -> dict:
    """Kills `command` (writing into `folder`) per KILLS[verb], checking the folder after each
    kill, then runs it to the end; returns the tally. An attempt that ends before its kill
    must have left the baseline's files; another is killed sooner in its place."""
    tally, plan = {"kills": 0, "mid_write": 0, "misses": 0}, list(KILLS[verb])
    while plan:
        # A checkpoint kill stops at the 1st, 2nd or 3rd checkpoint this attempt writes.
        stop_at = min(rng.randint(1, 3), room(folder, len(plan)) + 1) \
            if plan[0] == "checkpoint" else 0
        attempt = Attempt(command(folder), log(folder), stop_at)
        killed = trigger(plan[0], verb, attempt, folder, work, tally["misses"], len(plan),
                         rng) and kill_tree(attempt.proc, attempt.tree)
        err = attempt.finish()
        if not killed:
            assert attempt.proc.returncode == 0, err[-2000:]
            assert_same_as_baseline(folder, base, complete=True)
            tally["misses"] += 1
            assert tally["misses"] <= 5 and not verb.startswith("train"), tally
            continue
        tally["kills"] += 1
        tally["mid_write"] += plan.pop(0) == "checkpoint" and any(
            p.name.startswith(".step-") for p in temps(folder))
        assert_same_as_baseline(folder, base, complete=False)
    last = Attempt(command(folder), log(folder))
    err = last.finish()
    assert last.proc.returncode == 0, err[-2000:]
    assert_same_as_baseline(folder, base, complete=True)
    if verb.startswith("train"):  # and the reruns said where they resumed
        assert re.search(r"resuming .+ from .+/step-\d{6}\.pt", log(folder).read_text())
    return tally


def baseline(command, folder: Path) -> float:
    """Runs `command` uninterrupted into `folder`; returns how long its work took (from its
    progress bar's first draw to its exit)."""
    attempt = Attempt(command(folder), log(folder))
    err = attempt.finish()
    assert attempt.proc.returncode == 0, err[-2000:]
    assert attempt.working.is_set(), err[-2000:]
    return time.monotonic() - attempt.working_since


def test_every_long_verb_survives_sigkill_bitwise(inputs, tmp_path):
    base, killed = tmp_path / "baseline", tmp_path / "killed"
    cmds = commands(inputs, base)
    for verb in cmds:
        (base / verb).mkdir(parents=True)
        (killed / verb).mkdir(parents=True)
    work, ready = {}, {verb: threading.Event() for verb in cmds}

    def run_baseline(verb):
        work[verb] = baseline(cmds[verb], base / verb)
        ready[verb].set()

    def run_kills(verb):
        assert ready[verb].wait(600), f"the {verb} baseline did not finish"
        tallies = []
        for r in range(ROUNDS):
            folder = killed / verb / f"round{r}"
            folder.mkdir()
            rng = random.Random(f"{verb} {r}")
            tallies.append(kill_and_rerun(verb, cmds[verb], folder, base / verb,
                                          work[verb], rng))
        return verb, tallies

    # Two lanes for two cores, of about equal length; the baselines a command reads come first.
    def lane_a():
        for verb in ("train", "sample", "fid-ref", "fid", "fit-prior"):
            run_baseline(verb)
        return [run_kills(verb) for verb in ("sample", "fid-ref", "fid", "fit-prior")]

    def lane_b():
        run_baseline("train x2")
        return [run_kills("train x2"), run_kills("train")]

    with ThreadPoolExecutor(2) as pool:
        results = [r for lane in (pool.submit(lane_a), pool.submit(lane_b)) for r in lane.result()]
    kills = {verb: sum(t["kills"] for t in tallies) for verb, tallies in results}
    mid_write = sum(t["mid_write"] for _, tallies in results for t in tallies)
    misses = sum(t["misses"] for _, tallies in results for t in tallies)
    print(f"fault injection: {sum(kills.values())} kills ({kills}), {mid_write} during a "
          f"checkpoint write, {misses} attempts ended before their kill, mismatches: 0")
    assert sum(kills.values()) >= 20 * ROUNDS and all(kills.values()), kills
    checkpoint_kills = ROUNDS * sum(kinds.count("checkpoint") for kinds in KILLS.values())
    assert mid_write == checkpoint_kills, f"{mid_write} of {checkpoint_kills} checkpoint kills " \
        "landed while a checkpoint was being written"

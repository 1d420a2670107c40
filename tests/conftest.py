"""What several test files share: how pytest-xdist splits them between workers, the smoke DAG's
workspace, reading the progress bars a verb wrote to stderr, and seeded random Inception weights
(made once a session per worker: about 10 s of CPU)."""

import csv
import os
import re
from pathlib import Path

import pytest
import yaml

# Each xdist worker runs torch and BLAS on its share of the cores (so do the processes its tests
# start, where they do not set OMP_NUM_THREADS themselves): two workers of two threads each on
# two cores make OpenMP's threads wait for one another, which made a test 5x slower. Read before
# torch or numpy is imported.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _share = (_cores or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

SMOKE = Path(__file__).resolve().parents[1] / "workflow" / "config" / "smoke.yaml"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """One xdist group per test file, so that a file's module fixtures (trained runs, shards) are
    made once, by the worker that runs all its tests; the tests that share a session fixture of
    the SLURM tests (the digits shards of tests/slurm/conftest.py, the smoke DAG's workspace)
    form one group, `slurm`, so that it too is made once. Groups holding a `slurm` or `slow` test
    go first, so that the long ones start at once, side by side, and the short ones fill the gaps
    (pyproject.toml keeps xdist from reordering them by test count): the failing-rule SLURM test,
    which shares nothing and mostly waits on SLURM's polling, thus runs beside the sbatch smoke
    test at the start. In the smoke workspace the SLURM test goes before the local one. Runs
    before xdist reads the groups."""
    def fixtures(item):
        return set(getattr(item, "fixturenames", ()))

    def smoke(item):
        return "smoke_workspace" in fixtures(item)

    def group(item):
        return "slurm" if fixtures(item) & {"smoke_workspace", "digits_prior"} else item.path.stem

    def local_smoke(item):
        return smoke(item) and not item.get_closest_marker("slurm")

    heavy = {group(i) for i in items if i.get_closest_marker("slurm") or i.get_closest_marker("slow")}
    items.sort(key=lambda i: (group(i) not in heavy, local_smoke(i)))  # stable: file order otherwise
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))


def pytest_runtest_setup(item):
    """Tests marked `gpu` run where torch sees a CUDA device (bench/gpu_check.sh runs them all)
    and are skipped elsewhere."""
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device; torch sees none here")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    """Each device a test's checks must hold on: the CPU everywhere, CUDA where there is one."""
    import torch

    return torch.device(request.param)


@pytest.fixture(scope="session")
def smoke_workspace(tmp_path_factory):
    """One Snakemake working folder for the smoke DAG end to end, shared so that its jobs run
    once: where a SLURM cluster answers, tests/slurm's sbatch test builds Table 1 in it first
    (every rule on its path, through sbatch), and tests/test_workflow.py's local test then builds
    the rest of `all` with the local profile; without a cluster, the local test builds all of it.
    Both tests are in one xdist group, the sbatch one first (`pytest_collection_modifyitems`)."""
    return tmp_path_factory.mktemp("smoke")


def check_smoke_table1(root: Path) -> None:
    """The smoke scale's Table 1 under results folder `root`: a computed row per run and
    backend, then the prior baseline's, then the held-out digits' real images; Inception rows
    made with the smoke scale's random weights say so."""
    smoke = yaml.safe_load(SMOKE.read_text())
    runs, n_samples = smoke["table1"]["runs"], str(smoke["sampling"]["n_samples"])
    backends = smoke["evaluation"]["backends"]  # Table 1's order within a run
    with open(root / "table1.csv", newline="") as f:
        table = list(csv.DictReader(f))
    rows = [r for r in table if r["run"]]
    assert [(r["run"], r["backend"]) for r in rows] == [
        (run, b) for run in [*runs, smoke["table1"]["prior_baseline"]] for b in backends]
    assert all(float(r["fid"]) >= 0 and r["n_samples"] == n_samples and r["config_hash"]
               for r in rows)
    assert all("RANDOM" in r["feature_extractor"] for r in rows if r["backend"] != "classifier")
    assert rows[-1]["method"] == "prior samples, no flow" and rows[-1]["flow_steps"] == "0"
    # The held-out digits' first 10-image shard, every backend.
    real = [r for r in table if "held out" in r["method"]]
    assert [(r["method"], r["dataset"], r["backend"], r["n_samples"]) for r in real] == [
        ("real images of digits_test (held out, no model)", "digits", b, "10") for b in backends]


@pytest.fixture
def smoke_table1():
    """`check_smoke_table1`, for the tests that build the smoke DAG."""
    return check_smoke_table1


def drawn_states(err: str, unit: str) -> list[str]:
    """The states, in order, that progress bars counting `unit`s drew on stderr `err`, each
    with its rate; the last is the one a bar drew when it closed.

    A bar redraws itself after a carriage return (which text-mode reads turn into a newline), so
    states are split at either. Below one `unit` per second tqdm writes the rate inverted
    (`s/img`, not `img/s`): either form is a rate, whatever the machine's speed.
    """
    rate = re.compile(rf"\d+/\d+ \[[^]]*(?:{unit}/s|s/{unit})")
    return [state for state in re.split(r"[\r\n]", err) if rate.search(state)]


def stderr_of_rank(log_dir: Path, rank: int) -> str:
    """What rank `rank` wrote to stderr under `torchrun --log-dir LOG_DIR --redirects 2`
    (one node: the local rank is the rank)."""
    (path,) = Path(log_dir).glob(f"*/attempt_0/{rank}/stderr.log")
    return path.read_text()


@pytest.fixture
def bar_states():
    """`drawn_states`, for a test that reads what a verb wrote to stderr."""
    return drawn_states


@pytest.fixture
def rank_stderr():
    """`stderr_of_rank`, for a test that runs a verb under torchrun."""
    return stderr_of_rank


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """A folder of seeded random weights for the three Inception backends, under the libraries'
    file names (`fdrl.features.write_random_weights`)."""
    from fdrl.features import write_random_weights

    folder = tmp_path_factory.mktemp("weights")
    write_random_weights(folder, seed=0)
    return folder

"""What several test files share: how pytest-xdist splits them between workers, reading the
progress bars a verb wrote to stderr, and seeded random Inception weights (made once a session
per worker: about 10 s of CPU)."""

import re
from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """One xdist group per test file, so that a file's module fixtures (trained runs, shards) are
    made once, by the worker that runs all its tests; the SLURM tests form one group, since they
    share a session fixture and a cluster of two CPUs. Groups holding a `slurm` or `slow` test go
    first, so that the long ones start at once, side by side, and the short ones fill the gaps
    (pyproject.toml keeps xdist from reordering them by test count). Runs before xdist reads the
    groups."""
    def group(item):
        return "slurm" if item.path.parent.name == "slurm" else item.path.stem

    heavy = {group(i) for i in items if i.get_closest_marker("slurm") or i.get_closest_marker("slow")}
    items.sort(key=lambda i: group(i) not in heavy)  # stable: file order otherwise
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))


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

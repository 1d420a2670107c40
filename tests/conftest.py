"""What several test files share: reading the progress bars a verb wrote to stderr, and seeded
random Inception weights (made once a session: about 10 s of CPU)."""

import re
from pathlib import Path

import pytest


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

"""What the tests marked `slurm` share: the cluster check, the profile overlay, the digits data.

They need a SLURM cluster that answers `sinfo` (`bash tests/slurm/cluster.sh start` brings up a
one-node one on a Debian machine, as root). Without one they are skipped, or fail where
FDRL_REQUIRE_SLURM=1 (CI: .ci/run starts the cluster, so a missing one is a failure there).
"""

import functools
import os

import pytest

from slurm_helpers import cluster_problem, fdrl, write_test_profile


@functools.cache
def _cluster_problem() -> str | None:
    return cluster_problem()  # asked once per session: sinfo takes ~20 s to give up


def pytest_runtest_setup(item):
    """Skips a `slurm` test without a cluster (before its fixtures do any work); fails it
    instead under FDRL_REQUIRE_SLURM=1."""
    if item.get_closest_marker("slurm") is None or _cluster_problem() is None:
        return
    if os.environ.get("FDRL_REQUIRE_SLURM") == "1":
        pytest.fail(f"FDRL_REQUIRE_SLURM=1 but {_cluster_problem()}", pytrace=False)
    pytest.skip(f"no SLURM cluster: {_cluster_problem()}")


@pytest.fixture
def slurm_profile(tmp_path):
    return write_test_profile(tmp_path / "profile")


@pytest.fixture(scope="session")
def digits_prior(tmp_path_factory):
    """The digits as shards, and their data-dependent prior: (shards folder, prior.pt)."""
    out = tmp_path_factory.mktemp("digits")
    for args in (["shard", "--dataset", "digits", "--data-root", "unused", "--out",
                  str(out / "shards"), "--shard-size", "400"],
                 ["fit-prior", "--shards", str(out / "shards"), "--out", str(out / "prior.pt"),
                  "--device", "cpu"]):
        proc = fdrl(*args, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "shards", out / "prior.pt"

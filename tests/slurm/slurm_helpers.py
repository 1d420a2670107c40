"""Helpers of the tests marked `slurm`: the cluster check, the profile overlay, fdrl runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "cluster_profiles" / "slurm" / "config.yaml"
# The site values of the test cluster (cluster.sh): everything else comes from the real profile.
PARTITION = "debug"  # cluster.sh's one partition
SITE_RESOURCES = {"slurm_partition": PARTITION, "mem_mb": 1000}
SITE_SETTINGS = {
    "slurm-no-account": True,  # the test cluster needs none (the plugin guesses one anyway)
    # Files written on the "compute node" are at once visible here: no need to wait 60 s.
    "latency-wait": 5,
    # Poll job states after 5 s rather than 40 s: the smoke jobs take seconds.
    "slurm-init-seconds-before-status-checks": 5,
}


def cluster_problem() -> str | None:
    """Why no usable SLURM cluster answers here, or None if one does."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM's client commands are not installed (bash tests/slurm/cluster.sh start)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%T"], capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()[:300]}"
    states = proc.stdout.split()
    # idle, mixed or allocated, and responding (`idle*` is a node slurmctld cannot reach).
    if not any(s.rstrip("-") in ("idle", "mixed", "allocated") for s in states):
        return f"partition {PARTITION} has no node that takes jobs (states: {states or 'none'})"
    return None


def write_test_profile(folder: Path) -> Path:
    """The real cluster_profiles/slurm/config.yaml with this cluster's site values, in `folder`.

    Only the site keys change (partition, account, memory default, waits), so that a change to
    the real profile is what the tests exercise.
    """
    config = yaml.safe_load(PROFILE.read_text())
    resources = {k: v for k, v in config["default-resources"].items() if k != "slurm_account"}
    config["default-resources"] = {**resources, **SITE_RESOURCES}
    config.update(SITE_SETTINGS)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def fdrl(*args, timeout=600, **kwargs):
    """Runs `python -m fdrl ARGS` (one BLAS thread per process: the machine has 2 cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fdrl", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, **kwargs)


def train_args(digits_prior, out, **changes):
    """`fdrl train` of the smoke settings (mlp_digits, a few steps) into run folder `out`."""
    shards, prior = digits_prior
    sets = {"data": shards, "prior": "data", "prior_path": prior, "network": "mlp_digits",
            "steps": 6, "batch": 16, "flow_steps": 5, "sample_steps": 6, "lr": 0.0005,
            "log_every": 2, "sample_every": 6, "checkpoint_every": 3, **changes}
    return ["train", "--out", str(out), "--device", "cpu",
            *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]


def assert_same_weights(a: Path, b: Path, rtol=1e-6, atol=1e-7):
    """The EMA weights of two final.pt files agree."""
    import torch

    wa = torch.load(a, weights_only=True)["ema"]
    wb = torch.load(b, weights_only=True)["ema"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")

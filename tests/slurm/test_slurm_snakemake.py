"""The workflow through Snakemake's SLURM executor, with the real cluster profile (site values
replaced: slurm_helpers.write_test_profile): every job an sbatch submission, polled with sacct,
but the tables and figures of stored results, which Snakemake makes itself.

Each test runs the repository's Snakefile with `--directory` a folder of its own, as
tests/test_workflow.py does, so outputs, logs and .snakemake/ stay out of the repository: the
smoke Table 1 in the smoke DAG's shared workspace, the failing rule in its tmp_path.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slurm_helpers import REPO

pytestmark = pytest.mark.slurm

SMOKE = REPO / "workflow" / "config" / "smoke.yaml"
# What the smoke check builds through SLURM: the whole of Table 1 at smoke scale, in the workspace
# the local smoke DAG test then completes (tests/conftest.py: smoke_workspace).
TARGETS = ["results/smoke/table1.csv"]
# Rules that share a SLURM job (`--groups RULE=GROUP`), since each takes seconds, less than a
# job's start-up and Snakemake's polling. Inside a group job the SLURM plugin runs one rule at a
# time (its job-step executor takes `--jobs 1`), so each group job asks for one CPU (`--cores 1`)
# and the groups are cut so that two of them keep the node's two CPUs busy: the data first (two
# jobs: the digits' shards and prior, the held-out digits' shards); then training and sampling of
# the six runs (`--group-components run=6`: one job) beside the FID references (the Inception
# weights, the digits classifier, the reference statistics); then the runs' and the held-out
# digits' FIDs in two jobs of four (`score=4`). Six sbatch jobs in all; Table 1 last, made by
# Snakemake itself (the Snakefile's `localrules`).
GROUPS = ["--groups", "shard=data", "fit_prior=data", "random_inception_weights=refs",
          "train_classifier=refs", "fid_ref=refs", "fid_held_out=score", "train=run",
          "sample=run", "sample_flow_length=run", "fid=score", "fid_flow_length=score",
          "--group-components", "run=6", "score=4", "--cores", "1", "--resources", "mem_mb=2000"]
SBATCH_JOBS = 6


def snakemake(workdir, profile, targets, *args, timeout=1200):
    """Runs snakemake on the repository's workflow in `workdir` with `profile`; the process."""
    env = dict(os.environ)
    # The rules call the `fdrl` console script, installed beside this interpreter; the jobs
    # inherit this environment (the plugin submits with --export=ALL).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--profile", str(profile), "--configfile", str(SMOKE),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def slurm_jobs(output):
    """The SLURM job ids Snakemake says it submitted."""
    return re.findall(r"has been submitted with SLURM jobid (\d+)", output)


def sacct_states(job_ids):
    """{job id: state} of the given jobs, from the accounting database."""
    proc = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                          capture_output=True, text=True, timeout=60, check=True)
    return dict(line.split("|", 1) for line in proc.stdout.split())


def test_smoke_table1_through_sbatch(smoke_workspace, slurm_profile, smoke_table1):
    # The shared workspace is empty: this test goes first in it (tests/conftest.py); the local
    # smoke test builds the rest of `all` there afterwards.
    assert not (smoke_workspace / "results").exists(), "the smoke workspace was used before"
    proc = snakemake(smoke_workspace, slurm_profile, TARGETS, *GROUPS)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    jobs = slurm_jobs(out)
    assert len(jobs) == SBATCH_JOBS, out[-3000:]
    assert set(sacct_states(jobs).values()) == {"COMPLETED"}
    root = smoke_workspace / "results" / "smoke"
    smoke_table1(root)
    final = torch.load(root / "runs" / "digits_data_lsif-pearson" / "final.pt", weights_only=True)
    assert final["config"]["pairing"] == "lsif-pearson"
    assert all(torch.isfinite(w).all() for w in final["ema"].values() if w.is_floating_point())


def stage_bad_cat2dog(data_root, good=4):
    """A Cat2dog trainA folder whose last file is not an image: `fdrl shard` writes the shards
    of the good images, then fails on it, leaving a partly written shard folder behind."""
    folder = data_root / "cat2dog" / "trainA"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(good):
        Image.fromarray(rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (folder / f"{good:03d}.jpg").write_bytes(b"not an image")


def test_a_failing_rule_fails_the_run_and_leaves_no_partial_output(tmp_path, slurm_profile):
    stage_bad_cat2dog(tmp_path / "data")
    target = "results/smoke/data/cat2dog_trainA/shards"
    proc = snakemake(tmp_path, slurm_profile, [target], "--config",
                     f"data_root={tmp_path / 'data'}", "shard_size=2")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert slurm_jobs(out), out[-3000:]
    assert "SLURM status is: 'FAILED'" in out, out[-3000:]
    log = "results/smoke/logs/data/shard_cat2dog_trainA.log"
    assert f"log: {log}" in out, out[-3000:]
    assert "cannot identify image file" in (tmp_path / log).read_text()  # the real cause, logged
    assert not (tmp_path / target).exists()

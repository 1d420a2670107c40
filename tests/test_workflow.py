"""The Snakemake workflow: config validation, the planned DAG, lint, and the smoke DAG end to end.

Every call runs the repository's Snakefile with `--directory tmp_path`, so outputs, locks and
.snakemake/ land in the test's own folder, never in the repository's results/.
"""

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "workflow" / "config"

# The rules of the paper-scale DAG with their job counts: Tables 2-3, the seven 2-D experiments
# (three Gaussian, four swiss-roll pairings), Figs. 2, 3, 10, toy.csv, the shards and priors of
# CIFAR10, CelebA and LSUN Church with Fig. 11 (and the Cat2dog shards), the ten training runs
# (Table 1's eight, LSUN Church, Cat2dog); Table 1: 50,000 samples of each of its eight runs in
# ten chunks, FID references of CIFAR10 and CelebA and a FID job per run (one job computes both of
# the scale's backends), the prior's own samples (2 chunks of Fig. 5's 10,000) with both FIDs;
# Fig. 5 at ten flow lengths (steps-0 shared with the baseline), Figs. 4 (per run), 8, 9, 12-13
# (CIFAR10, CelebA), and `all`.
PAPER_JOBS = {"table_from_code": 2, "toy": 7, "fig2": 1, "fig3": 1, "fig10": 1, "toy_table": 1,
              "shard": 8, "fit_prior": 3, "fig11": 1, "train": 10, "sample": 80, "fid_ref": 3,
              "fid": 8, "fid_held_out": 1, "sample_flow_length": 2, "sample_flow_lengths": 2, "fid_flow_length": 10,
              "table1": 1, "fig4": 8,
              "fig5": 1, "fig8": 1, "fig9": 1, "fig12": 2,
              # Table 4 and Fig. 7 (Cat2dog), Fig. 6 (the staged robust CIFAR10 guide; no metrics).
              "translate": 1, "fid_translated": 1, "fid_untranslated": 1, "table4": 1, "fig7": 1,
              "sample_conditional": 1, "fig6": 1, "all": 1}
TOYS = ["stale_near", "stale_far", "fdrl_far", "swissroll_lsif-pearson", "swissroll_lr-kl",
        "swissroll_lr-js", "swissroll_lr-logd"]
FIGURES = ["fig2_stale_estimator.png", "fig3_fdrl_progression.png", "fig5_flow_length.png",
           "fig6_class_conditional.png", "fig7_translation.png",
           "fig8_flow_process.png", "fig9_interpolation.png", "fig10_swissroll.png",
           "fig11_priors.png"]


def snakemake(workdir, *args, timeout=120):
    """Runs snakemake on the repository's workflow in `workdir`; returns the finished process."""
    env = dict(os.environ)
    # The rules call the `fdrl` console script, installed beside this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def job_counts(output):
    """The `Job stats` table of a dry run as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    return {m["rule"]: int(m["count"]) for m in
            re.finditer(r"^(?P<rule>\w+)\s+(?P<count>\d+)\s*$", table, re.MULTILINE)
            if m["rule"] != "total"}


def write_config(path, **changes):
    config = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("changes, named", [
    ({"roots": "results/typo"}, "'roots' was unexpected"),
    ({"scale": "huge"}, "'huge' is not one of"),
    ({"toy": {"gaussians": {"fdrl_steps": {"nested": 1}}, "swissroll": {}}}, "fdrl_steps"),
])
def test_schema_rejects_a_bad_config_naming_the_key(tmp_path, changes, named):
    bad = write_config(tmp_path / "bad.yaml", **changes)
    proc = snakemake(tmp_path, "-n", "--configfile", str(bad))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Error validating config file" in out and named in out, out[-3000:]


@pytest.mark.parametrize("train, named", [
    ({"stepz": 6}, r"unknown key 'stepz' in run digits_\S+ of the workflow config"),
    ({"steps": "many"}, r"steps: 'many' in run digits_\S+ of the workflow config is not an integer"),
    ({"lr": -1}, r"lr: -1.0 in run digits_\S+ of the workflow config must be positive"),
])
def test_a_bad_run_setting_stops_the_plan_with_fdrls_own_sentence(tmp_path, train, named):
    smoke = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    bad = write_config(tmp_path / "bad.yaml", train={**smoke["train"], **train})
    proc = snakemake(tmp_path, "-n", "--configfile", str(bad))
    assert proc.returncode != 0 and re.search(named, proc.stdout + proc.stderr), proc.stdout[-3000:]


def test_the_slurm_profiles_placeholders_stop_even_a_dry_run(tmp_path):
    proc = snakemake(tmp_path, "-n", "--profile", str(REPO / "cluster_profiles" / "slurm"),
                     "results/table2.csv")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "the SLURM profile still holds its placeholders" in out
    assert "cluster_profiles/slurm/config.yaml" in out
    # With the site's values given, the same dry run plans.
    proc = snakemake(tmp_path, "results/table2.csv", "-n", "--profile",
                     str(REPO / "cluster_profiles" / "slurm"), "--default-resources",
                     "slurm_partition=debug")
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_dry_run_plans_the_paper_targets(tmp_path):
    proc = snakemake(tmp_path, "-n", "-p")  # no --configfile: paper.yaml, the default
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    assert {rule: counts.get(rule) for rule in PAPER_JOBS} == PAPER_JOBS
    for target in ["results/table2.csv", "results/table3.csv", "results/toy.csv",
                   "results/table4.csv", *(f"results/figures/{f}" for f in FIGURES)]:
        assert target in out
    # The staged guide is a parameter that the sampling job names, not an input to plan.
    assert "--guide data/robustness/cifar_l2_1_0.pt --phi 0.1 --step-factor 1" in out


def test_table1_plans_the_papers_eight_runs_their_50k_samples_and_fids(tmp_path):
    proc = snakemake(tmp_path, "-n", "-p", "results/table1.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    assert {r: counts.get(r) for r in ("train", "sample", "fid", "fid_ref", "fid_held_out",
                                       "table1")} == {
        "train": 8, "sample": 80, "fid": 8, "fid_ref": 2, "fid_held_out": 1, "table1": 1}
    seeds = {}
    for m in re.finditer(r"fdrl sample --run results/runs/(\S+) --seeds (\d+)-(\d+)  --out", out):
        seeds.setdefault(m[1], set()).update(range(int(m[2]), int(m[3]) + 1))
    assert len(seeds) == 8 and all(s == set(range(50_000)) for s in seeds.values())
    # Trained (and so sampled) in bf16 with channels-last; FID features in float32, the protocol.
    trains = re.findall(r"fdrl launch .* train .*", out)
    assert len(trains) == 8 and all("--set precision=bf16 --set channels_last=true" in t
                                    for t in trains)
    assert "fdrl fid" in out and "--precision" not in out
    # The authors' protocol (the one paper_fid compares with) and clean-fid, the standard today,
    # each job computing both from the library's cache (no --weights), one file each, in order.
    backends = ["torchvision-inception", "clean-fid"]
    fids = re.findall(r"fdrl fid --samples .*? --ref (.*?) --backend (.*?) --out (.*?) >", out)
    refs = re.findall(r"fdrl fid-ref --shards \S+ --backend (.*?) --workers 1 --out (.*?) >", out)
    assert len(fids) == 8 + 1 and len(refs) == 2  # the runs and the prior baseline (steps-0)
    for *files, named in [(r, o, b) for r, b, o in fids] + [(o, b) for b, o in refs]:
        assert named.split() == backends
        for paths in files:
            assert [Path(p).stem.rsplit("_", 1)[1] for p in paths.split()] == backends
    # The CIFAR10 test split's real images, against the training set's references.
    assert len(re.findall(r"fdrl fid --shards results/data/cifar10_test/shards "
                          r"--ref results/data/cifar10/fid_ref_torchvision-inception\.npz "
                          r"results/data/cifar10/fid_ref_clean-fid\.npz", out)) == 1


def test_the_spectral_norm_ablation_is_planned_only_when_asked(tmp_path):
    # Not in rule all (PAPER_JOBS trains 10 runs, not 11); named, it trains with spectral norm.
    proc = snakemake(tmp_path, "-n", "-p", "results/runs/cifar10_data_lsif-pearson_sn/final.pt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"fdrl launch .* train .*--set spectral_norm=true", proc.stdout + proc.stderr)


def test_configfile_replaces_the_default_config(tmp_path):
    # The demo file alone decides: paper.yaml is not merged in (Snakefile), so each experiment gets
    # exactly its family's overrides from demo.yaml and every path lies under results/demo/.
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", str(CONFIGS / "demo.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "paper.yaml" not in out
    commands = {m[1]: m[2] for m in re.finditer(r"fdrl toy (\S+) --out (.*?) *>", out)}
    assert set(commands) == set(TOYS)
    demo = yaml.safe_load((CONFIGS / "demo.yaml").read_text())["toy"]
    for toy, options in commands.items():
        outdir, *words = shlex.split(options)
        assert outdir == f"results/demo/toy/{toy}"
        assert words[::2] == ["--set"] * (len(words) // 2)
        family = demo["gaussians" if toy in TOYS[:3] else "swissroll"]
        assert dict(word.split("=", 1) for word in words[1::2]).keys() == family.keys()
        # fdrl reads each value as YAML: lists arrive as lists, numbers as numbers.
        assert {k: yaml.safe_load(v) for k, v in (w.split("=", 1) for w in words[1::2])} == family


def test_root_can_be_overridden_on_the_command_line(tmp_path):
    proc = snakemake(tmp_path, "-n", "--config", "root=elsewhere")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "elsewhere/figures/fig10_swissroll.png" in out
    assert "results/toy" not in out and "results/figures" not in out


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def check_applications(root):
    """The smoke scale's Table 4 and class_conditional.csv."""
    # Table 4: the cited rows, then translated and untranslated test digits per backend, with the
    # labels the classifier says they kept.
    with open(root / "table4.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    backends = ["classifier", "torchvision-inception", "pytorch-fid", "clean-fid"]
    assert [(r["method"], r["backend"]) for r in rows[2:]] == [
        *(("FDRL translation", b) for b in backends),
        *(("untranslated source images (baseline)", b) for b in backends)]
    assert all(r["n_samples"] == "10" and 0 <= float(r["labels_kept"]) <= 1 for r in rows[2:])
    # class_conditional.csv: every class and a mean, per setting of the trade-off and the
    # standard guide.
    with open(root / "class_conditional.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["guide"], r["step_factor"]) for r in rows if r["class"] == "mean"] == [
        ("robust", "1.0"), ("robust", "2.0"), ("standard", "1.0")]
    assert len(rows) == 33


@pytest.mark.slow
def test_smoke_dag_end_to_end(smoke_workspace, smoke_table1):
    # Every job of `all` (80) that the sbatch smoke test has not built in the workspace before
    # (where a SLURM cluster answers, Table 1's 28: then 52 here, 2-2.5 minutes on 2 cores of an
    # AVX-512 EPYC; all 80 take about 4 minutes alone). 30 minutes: a generous limit.
    proc = snakemake(smoke_workspace, "--profile", str(REPO / "cluster_profiles" / "local"),
                     "--cores", "2", "--configfile", str(CONFIGS / "smoke.yaml"), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = smoke_workspace / "results" / "smoke"
    smoke_table1(root)
    for figure in FIGURES:
        assert (root / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for toy in TOYS:
        x = np.load(root / "toy" / toy / "samples.npz")["x"]
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 2 and len(x) >= 2000
        assert np.isfinite(x).all()
    smoke = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    runs = smoke["table1"]["runs"]
    assert len(runs) == 6 and len(smoke["runs"]) == 7  # and the translation run
    for run in smoke["runs"]:
        final = torch.load(root / "runs" / run / "final.pt", weights_only=True)
        assert final["config"]["pairing"] == run.rsplit("_", 1)[1]
    table = (root / "toy.csv").read_text()
    assert all(toy in table for toy in TOYS)
    assert (root / "table2.csv").exists() and (root / "table3.csv").exists()
    for run in runs:
        assert (root / "figures" / f"fig4_samples_{run}.png").exists()
    assert (root / "figures" / "fig12_nearest_digits.png").exists()
    check_applications(root)
    # Snakemake's own report collects every table and figure with its caption.
    report = smoke_workspace / "report.html"
    proc = snakemake(smoke_workspace, "--configfile", str(CONFIGS / "smoke.yaml"),
                     "--report", str(report))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Table 1" in report.read_text() and "Table 4" in report.read_text()

"""The 2-D experiments' plumbing (`fdrl toy`, `fdrl figure`, `fdrl table toy`) on tiny settings;
their quality at demo scale is measured by the workflow, not here."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fdrl.config import override
from fdrl.errors import FdrlError
from fdrl.figures import FIGURES
from fdrl.tables import TABLES
from fdrl.toy import EXPERIMENTS, SwissRollToy, energy_distance, run_toy

TINY_GAUSSIANS = ["stale_steps=20", "fdrl_steps=12", "flow_steps=3", "far_flow_steps=5",
                  "n_particles=64", "batch=32"]
TINY_SWISSROLL = ["steps=5", "flow_steps=3", "sample_steps=4", "n_particles=64", "batch=32"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    for name in EXPERIMENTS:
        tiny = TINY_SWISSROLL if name.startswith("swissroll") else TINY_GAUSSIANS
        run_toy(name, root / name, tiny)
    return root


def test_every_experiment_writes_samples_and_metrics(outputs):
    for name, exp in EXPERIMENTS.items():
        with np.load(outputs / name / "samples.npz", allow_pickle=False) as d:
            assert d["x"].dtype == np.float32 and d["x"].shape == (64, 2)
            assert d["prior"].shape == (64, 2) and np.isfinite(d["x"]).all()
        m = json.loads((outputs / name / "metrics.json").read_text())
        assert m["experiment"] == name and m["figure"] == exp.figure
        assert m["expected"] == exp.expected and isinstance(m["meets"], bool)


def test_fdrl_far_records_its_training(outputs):
    with np.load(outputs / "fdrl_far" / "samples.npz") as d:
        assert d["snapshot_steps"].tolist() == [10, 12]
        assert d["snapshots"].shape == (2, 32, 2) and d["mean_trajectory"].shape == (12, 2)


def test_fdrl_far_decays_its_lr(outputs, tmp_path):
    # Fig. 3's run settles by decaying its lr (80% and 90% of T at paper scale): a decay from the
    # first step on changes where the particles end.
    assert EXPERIMENTS["fdrl_far"].defaults.fdrl_lr_milestones == (800, 900)
    run_toy("fdrl_far", tmp_path, [*TINY_GAUSSIANS, "fdrl_lr_milestones=[1]"])
    with np.load(tmp_path / "samples.npz") as a, np.load(outputs / "fdrl_far" / "samples.npz") as b:
        assert np.array_equal(a["prior"], b["prior"]) and not np.array_equal(a["x"], b["x"])


def test_runs_are_reproducible(outputs, tmp_path):
    run_toy("stale_near", tmp_path, TINY_GAUSSIANS)
    with np.load(tmp_path / "samples.npz") as a, np.load(outputs / "stale_near" / "samples.npz") as b:
        assert np.array_equal(a["x"], b["x"])


def test_figures_and_toy_table(outputs, tmp_path):
    npz = {name: str(outputs / name / "samples.npz") for name in EXPERIMENTS}
    FIGURES["fig2"]([npz["stale_near"], npz["stale_far"]], tmp_path / "f2.png")
    FIGURES["fig3"]([npz["fdrl_far"]], tmp_path / "f3.png")
    FIGURES["fig10"]([npz[f"swissroll_{p}"] for p in ("lsif-pearson", "lr-kl", "lr-js", "lr-logd")],
                     tmp_path / "f10.png")
    for f in ("f2.png", "f3.png", "f10.png"):
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG"
    rows = TABLES["toy"]([str(outputs / name / "metrics.json") for name in EXPERIMENTS])
    assert [r["experiment"] for r in rows] == list(EXPERIMENTS)
    with pytest.raises(FdrlError, match="fig2 takes two"):
        FIGURES["fig2"]([npz["stale_near"]], tmp_path / "bad.png")
    with pytest.raises(FdrlError, match="lacks"):
        FIGURES["fig3"]([npz["stale_near"]], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_overrides_are_typed_and_checked():
    cfg = override(SwissRollToy(), ["steps=7", "lr=1e-4", "lr_milestones=[3, 5]"])
    assert (cfg.steps, cfg.lr, cfg.lr_milestones) == (7, 1e-4, (3, 5))
    with pytest.raises(FdrlError, match="unknown key 'stepz' .* valid keys: steps, batch"):
        override(SwissRollToy(), ["stepz=7"])
    with pytest.raises(FdrlError, match="steps: 'many' .* is not an integer"):
        override(SwissRollToy(), ["steps=many"])
    with pytest.raises(FdrlError, match="lr_milestones: '3,5' .* is not a list of integers"):
        override(SwissRollToy(), ["lr_milestones=3,5"])


def test_bad_experiment_input_fails_before_work(tmp_path):
    with pytest.raises(FdrlError, match="unknown loss-divergence pairing"):
        run_toy("stale_near", tmp_path / "x", ["pairing=lsif-kl"])
    with pytest.raises(FdrlError, match="unknown 2-D experiment"):
        run_toy("swissroll_lsif-kl", tmp_path / "x", [])
    assert not (tmp_path / "x").exists()


def test_energy_distance():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert abs(energy_distance(x, y)) < 0.01  # same distribution
    # Shifting one set by 3 standard deviations separates them clearly.
    assert energy_distance(x, y + 3) > 2.0


def test_cli_runs_a_toy_and_rejects_bad_input(tmp_path, bar_states):
    run = lambda *a: subprocess.run([sys.executable, "-m", "fdrl", *a], capture_output=True, text=True)  # noqa: E731
    ok = run("toy", "stale_near", "--out", str(tmp_path / "t"), *sum((["--set", s] for s in TINY_GAUSSIANS), []))
    assert ok.returncode == 0 and "mean_error" in ok.stdout, ok.stderr
    assert '{"step": 20, "loss": ' in ok.stdout  # the training log stays on stdout
    last = bar_states(ok.stderr, "step")[-1]  # the steps of training, with their rate, on stderr
    assert last.startswith("toy lr-kl") and " 20/20 " in last
    bad = run("toy", "stale_near", "--out", str(tmp_path / "u"), "--set", "lr=fast")
    assert bad.returncode == 1 and "lr: 'fast' in the --set options is not a number" in bad.stderr
    assert not (tmp_path / "u").exists()
    assert "stale_steps=6000" in run("toy", "--help").stdout

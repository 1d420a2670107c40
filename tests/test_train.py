"""`fdrl train`: config validation, world-size invariance, forks, the NaN
stop and the architecture checks, on real shards of the 8x8 digits (resnet8, global batch 8,
K = 3). Multi-process runs go through `torchrun --standalone` with gloo on CPU."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from fdrl import cli
from fdrl.checkpoint import list_checkpoints, load_checkpoint
from fdrl.errors import FdrlError
from fdrl.io import sha256
from fdrl.noise import SlicedNoise
from fdrl.prior_fit import fit_prior
from fdrl.shards import shard
from fdrl.config import load_config, make_config
from fdrl.train import train

STEPS = 24
BASE = {"network": "resnet8", "pairing": "lsif-pearson", "steps": STEPS, "batch": 8, "lr": 1e-4,
        "flow_steps": 3, "sample_steps": 4, "eta": 3.0, "nu": 0.01, "seed": 5, "log_every": 3,
        "sample_every": 12, "checkpoint_every": 6, "keep_checkpoints": 0}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    shard("digits", "unused", root / "shards", shard_size=1000)
    fit_prior([str(root / "shards")], root / "prior.pt", device="cpu")
    return root


def config(folder, digits, **changes):
    cfg = {**BASE, "data": str(digits / "shards"), "prior": "data",
           "prior_path": str(digits / "prior.pt"), **changes}
    path = folder / f"run-{len(os.listdir(folder))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def command(cfg, out, nproc, *extra):
    if nproc == 1:
        head = [sys.executable, "-m", "fdrl"]
    else:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(nproc), "-m", "fdrl"]
    return [*head, "train", "--config", str(cfg), "--out", str(out), "--device", "cpu", *extra]


def run(cfg, out, nproc, *extra):
    proc = subprocess.run(command(cfg, out, nproc, *extra), capture_output=True, text=True,
                          env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def references(digits, tmp_path_factory):
    """Uninterrupted runs with 1 and 2 processes, every checkpoint kept."""
    root = tmp_path_factory.mktemp("references")
    cfg = config(root, digits)
    for nproc in (1, 2):
        run(cfg, root / f"world{nproc}", nproc)
    return root


def weights(path, key="model"):
    return load_checkpoint(path)[key]


def test_sliced_noise_gives_every_global_row_the_same_numbers():
    one = SlicedNoise(11, 8, slice(0, 8))
    two = [SlicedNoise(11, 8, slice(r * 4, r * 4 + 4)) for r in range(2)]
    for draw in ("randn", "rand", "randn"):
        whole = getattr(one, draw)(8, (3, 2))
        assert torch.equal(whole, torch.cat([getattr(n, draw)(4, (3, 2)) for n in two]))
    with pytest.raises(ValueError, match="sliced to 4 rows"):
        two[0].randn(8, (1,))


def test_config_is_validated_and_resolved(digits, tmp_path):
    good = {"data": "d", "prior_path": "p.pt", "network": "resnet8"}
    cfg = make_config({**good, "lr": "1e-4", "steps": 30_000})
    assert cfg.lr == 1e-4 and cfg.lr_milestones == (10_000, 20_000)  # T - 20k, T - 10k
    assert cfg.spectral_norm is False and cfg.betas == (0.9, 0.999)
    assert make_config({**good, "network": "resnet64_shallow"}).spectral_norm is True
    bad = [({"lrate": 1}, "unknown key 'lrate'"), ({"steps": 1.5}, "steps: 1.5 .* an integer"),
           ({"flip": "yes"}, "flip: 'yes' .* true or false"), ({"betas": [0.9]}, "betas"),
           ({"pairing": "lsif-kl"}, "unknown loss-divergence pairing 'lsif-kl'"),
           ({"network": "vgg"}, "network: 'vgg' .* not one of"), ({"ema": 1.0}, "ema: 1.0"),
           ({"prior": "gauss"}, "prior: 'gauss'"), ({"prior_path": ""}, "prior_path: .* fit-prior"),
           ({"prior": "source"}, "source: .* source domain"), ({"batch": 0}, "batch: 0 .* positive"),
           ({"lr_milestones": [5, 3]}, "lr_milestones"), ({"eta": "nan"}, "finite")]
    for change, message in bad:
        with pytest.raises(FdrlError, match=message):
            make_config({**good, **change})
    path = tmp_path / "bad.yaml"
    path.write_text("- a list\n")
    with pytest.raises(FdrlError, match="must be a mapping"):
        load_config(path)
    assert cli.main(["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path)]) == 1


def test_one_config_path_with_an_explicit_max_steps(tmp_path):
    sets = ["data=d", "prior_path=p.pt", "network=resnet8", "steps=30000"]
    # --max-steps stops early; the lr decays stay where the full 30k-step schedule puts them.
    cfg = load_config(None, sets, run_dir=tmp_path / "run-a", max_steps=50)
    assert (cfg.steps, cfg.lr_milestones, cfg.name) == (50, (10_000, 20_000), "run-a")
    cfg = load_config(None, [*sets, "lr_milestones=[5, 7]", "betas=[0.5, 0.9]"])
    assert cfg.lr_milestones == (5, 7) and cfg.betas == (0.5, 0.9)
    assert make_config(cfg.to_dict()) == cfg  # final.pt's resolved config reads back unchanged
    with pytest.raises(FdrlError, match="not a YAML value"):
        load_config(None, [*sets, "betas=[0.9"])
    with pytest.raises(FdrlError, match="--max-steps must be positive"):
        load_config(None, sets, max_steps=0)


def test_one_and_two_processes_give_the_same_weights(references):
    # Both runs see the same data, prior samples and flow noise for every global row; they differ
    # only in float32 summation order (a batch of 8 vs two of 4, the gradient mean vs the
    # all-reduced mean of two), ~1e-7 relative per step. Adam normalizes each update to about lr,
    # so rounding moves a weight by a small fraction of lr = 1e-4 per step; after 6 steps that is
    # far below 1e-3 of any tensor's largest entry (we measured ~5e-6). A DDP bug (unsynchronized
    # gradients, a wrong slice, per-rank noise) moves weights by ~lr per step: orders above it.
    for key in ("model", "ema"):
        one = weights(references / "world1" / "checkpoints" / "step-000006.pt", key)
        two = weights(references / "world2" / "checkpoints" / "step-000006.pt", key)
        for name, a in one.items():
            scale = a.float().abs().max().clamp_min(1e-12)
            assert (a.float() - two[name].float()).abs().max() <= 1e-3 * scale, (key, name)
    state = load_checkpoint(references / "world2" / "checkpoints" / "step-000006.pt")
    assert len(state["rng"]) == 2 and state["step"] == 6


def test_a_run_writes_its_folder(references):
    out = references / "world2"
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [6, 12, 18, 24]
    records = [yaml.safe_load(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(3, STEPS + 1, 3))
    assert {"loss", "data_term", "flow_term", "ratio_data", "ratio_flow", "lr", "seconds_per_step",
            "images_per_second"} <= set(records[0])
    assert sorted(os.listdir(out / "samples")) == ["step-000012.png", "step-000024.png"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["name"] == "world2" and resolved["lr_milestones"] == []
    final = torch.load(out / "final.pt", weights_only=True)
    assert final["step"] == STEPS and final["image_shape"] == [1, 8, 8]
    last = weights(out / "checkpoints" / "step-000024.pt", "ema")
    assert all(torch.equal(final["ema"][k], v) for k, v in last.items())


def make_run(tmp_path, references, digits, **changes):
    """A run folder holding a copy of the 1-process reference's step-6 checkpoint."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(references / "world1" / "checkpoints" / "step-000006.pt", out / "checkpoints")
    return config(tmp_path, digits, **changes), out


def test_a_checkpoint_of_another_architecture_is_a_clear_error(references, digits, tmp_path, capsys):
    cfg, out = make_run(tmp_path, references, digits, self_attention=True)
    assert cli.main(["train", "--config", str(cfg), "--out", str(out)]) == 1
    assert "is from another architecture" in capsys.readouterr().err
    # The same config, but weights of another shape: caught when the state is loaded.
    path = out / "checkpoints" / "step-000006.pt"
    state = load_checkpoint(path)
    state["model"] = {k: (v[:1] if k.endswith("conv1.weight") else v) for k, v in state["model"].items()}
    torch.save(state, path)
    with pytest.raises(FdrlError, match="another architecture: .*size mismatch"):
        train(load_config(config(tmp_path, digits)), out)


def test_resume_refuses_other_settings_and_never_refuses_checkpoints(references, digits, tmp_path):
    cfg, out = make_run(tmp_path, references, digits, lr=2e-4)
    with pytest.raises(FdrlError, match=r"other settings \(lr: 0.0001 -> 0.0002\)"):
        train(load_config(cfg), out)
    with pytest.raises(FdrlError, match="holds checkpoints up to step 6: resume them with"):
        train(load_config(config(tmp_path, digits)), out, resume="never")


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(digits, tmp_path, monkeypatch):
    import fdrl.train

    real, calls = fdrl.train.fdrl_step, []

    def diverging(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        return result._replace(loss=result.loss * float("nan")) if len(calls) == 5 else result

    monkeypatch.setattr(fdrl.train, "fdrl_step", diverging)
    cfg = load_config(config(tmp_path, digits, steps=8, checkpoint_every=2, log_every=1))
    with pytest.raises(FdrlError, match=r"not finite at step 5 .*step-000004.pt, predates it. "
                                        r"Start a new run from it .* --fork-from \S+step-000004.pt"):
        train(cfg, tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [2, 4]
    assert not (tmp_path / "run" / "final.pt").exists()
    # The advice can be followed: a lower lr, from the last good checkpoint.
    monkeypatch.setattr(fdrl.train, "fdrl_step", real)
    lower = load_config(config(tmp_path, digits, steps=8, checkpoint_every=2, log_every=1, lr=3e-5))
    train(lower, tmp_path / "fork", fork_from=tmp_path / "run" / "checkpoints" / "step-000004.pt")
    assert torch.load(tmp_path / "fork" / "final.pt", weights_only=True)["step"] == 8


def test_a_fork_with_the_same_settings_continues_the_run_bitwise(references, digits, tmp_path):
    origin = references / "world1" / "checkpoints" / "step-000006.pt"
    out = tmp_path / "fork"
    run(config(tmp_path, digits), out, 1, "--fork-from", str(origin))  # the reference's threads
    reference = load_checkpoint(references / "world1" / "checkpoints" / "step-000024.pt")
    forked = load_checkpoint(out / "checkpoints" / "step-000024.pt")
    for key in ("model", "ema"):
        assert all(torch.equal(forked[key][k], v) for k, v in reference[key].items()), key
    recorded = yaml.safe_load((out / "config.yaml").read_text())["fork_from"]
    assert recorded == {"checkpoint": str(origin), "sha256": sha256(origin), "step": 6}
    assert forked["config"]["fork_from"] == recorded


def test_a_fork_takes_new_settings_and_resumes_without_the_option(references, digits, tmp_path,
                                                                   capsys):
    origin = references / "world1" / "checkpoints" / "step-000006.pt"
    cfg = load_config(config(tmp_path, digits, lr=3e-5, lr_milestones=[3, 12], steps=15))
    out = tmp_path / "fork"
    train(cfg, out, fork_from=origin)
    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    lrs = {r["step"]: r["lr"] for r in records}
    assert lrs == {9: pytest.approx(3e-6), 12: pytest.approx(3e-6), 15: pytest.approx(3e-7)}
    # Resumed (here: extended) from its own checkpoints, with or without the option; another
    # origin is refused.
    longer = load_config(config(tmp_path, digits, lr=3e-5, lr_milestones=[3, 12], steps=18))
    train(longer, out)
    assert "fork_from" in yaml.safe_load((out / "config.yaml").read_text())
    other = references / "world1" / "checkpoints" / "step-000012.pt"
    with pytest.raises(FdrlError, match="holds checkpoints of its own, not forked from"):
        train(longer, out, fork_from=other)
    # The network must stay; the fork must start before the steps asked for.
    with pytest.raises(FdrlError, match="is from another architecture"):
        train(load_config(config(tmp_path, digits, self_attention=True)), tmp_path / "b",
              fork_from=origin)
    with pytest.raises(FdrlError, match="is at step 6, not before the 6 steps asked for"):
        train(load_config(config(tmp_path, digits, steps=6)), tmp_path / "c", fork_from=origin)
    with pytest.raises(FdrlError, match="no such file"):
        train(load_config(config(tmp_path, digits)), tmp_path / "d", fork_from=tmp_path / "nope.pt")
    assert not any((tmp_path / name).exists() for name in "bcd")


@pytest.mark.parametrize("prior", ["uniform", "source"])
def test_uniform_and_source_domain_priors_train(prior, digits, tmp_path):
    cfg = load_config(config(tmp_path, digits, prior=prior, source=str(digits / "shards"), steps=2,
                             log_every=1, sample_every=2, checkpoint_every=2))
    final = train(cfg, tmp_path / "run", device="cpu")
    assert torch.load(final, weights_only=True)["config"]["prior"] == prior
    assert (tmp_path / "run" / "samples" / "step-000002.png").exists()


def test_auto_precision_trains_in_the_measured_one_and_records_it(digits, tmp_path, capsys,
                                                                  device):
    cfg = load_config(config(tmp_path, digits, network="mlp_digits", precision="auto", steps=2,
                             log_every=1, sample_every=2, checkpoint_every=2))
    final = train(cfg, tmp_path / "run", device=device.type)
    chosen = torch.load(final, weights_only=True)["config"]["precision"]
    assert chosen in ("fp32", "bf16")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["precision"] == chosen
    assert f"precision auto -> {chosen} (one flow step here: fp32 " in capsys.readouterr().out


def test_a_held_out_split_is_never_trained_on(digits, tmp_path):
    shard("digits_test", "unused", tmp_path / "test", shard_size=1000)
    for changes in ({"data": str(tmp_path / "test")},
                    {"prior": "source", "source": str(tmp_path / "test")}):
        cfg = load_config(config(tmp_path, digits, **changes))
        with pytest.raises(FdrlError, match="digits_test, a held-out split that is never used "
                                            "for training"):
            train(cfg, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()


def test_prior_of_another_shape_is_refused(digits, tmp_path):
    from fdrl.priors import GaussianPrior

    GaussianPrior.from_moments(torch.zeros(4), torch.eye(4), (1, 2, 2), 1).save(tmp_path / "p.pt")
    cfg = load_config(config(tmp_path, digits, prior_path=str(tmp_path / "p.pt")))
    with pytest.raises(FdrlError, match=r"shape \(1, 2, 2\), but the data .* holds \(1, 8, 8\)"):
        train(cfg, tmp_path / "run")


def test_bench_prints_seconds_per_step():
    proc = subprocess.run([sys.executable, "bench/train_step.py", "--network", "resnet8",
                           "--image-size", "8", "--channels", "1", "--batch", "4", "--flow-steps",
                           "2", "--steps", "2", "--warmup", "1", "--device", "cpu"],
                          capture_output=True, text=True, env=ENV, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr
    result = yaml.safe_load(proc.stdout.strip().splitlines()[-1])
    assert result["seconds_per_step"] > 0 and result["flow_steps"] == 2

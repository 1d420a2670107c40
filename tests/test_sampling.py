"""`fdrl sample` (Algorithm 2): image i is a function of seed i alone."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fdrl.chunks import read_chunks
from fdrl.config import config_hash, load_config
from fdrl.errors import FdrlError
from fdrl.images import to_uint8
from fdrl.noise import InterpolationNoise
from fdrl.prior_fit import fit_prior
from fdrl.sampling import Sampler, parse_seeds, sample
from fdrl.shards import shard
from fdrl.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    shard("digits", "unused", root / "shards", shard_size=1000)
    fit_prior([str(root / "shards")], root / "prior.pt", device="cpu")
    sets = {"data": root / "shards", "prior": "data", "prior_path": root / "prior.pt",
            "network": "mlp_digits", "steps": 3, "batch": 8, "flow_steps": 3, "sample_steps": 5,
            "log_every": 1, "sample_every": 3, "checkpoint_every": 3}
    cfg = load_config(None, [f"{k}={v}" for k, v in sets.items()], run_dir=root / "run")
    train(cfg, root / "run", device="cpu")
    return root / "run"


def assert_same_images(a, b):
    """uint8 images of the same seeds, drawn in batches of other shapes or by other processes.

    Image i is a function of seed i alone, but the network's float32 kernels may sum in another
    order for another batch shape (oneDNN picks its kernels by shape and by CPU), so the flowed
    images agree to float32 rounding, not bitwise. Quantized to uint8, a pixel that lies on a
    rounding boundary may move by one level; a mixed-up seed would change every image entirely.
    """
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


def test_an_image_depends_on_its_seed_alone(run, tmp_path, device):
    sample(run, list(range(10)), tmp_path / "all.npz", batch=10, device=device.type)
    sample(run, list(range(10)), tmp_path / "small.npz", batch=3, device=device.type)
    sample(run, list(range(4)), tmp_path / "a.npz", device=device.type)
    sample(run, list(range(4, 10)), tmp_path / "b.npz", device=device.type)
    whole, seeds, _ = read_chunks([str(tmp_path / "all.npz")])
    assert whole.shape == (10, 8, 8, 1) and whole.dtype == np.uint8 and seeds.tolist() == list(range(10))
    assert_same_images(read_chunks([str(tmp_path / "small.npz")])[0], whole)
    assert_same_images(read_chunks([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])[0], whole)


def test_sample_shows_its_images_per_second(run, tmp_path, capsys, bar_states):
    sample(run, list(range(3)), tmp_path / "x.npz", batch=2, device="cpu")
    last = bar_states(capsys.readouterr().err, "img")[-1]
    assert last.startswith("sample run") and " 3/3 " in last


def test_two_processes_write_the_same_chunk_and_rank_1_shows_no_bar(run, tmp_path, bar_states,
                                                                    rank_stderr):
    sample(run, list(range(10)), tmp_path / "one.npz", device="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "--log-dir", str(tmp_path / "logs"), "--redirects", "2",
         "-m", "fdrl", "--", "sample", "--run", str(run), "--seeds", "0-9", "--out",
         str(tmp_path / "two.npz"), "--device", "cpu"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    errs = [rank_stderr(tmp_path / "logs", rank) for rank in (0, 1)]
    assert proc.returncode == 0, proc.stderr[-2000:] + errs[0][-2000:]
    one, two = (read_chunks([str(tmp_path / f)]) for f in ("one.npz", "two.npz"))
    assert np.array_equal(one[1], two[1])  # the seeds, in order
    assert_same_images(one[0], two[0])
    assert " 5/5 " in bar_states(errs[0], "img")[-1]  # rank 0 counts its own 5 images
    assert bar_states(errs[1], "img") == []


def test_zero_flow_steps_give_the_clamped_prior(run):
    sampler = Sampler.load(run, torch.device("cpu"), steps=0)
    x0, _ = sampler.prior_samples([7, 8])
    assert np.array_equal(to_uint8(sampler.generate([7, 8])), to_uint8(x0.clamp(-1, 1)))
    flowed = Sampler.load(run, torch.device("cpu"))
    assert flowed.params.steps == 5 and not np.array_equal(to_uint8(flowed.generate([7, 8])), to_uint8(x0))
    frames = flowed.process([7, 8], every=2)
    assert len(frames) == 1 + 3 and torch.equal(frames[-1], flowed.generate([7, 8]))


def test_chunks_name_their_run_and_flow_length(run, tmp_path):
    sample(run, [0, 1], tmp_path / "a.npz", device="cpu")
    sample(run, [2, 3], tmp_path / "b.npz", device="cpu")
    sample(run, [4, 5], tmp_path / "prior.npz", steps=0, device="cpu")
    info = read_chunks([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])[2]
    final = torch.load(run / "final.pt", weights_only=True)
    assert info == {"run": "run", "dataset": "digits", "prior": "data", "pairing": "lsif-pearson",
                    "train_steps": 3, "flow_steps": 3, "steps": 5, "spectral_norm": False,
                    "config_hash": config_hash(final["config"]), "precision": "fp32",
                    "channels_last": False,
                    "data_manifest_sha256": final["provenance"]["data_manifest_sha256"]}
    assert read_chunks([str(tmp_path / "prior.npz")])[2]["steps"] == 0
    with pytest.raises(FdrlError, match="different runs or flow lengths"):
        read_chunks([str(tmp_path / "a.npz"), str(tmp_path / "prior.npz")])


def test_several_flow_lengths_from_one_flow_are_the_chunks_of_separate_flows(run, tmp_path):
    # Fig. 5: one `fdrl sample --steps 0,2,5` flows 5 steps and keeps x_0, x_2 and x_5; each
    # chunk must be the one a flow of that length alone writes, bit for bit (same batch shape).
    pattern = str(tmp_path / "steps-{steps}" / "chunk.npz")
    proc = subprocess.run([sys.executable, "-m", "fdrl", "sample", "--run", str(run), "--seeds",
                           "0-5", "--steps", "0,2,5", "--out", pattern, "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for n in (0, 2, 5):
        sample(run, list(range(6)), tmp_path / f"alone-{n}.npz", steps=n, device="cpu")
        images, seeds, info = read_chunks([pattern.format(steps=n)])
        alone, _, alone_info = read_chunks([str(tmp_path / f"alone-{n}.npz")])
        assert np.array_equal(images, alone) and list(seeds) == list(range(6))
        assert info == alone_info and info["steps"] == n
    assert not np.array_equal(read_chunks([pattern.format(steps=2)])[0],
                              read_chunks([pattern.format(steps=5)])[0])


def test_several_flow_lengths_need_a_place_for_the_length_in_out(run, tmp_path):
    for steps, out, says in (
            ("0,5", "one.npz", "names one chunk for 2 flow lengths; put {steps} in it"),
            ("3,3", "s-{steps}.npz", "names a number twice")):
        proc = subprocess.run([sys.executable, "-m", "fdrl", "sample", "--run", str(run),
                               "--seeds", "0-1", "--steps", steps, "--out",
                               str(tmp_path / out), "--device", "cpu"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())


def test_sampling_runs_in_the_runs_precision_unless_told_otherwise(run, tmp_path, device):
    sample(run, list(range(16)), tmp_path / "fp32.npz", device=device.type)
    sample(run, list(range(16)), tmp_path / "bf16.npz", device=device.type, precision="bf16")
    fp32, _, info32 = read_chunks([str(tmp_path / "fp32.npz")])
    bf16, _, info16 = read_chunks([str(tmp_path / "bf16.npz")])
    assert (info32["precision"], info16["precision"]) == ("fp32", "bf16")
    diff = np.abs(fp32.astype(np.int16) - bf16.astype(np.int16))
    assert 0 < diff.mean() < 8  # the same images up to bf16's rounding, not other images
    sample(run, [16, 17], tmp_path / "more.npz", device=device.type, precision="bf16")
    with pytest.raises(FdrlError, match="different runs"):
        read_chunks([str(tmp_path / "fp32.npz"), str(tmp_path / "more.npz")])


def test_interpolation_ends_are_the_two_seeds_samples(run, device):
    sampler = Sampler.load(run, device)
    path = sampler.interpolate(3, 9, points=5)
    assert path.shape == (5, 1, 8, 8)
    # The ends see exactly seed 3's and seed 9's noise; the network runs on a batch of 5 here
    # and of 1 there, so they agree to float32 rounding carried through 5 flow steps of eta 3.
    assert torch.allclose(path[0], sampler.generate([3])[0], atol=1e-4)
    assert torch.allclose(path[-1], sampler.generate([9])[0], atol=1e-4)
    assert not torch.allclose(path[2], path[0]) and not torch.allclose(path[2], path[-1])


def test_interpolated_noise_is_standard_normal_and_uniform_at_every_point():
    # Each point of the path must be a valid draw: N(0, 1) (prior and flow noise) or U[0, 1).
    t = torch.tensor([0.0, 0.3, 0.5, 1.0])
    noise = InterpolationNoise(1, 2, t)
    z = torch.stack([noise.randn(4, (1000,)) for _ in range(50)], dim=1).flatten(1)  # 4 x 50k
    assert z.mean(1).abs().max() < 0.02 and (z.std(1) - 1).abs().max() < 0.02
    u = torch.stack([noise.rand(4, (1000,)) for _ in range(50)], dim=1).flatten(1)
    assert (u.mean(1) - 0.5).abs().max() < 0.01 and (u.var(1) - 1 / 12).abs().max() < 0.003
    assert u.min() >= 0 and u.max() < 1
    # The ends are independent; the middle mixes both: correlation cos(pi/4) with each.
    corr = torch.corrcoef(InterpolationNoise(1, 2, torch.tensor([0.0, 0.5, 1.0])).randn(3, (4000,)))
    assert abs(corr[0, 2]) < 0.05 and abs(corr[0, 1] - 0.707) < 0.03 and abs(corr[1, 2] - 0.707) < 0.03


def test_seed_ranges():
    assert parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(FdrlError, match="--seeds takes ranges"):
        parse_seeds("a-b")
    with pytest.raises(FdrlError, match="runs backwards; write it 1-5"):
        parse_seeds("5-1")
    with pytest.raises(FdrlError, match="--images '0-3,2' names a number twice"):
        parse_seeds("0-3,2", "--images")


def test_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FdrlError, match="run `fdrl train` first"):
        sample(tmp_path / "nothing", [0], tmp_path / "x.npz", device="cpu")
    assert not (tmp_path / "x.npz").exists()

"""The Frechet distance against pytorch-fid and clean-fid (and through the rows of a few
images), and the streamed float64 moments, over one or two gloo processes."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from fdrl.fid import frechet_distance
from fdrl.moments import Moments


def features(n, d, shift, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift


def test_frechet_distance_equals_pytorch_fid_and_clean_fid():
    from cleanfid.fid import fid_from_feats, frechet_distance as clean_fd
    from pytorch_fid.fid_score import calculate_frechet_distance

    f1, f2 = features(400, 32, 0.0, 1), features(300, 32, 0.3, 2)
    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in (f1, f2)]
    ours = frechet_distance(*stats[0], *stats[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # their sqrtm(disp=False)
        theirs = [calculate_frechet_distance(*stats[0], *stats[1]),
                  clean_fd(*stats[0], *stats[1]), fid_from_feats(f1, f2)]
    assert ours > 1
    np.testing.assert_allclose(theirs, ours, rtol=1e-12)
    # A few images in many features: singular covariances, where sqrtm is least accurate.
    few = [(f.mean(0), np.cov(f, rowvar=False))
           for f in (features(8, 64, 0.0, 3), features(20, 64, 0.3, 4))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their sqrtm: deprecation, singular matrix
        theirs = calculate_frechet_distance(*few[0], *few[1])
    assert frechet_distance(*few[0], *few[1]) == pytest.approx(theirs, rel=1e-6)


def test_the_distance_through_the_rows_of_a_few_images_equals_the_full_one():
    # 8 images of 64 features against 20: the second covariance has rank 7, and the n x n
    # route through its rows must give the d x d route's distance (not an approximation; the
    # d x d route's square roots of round-off eigenvalues limit the agreement to about 1e-7).
    f1, f2 = features(20, 64, 0.0, 3), features(8, 64, 0.3, 4)
    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in (f1, f2)]
    full = frechet_distance(*stats[0], *stats[1])
    assert full > 1
    assert frechet_distance(*stats[0], *stats[1], rows2=f2) == pytest.approx(full, rel=1e-6)
    # Rows of another set would change it: the route uses them, not only their covariance.
    assert frechet_distance(*stats[0], *stats[1], rows2=f1[:8]) != pytest.approx(full, rel=1e-3)


def test_equal_covariances_give_the_squared_distance_of_the_means():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    sigma = a @ a.T + np.eye(16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9)
    assert abs(frechet_distance(mu1, sigma, mu1, sigma)) < 1e-9


def test_streamed_statistics_equal_numpy_mean_and_covariance():
    f = features(257, 24, 5.0, 3)
    stats = Moments(24, torch.device("cpu"))
    for batch in np.array_split(f, 5):
        stats.add(torch.from_numpy(batch).float())
    mean, cov = stats.mean_and_covariance(ddof=1)
    f32 = f.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mean, f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-12)


MOMENTS_OF_GIVEN_ROWS = """
import sys, torch
from fdrl import distributed
from fdrl.moments import Moments

d = distributed.init("cpu")
rows = torch.load(sys.argv[1])
moments = Moments(rows.shape[1], d.device, block_rows=3)
for batch in rows[d.rank::d.world_size].split(7):
    moments.add(batch)
moments.all_reduce()
if d.is_main:
    torch.save(moments.mean_and_covariance(ddof=1), sys.argv[2])
distributed.shutdown()
"""


def test_moments_of_given_rows_are_the_same_over_one_or_two_gloo_processes(tmp_path):
    # Rows of multiples of 1/8 in [-4, 4]: every product and every partial sum is exact in
    # float64, so the reduction cannot depend on how the rows are split or summed, and the
    # results must agree bitwise. (Float32 features computed by a network are another matter:
    # see the end-to-end test below.)
    g = torch.Generator().manual_seed(0)
    torch.save(torch.randint(-32, 33, (301, 10), generator=g).float() / 8, tmp_path / "rows.pt")
    (tmp_path / "moments.py").write_text(MOMENTS_OF_GIVEN_ROWS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for nproc in (1, 2):
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             str(nproc), str(tmp_path / "moments.py"), str(tmp_path / "rows.pt"),
             str(tmp_path / f"out{nproc}.pt")], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    (mean1, cov1), (mean2, cov2) = (torch.load(tmp_path / f"out{n}.pt") for n in (1, 2))
    assert torch.equal(mean1, mean2) and torch.equal(cov1, cov2)
    rows = torch.load(tmp_path / "rows.pt").double().numpy()
    np.testing.assert_allclose(cov1.numpy(), np.cov(rows, rowvar=False), rtol=1e-12, atol=1e-15)

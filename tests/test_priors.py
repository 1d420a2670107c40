"""Priors (Eq. 8 and the uniform ablation): moments, clamping, and the plain-tensor file."""

import pytest
import torch

from fdrl.errors import FdrlError
from fdrl.noise import GeneratorNoise, PerSampleNoise
from fdrl.priors import JITTER, GaussianPrior, StandardNormalPrior, UniformPrior


def random_moments(d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = 0.05 * torch.randn(d, d, generator=g, dtype=torch.float64)
    return 0.1 * torch.randn(d, generator=g, dtype=torch.float64), a @ a.T


def test_gaussian_prior_reproduces_mean_and_covariance():
    mean, cov = random_moments()
    prior = GaussianPrior.from_moments(mean, cov, shape=(1, 2, 3), count=100)
    x = prior.sample(400_000, GeneratorNoise(0)).double().flatten(1)
    assert prior.sample(2, GeneratorNoise(0)).shape == (2, 1, 2, 3)
    target = cov + JITTER * torch.eye(6, dtype=torch.float64)
    # Standard errors: sd / sqrt(n) ~ 5e-4 for the mean, and smaller for the covariance.
    torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=2e-3)
    torch.testing.assert_close(torch.cov(x.T), target, rtol=0, atol=2e-3)
    torch.testing.assert_close(prior.covariance.double(), target, rtol=0, atol=1e-6)


def test_gaussian_prior_is_clamped_to_the_image_range():
    prior = GaussianPrior.from_moments(torch.zeros(4), 4 * torch.eye(4), shape=(4,), count=1)
    x = prior.sample(10_000, GeneratorNoise(0))
    assert x.min() == -1 and x.max() == 1


def test_save_and_load_round_trip(tmp_path):
    mean, cov = random_moments()
    prior = GaussianPrior.from_moments(mean, cov, shape=(1, 2, 3), count=123)
    prior.save(tmp_path / "prior.pt")
    loaded = GaussianPrior.load(tmp_path / "prior.pt")
    assert loaded.shape == (1, 2, 3) and loaded.count == 123
    assert torch.equal(loaded.mean, prior.mean) and torch.equal(loaded.cholesky, prior.cholesky)
    # Plain tensors only: the strict loader accepts the file.
    state = torch.load(tmp_path / "prior.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    seeds = [5, 6]
    assert torch.equal(loaded.sample(2, PerSampleNoise(seeds)), prior.sample(2, PerSampleNoise(seeds)))
    assert list(tmp_path.iterdir()) == [tmp_path / "prior.pt"]  # no temporary file left


def test_loading_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(FdrlError, match="fdrl fit-prior"):
        GaussianPrior.load(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(FdrlError, match="not a prior file"):
        GaussianPrior.load(tmp_path / "other.pt")


def test_mismatched_shape_is_a_clear_error():
    with pytest.raises(FdrlError, match="do not match the image shape"):
        GaussianPrior(torch.zeros(5), torch.eye(5), shape=(2, 3), count=1)


def test_uniform_prior():
    x = UniformPrior((3, 4, 4)).sample(5000, GeneratorNoise(0))
    assert x.shape == (5000, 3, 4, 4) and x.min() >= -1 and x.max() <= 1
    assert abs(x.mean().item()) < 0.01 and abs(x.var().item() - 1 / 3) < 0.01


def test_standard_normal_prior():
    x = StandardNormalPrior((2,)).sample(100_000, GeneratorNoise(0))
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01

"""Table 2 and Eq. 22-24: the stable f' equals df/dr, and the pairings are the paper's."""

import pytest
import torch

from fdrl.divergences import DIVERGENCES, pairing
from fdrl.errors import FdrlError
from fdrl.losses import LOSSES
from fdrl.names import PAIRINGS


@pytest.mark.parametrize("name", DIVERGENCES)
def test_stable_f_prime_is_the_derivative_of_f(name):
    div = DIVERGENCES[name]
    h = 4 * torch.randn(10_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = LOSSES[div.loss].ratio(h).requires_grad_(True)
    (df_dr,) = torch.autograd.grad(div.f(r).sum(), r)
    torch.testing.assert_close(div.f_prime(h), df_dr, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_f_prime_and_its_gradient_stay_finite_for_large_outputs(name):
    h = torch.tensor([-80.0, -30.0, 0.0, 30.0, 80.0], requires_grad=True)
    f_prime = DIVERGENCES[name].f_prime(h)
    (grad,) = torch.autograd.grad(f_prime.sum(), h)
    assert torch.isfinite(f_prime).all() and torch.isfinite(grad).all()


def test_f_prime_closed_forms_at_known_points():
    # r = 1 for every parameterization: LSIF h = 1, LR h = 0.
    assert DIVERGENCES["pearson"].f_prime(torch.tensor(1.0)) == 0.0
    assert DIVERGENCES["kl"].f_prime(torch.tensor(0.0)) == 1.0
    assert abs(DIVERGENCES["js"].f_prime(torch.tensor(0.0)).item()) < 1e-7  # log(2/2)
    assert DIVERGENCES["logd"].f_prime(torch.tensor(0.0)).item() == pytest.approx(1 + 0.693147, abs=1e-6)


def test_f_prime_increases_with_r():
    # Lemma 1 relies on f' being monotonically increasing in r (f convex).
    h = torch.linspace(-10, 10, 101)
    for div in DIVERGENCES.values():
        assert (div.f_prime(h).diff() > 0).all(), div.name


def test_legal_pairings_are_the_papers():
    assert set(PAIRINGS) == {"lsif-pearson", "lr-kl", "lr-js", "lr-logd"}
    # Every divergence pairs with one loss, and each such pair is a name the CLI offers.
    assert {f"{d.loss}-{d.name}" for d in DIVERGENCES.values()} == set(PAIRINGS)
    for name in PAIRINGS:
        p = pairing(name)
        assert p.name == name and p.loss.name == p.divergence.loss


@pytest.mark.parametrize("name", ["lsif-kl", "lr-pearson", "lsif-js", "lr-chi2", "kl", "foo-bar"])
def test_illegal_pairings_are_a_clear_error(name):
    with pytest.raises(FdrlError, match="lsif-pearson, lr-kl, lr-js, lr-logd"):
        pairing(name)

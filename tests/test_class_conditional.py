"""Class-conditional generation (Eq. 31, Fig. 6): the conditional potential, `fdrl sample
--guide`, the robust digits guide, `fdrl classify`, class_conditional.csv and the figures."""

import json

import numpy as np
import pytest
import torch

from fdrl.chunks import read_chunks, read_labels
from fdrl.class_metrics import classify
from fdrl.classifier import _digits, load_classifier, pgd_l2, train_classifier
from fdrl.cli import main
from fdrl.config import load_config
from fdrl.figures import fig6, fig6_tradeoff
from fdrl.flow import ClassGuidance, conditional_potential
from fdrl.prior_fit import fit_prior
from fdrl.sampling import sample
from fdrl.shards import shard
from fdrl.tables import class_conditional
from fdrl.train import train

from test_sampling import assert_same_images


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """LR-KL and LSIF runs of 3 steps, a robust guide of one epoch, the measuring classifier."""
    root = tmp_path_factory.mktemp("conditional")
    shard("digits", "unused", root / "digits", shard_size=1000)
    fit_prior([str(root / "digits")], root / "prior.pt", device="cpu")
    for pairing in ("lr-kl", "lsif-pearson"):
        sets = {"data": root / "digits", "prior": "data", "prior_path": root / "prior.pt",
                "network": "mlp_digits", "steps": 3, "batch": 8, "flow_steps": 3,
                "sample_steps": 4, "log_every": 1, "sample_every": 3, "checkpoint_every": 3,
                "pairing": pairing}
        cfg = load_config(None, [f"{k}={v}" for k, v in sets.items()], run_dir=root / pairing)
        train(cfg, root / pairing, device="cpu")
    train_classifier(root / "guide.pt", seed=1, epochs=1, robust_eps=2.0, pgd_steps=2)
    train_classifier(root / "measure.pt", epochs=2)
    return root


def test_the_conditional_potentials_gradient_is_its_finite_difference():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1),
                              torch.nn.Flatten(0)).double()
    classifier = torch.nn.Linear(3, 4).double()
    labels = torch.tensor([0, 3, 1])
    x = torch.randn(3, 3, dtype=torch.float64)
    for factor in (1.0, 2.0):
        potential = conditional_potential(net, ClassGuidance(classifier, labels, 0.1, factor))
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(potential(x).sum(), x)
        h = 1e-6
        numeric = torch.zeros_like(x)
        with torch.no_grad():
            for i in range(3):
                e = torch.zeros_like(x)
                e[:, i] = h
                numeric[:, i] = (potential(x + e) - potential(x - e)) / (2 * h)
            log_p = torch.log_softmax(classifier(x), 1).gather(1, labels[:, None])[:, 0]
            torch.testing.assert_close(potential(x), factor * (net(x) - 0.1 * log_p))
        torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-8)


def test_pgd_stays_in_its_ball_and_the_image_range_and_raises_the_loss(setup):
    model, _ = load_classifier(setup / "measure.pt")
    x, y = _digits("digits_test")
    x, y = x[:64], y[:64]
    adv = pgd_l2(model, x, y, eps=2.0, steps=5)
    assert (adv - x).flatten(1).norm(dim=1).max() <= 2.0 + 1e-5
    assert adv.min() >= -1 and adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(model(adv), y) > loss(model(x), y) + 0.5


def test_the_robust_guide_records_its_radius_and_robust_accuracy(setup):
    _, config = load_classifier(setup / "guide.pt")
    assert config["robust_eps"] == 2.0 and config["pgd_steps"] == 2
    assert 0 <= config["robust_test_accuracy"] < config["test_accuracy"]


def test_conditional_samples_carry_their_class_and_depend_on_their_seed_alone(setup, tmp_path,
                                                                             device):
    run, guide = setup / "lr-kl", setup / "guide.pt"
    sample(run, list(range(12)), tmp_path / "all.npz", batch=12, device=device.type, guide=guide,
           classes=[3, 7, 1])
    sample(run, list(range(12)), tmp_path / "small.npz", batch=5, device=device.type,
           guide=guide, classes=[3, 7, 1])
    images, seeds, info = read_chunks([str(tmp_path / "all.npz")])
    np.testing.assert_array_equal(read_labels([str(tmp_path / "all.npz")]), [3, 7, 1] * 4)
    assert_same_images(read_chunks([str(tmp_path / "small.npz")])[0], images)
    assert info["guidance"]["phi"] == 0.1 and info["guidance"]["step_factor"] == 1.0
    assert info["guidance"]["robust_eps"] == 2.0
    # The guidance moves the samples: the same seeds without it differ.
    sample(run, list(range(12)), tmp_path / "plain.npz", device=device.type)
    assert not np.array_equal(read_chunks([str(tmp_path / "plain.npz")])[0], images)


def test_bad_guidance_is_one_sentence(setup, tmp_path, capsys):
    common = ["--seeds", "0-3", "--device", "cpu"]
    cases = {
        "class 10 is out of range": ["--run", str(setup / "lr-kl"), "--guide", str(setup / "guide.pt"),
                                     "--classes", "8-10"],
        "needs an LR-KL model": ["--run", str(setup / "lsif-pearson"), "--guide", str(setup / "guide.pt")],
        "--classes needs --guide": ["--run", str(setup / "lr-kl"), "--classes", "1"],
        "no guide classifier at": ["--run", str(setup / "lr-kl"), "--guide", str(tmp_path / "none.pt")],
    }
    for message, args in cases.items():
        out = tmp_path / "out.npz"
        assert main(["sample", *args, *common, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()


def test_classify_measures_labels_and_per_class_fid(setup, tmp_path):
    measure, digits = setup / "measure.pt", setup / "digits"
    real = classify(measure, tmp_path / "real.json", shards=digits, real=digits)
    assert real["labelled"] and real["accuracy"] > 0.8 and real["dataset"] == "digits"
    assert all(abs(c["fid"]) < 1e-6 for c in real["classes"])  # each class against itself
    assert sum(c["count"] for c in real["classes"]) == real["n_images"] == 1498
    sample(setup / "lr-kl", list(range(40)), tmp_path / "u.npz", device="cpu")
    unguided = classify(measure, tmp_path / "u.json", samples=[str(tmp_path / "u.npz")])
    assert not unguided["labelled"] and unguided["accuracy"] is None
    assert abs(sum(c["assigned_fraction"] for c in unguided["classes"]) - 1) < 1e-9


def _result(path, labelled, fids, accuracy=None, guidance=None):
    classes = [{"class": n, "assigned_fraction": 0.1, "count": 10, "accuracy": accuracy,
                "fid": f, "fid_images": 10} for n, f in enumerate(fids)]
    run = {"run": "r", "steps": 160, **({"guidance": guidance} if guidance else {})}
    path.write_text(json.dumps({"n_images": 100, "labelled": labelled, "classes": classes, "run": run}))
    return str(path)


def test_class_conditional_table_and_tradeoff_figure(tmp_path):
    unguided = _result(tmp_path / "u.json", False, [20.0] * 10)
    inputs = [unguided] + [
        _result(tmp_path / f"g{phi}.json", True, [20.0 * (1 + 10 * phi)] * 10, 0.5 + phi,
                {"kind": "digits-cnn", "robust_eps": 2.0, "phi": phi, "step_factor": 1.0})
        for phi in (0.01, 0.1)]
    rows = class_conditional(inputs)
    mean = [r for r in rows if r["class"] == "mean"]
    assert [(r["phi"], r["accuracy"], r["fid_ratio"]) for r in mean] == [
        (0.01, "0.5100", "1.1000"), (0.1, "0.6000", "2.0000")]
    assert len(rows) == 22 and rows[0]["unguided_fid"] == "20.0000"
    fig6_tradeoff(inputs, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_fig6_shows_a_row_per_class(setup, tmp_path):
    sample(setup / "lr-kl", list(range(20)), tmp_path / "c.npz", device="cpu",
           guide=setup / "guide.pt", classes=[0, 1])
    fig6([str(tmp_path / "c.npz")], tmp_path / "fig6.png")
    assert (tmp_path / "fig6.png").read_bytes()[:4] == b"\x89PNG"

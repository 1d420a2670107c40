"""The robust CIFAR10 classifier of Appendix E: the architecture and key layout of the `robustness`
library's CIFAR ResNet50, the [-1, 1] -> [0, 1] input mapping, and the checkpoint loader's round
trip and errors. CPU only; the ResNet50 is built and written once per module."""

from __future__ import annotations

import pytest
import torch

from fdrl.errors import FdrlError
from fdrl.robust_resnet import (CIFAR10_MEAN, CIFAR10_STD, InputNormalize, RobustCifarClassifier,
                                load_robust_cifar, write_robust_cifar_checkpoint)

# conv1 1,728 + bn1 128; layer1 215,808; layer2 1,219,584; layer3 7,098,368; layer4 14,964,736;
# linear 2048 * 10 + 10 = 20,490 (torchvision's resnet50, 25,557,032, less its 7x7 stem and
# 1000-way fc, gives the same).
PARAMETERS = 23_520_842


class NotATensor:
    """A custom object: `weights_only=True` refuses to unpickle it."""


@pytest.fixture(scope="module")
def seeded() -> RobustCifarClassifier:
    """A seeded classifier in eval mode whose batch-norm statistics are not the defaults, so a
    loader that skipped them would be caught."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = RobustCifarClassifier()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(seeded, tmp_path_factory):
    path = tmp_path_factory.mktemp("robust") / "cifar_l2_1_0.pt"
    write_robust_cifar_checkpoint(seeded, path, epoch=7)
    return path


@pytest.fixture(scope="module")
def state(checkpoint) -> dict:
    return torch.load(checkpoint, weights_only=True)["model"]


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_the_architecture_is_robustness_cifar_resnet50(seeded, images):
    net = seeded.model
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS
    assert [len(s) for s in (net.layer1, net.layer2, net.layer3, net.layer4)] == [3, 4, 6, 3]
    assert (net.linear.in_features, net.linear.out_features) == (2048, 10)
    with torch.no_grad():
        assert seeded(images).shape == (3, 10)
    keys = set(net.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.shortcut.0.weight",
            "layer2.0.shortcut.1.running_var", "layer4.2.conv3.weight", "layer4.2.bn3.bias",
            "linear.weight", "linear.bias"} <= keys
    assert not any(k.startswith(("layer1.1.shortcut", "layer3.5.shortcut")) for k in keys)


def test_the_normalizer_holds_the_cifar10_statistics_and_clamps():
    norm = InputNormalize()
    assert norm.new_mean.shape == norm.new_std.shape == (3, 1, 1)
    assert norm.new_mean.flatten().tolist() == pytest.approx(CIFAR10_MEAN)
    assert norm.new_std.flatten().tolist() == pytest.approx(CIFAR10_STD)
    x = torch.tensor([-0.5, 0.25, 1.5]).view(1, 3, 1, 1)
    assert torch.equal(norm(x), norm(x.clamp(0, 1)))


def test_the_checkpoint_has_the_robustness_key_layout(checkpoint, state):
    blob = torch.load(checkpoint, weights_only=True)
    assert blob["epoch"] == 7
    assert {"module.normalizer.new_mean", "module.normalizer.new_std", "module.model.linear.weight",
            "module.attacker.normalize.new_std", "module.attacker.model.linear.bias"} <= set(state)
    prefixes = ("module.normalizer.", "module.model.", "module.attacker.normalize.",
                "module.attacker.model.")
    assert all(k.startswith(prefixes) for k in state)


def test_a_round_trip_gives_bit_identical_logits(seeded, checkpoint, images):
    loaded = load_robust_cifar(checkpoint)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(images), seeded(images))


def test_the_input_is_mapped_from_minus_one_one_to_zero_one(seeded, checkpoint, images):
    loaded = load_robust_cifar(checkpoint)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        by_hand = seeded.model(((images + 1) / 2 - mean) / std)
        assert torch.allclose(loaded(images), by_hand, atol=1e-5)
        assert torch.equal(loaded(3 * images), loaded((3 * images).clamp(-1, 1)))
    x = images.clone().requires_grad_(True)
    loaded(x)[:, 3].sum().backward()  # the flow's guidance needs d logit / d x
    assert x.grad.abs().sum() > 0


def test_attacker_keys_are_skipped_and_state_dict_also_loads(seeded, state, tmp_path, images):
    garbled = {k: (torch.zeros(1) if k.startswith("module.attacker.") else v) for k, v in state.items()}
    torch.save({"state_dict": garbled, "epoch": 1}, tmp_path / "legacy.pt")
    loaded = load_robust_cifar(tmp_path / "legacy.pt")
    with torch.no_grad():
        assert torch.equal(loaded(images), seeded(images))


def _write(path, blob):
    torch.save(blob, path)
    return path


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("text", "not a PyTorch checkpoint"),
    ("no state dict", "no state dict"),
    ("missing key", "module.model.layer3.2.bn2.running_var"),
    ("100 classes", "size mismatch for module.model.linear.weight"),
    ("pickled object", "pickled Python objects"),
])
def test_bad_checkpoints_are_clear_errors(case, words, state, tmp_path):
    path = tmp_path / "cifar_l2_1_0.pt"
    if case == "text":
        path.write_text("<html>a download page, not a checkpoint</html>\n")
    elif case == "no state dict":
        _write(path, {"weights": {}})
    elif case == "missing key":
        _write(path, {"model": {k: v for k, v in state.items() if "layer3.2.bn2.running_var" not in k}})
    elif case == "100 classes":
        wider = {**state, "module.model.linear.weight": torch.zeros(100, 2048),
                 "module.model.linear.bias": torch.zeros(100)}
        _write(path, {"model": wider})
    elif case == "pickled object":
        _write(path, {"model": {}, "schedule": NotATensor()})
    with pytest.raises(FdrlError) as err:
        load_robust_cifar(path)
    message = str(err.value)
    assert str(path) in message and words in message and "\n" not in message

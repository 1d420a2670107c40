"""Table 3 networks and the MLP: shapes, switches, and the parameter counts of table3.csv."""

import pytest
import torch

from fdrl.errors import FdrlError
from fdrl.nets import MLP, RESNETS, SelfAttention, build_network, count_parameters
from fdrl.tables import table3


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_maps_images_to_one_scalar_each(name):
    size = RESNETS[name].image_size
    net = build_network(name, self_attention=True)
    out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_resnet_takes_other_channel_counts():
    assert build_network("resnet32", in_channels=1)(torch.randn(3, 1, 32, 32)).shape == (3,)


def test_mlp_maps_points_to_one_scalar_each():
    assert MLP()(torch.randn(7, 2)).shape == (7,)
    # Input layer + 3 hidden layers of 64 + output (the authors' swiss-roll config).
    assert count_parameters(MLP()) == (2 * 64 + 64) + 3 * (64 * 64 + 64) + (64 + 1)


def test_switches():
    plain = build_network("resnet64")
    assert not any(isinstance(m, SelfAttention) for m in plain.modules())
    assert not any("parametrizations" in n for n, _ in plain.named_modules())
    cat2dog = build_network("resnet64_shallow")  # Table 3: spectral norm and attention at 128 ch
    assert sum(isinstance(m, SelfAttention) for m in cat2dog.modules()) == 1
    assert any("parametrizations" in n for n, _ in cat2dog.named_modules())
    assert "Self Attention 128" in cat2dog.describe()
    with_attn = build_network("resnet32", self_attention=True, spectral_norm=True)
    assert with_attn(torch.randn(2, 3, 32, 32)).shape == (2,)


def test_self_attention_starts_as_identity():
    attn = SelfAttention(16, spectral_norm=False)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(attn(x), x)
    attn.gate.data.fill_(1.0)
    assert not torch.allclose(attn(x), x)


def test_table3_counts_are_the_classes_counts():
    rows = {row["network"]: row for row in table3([])}
    assert set(rows) == {"resnet32", "resnet64", "resnet128", "resnet64_shallow"}
    for name, row in rows.items():
        assert row["parameters"] == count_parameters(build_network(name))
        assert row["image_size"] == RESNETS[name].image_size
    assert rows["resnet32"]["layers"].startswith("3x3 Conv2d, 128; 3 x ResBlock 128; ResBlock Down 256")


def test_unknown_network_is_a_clear_error():
    with pytest.raises(FdrlError, match="unknown network 'resnet33'"):
        build_network("resnet33")

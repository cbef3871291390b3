"""The built-in `conv4` backbone (Vinyals et al. 2016, Snell et al. 2017): shapes, size, it trains, it is listed."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning.losses import TripletMarginLoss
from torch import nn

from bench.builtins import load_builtins
from bench.plugins import BACKBONES, Backbone, InputSpec

load_builtins()


def build(**kwargs) -> nn.Module:
    return BACKBONES.get("conv4").factory(**kwargs)


@pytest.mark.parametrize("size", [28, 32])
def test_output_and_trunk_shapes(size):
    model = build(image_size=size, embed_dim=16).eval()
    assert isinstance(model, Backbone) and model.embed_dim == 16
    images = torch.rand(3, 1, size, size)
    assert model.trunk(images).shape == (3, 64 * (size // 16) ** 2)  # 28 px: 64 features, 32 px: 256
    assert model(images).shape == (3, 16)
    assert model.head.in_features == 64 * (size // 16) ** 2


def test_input_spec_is_unit_pixels_not_pretrained():
    assert build().input_spec == InputSpec((28, 28), 1, (0.0,), (1.0,))
    assert build(image_size=32, channels=3).input_spec == InputSpec((32, 32), 3, (0.0,) * 3, (1.0,) * 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_trunk_parameters_match_a_hand_count(channels):
    conv = lambda c_in: c_in * 64 * 3 * 3 + 64  # weights + bias
    batchnorm = 64 + 64  # affine scale + shift (running stats are buffers)
    expected = conv(channels) + 3 * conv(64) + 4 * batchnorm
    assert expected == {1: 111_936, 3: 113_088}[channels]
    assert sum(p.numel() for p in build(channels=channels).trunk.parameters()) == expected
    assert sum(isinstance(m, nn.Conv2d) for m in build().trunk) == 4


def test_image_size_below_16_is_a_one_line_error():
    with pytest.raises(ValueError, match="image_size >= 16") as info:
        build(image_size=15)
    assert "\n" not in str(info.value)
    build(image_size=16)


def test_it_trains_and_gradients_reach_every_conv():
    torch.manual_seed(0)
    prototypes = torch.rand(4, 1, 28, 28)  # 4 classes, each a fixed random pattern plus noise
    labels = torch.arange(4).repeat_interleave(4)
    model = build(embed_dim=16)
    loss_fn = TripletMarginLoss(margin=0.2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(30):
        images = (prototypes[labels] + 0.3 * torch.randn(16, 1, 28, 28)).clamp(0, 1)
        loss = loss_fn(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        if step == 0:
            convs = [m for m in model.trunk if isinstance(m, nn.Conv2d)]
            assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_bench_ls_lists_it(capsys):
    from bench.cli import main

    assert main(["ls", "backbones", "conv4"]) == 0
    out = capsys.readouterr().out
    assert "conv4" in out and "builtin" in out

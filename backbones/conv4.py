"""Vinyals et al. 2016, "Matching Networks for One Shot Learning", and Snell, Swersky & Zemel 2017,
"Prototypical Networks for Few-shot Learning": the few-shot literature's four-block CNN ("Conv-4")."""

from __future__ import annotations

import torch
from torch import nn

from bench.plugins import BACKBONES, InputSpec


class Conv4(nn.Module):
    """4 × [conv 64@3×3 (padding 1) → BatchNorm → ReLU → max-pool 2] → flatten → dense embed_dim.

    Both papers feed 28×28 Omniglot (a 64-d trunk output) or 84×84 miniImageNet; each pool floors, so the
    trunk gives 64·(s//16)² features and needs s ≥ 16. The trunk has 111,936 parameters at 1 channel
    (113,088 at 3).
    """

    def __init__(self, image_size: int = 28, channels: int = 1, embed_dim: int = 64):
        super().__init__()
        if image_size < 16:
            raise ValueError(f"conv4 needs image_size >= 16 (got {image_size}): its four 2x2 pools need a 16x16 input")
        self.embed_dim = embed_dim
        self.input_spec = InputSpec((image_size, image_size), channels, (0.0,) * channels, (1.0,) * channels)
        self.trunk = nn.Sequential(*_block(channels), *_block(64), *_block(64), *_block(64), nn.Flatten())
        self.head = nn.Linear(64 * (image_size // 16) ** 2, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


def _block(in_channels: int) -> tuple[nn.Module, ...]:
    return nn.Conv2d(in_channels, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2)


@BACKBONES.register("conv4")
def conv4(image_size: int = 28, channels: int = 1, embed_dim: int = 64) -> Conv4:
    return Conv4(image_size=image_size, channels=channels, embed_dim=embed_dim)

"""An example metric-bench backbone plugin: two conv layers and a projection, for any image size."""

from __future__ import annotations

import torch
from torch import nn

from bench.plugins import InputSpec


class TinyCNN(nn.Module):
    def __init__(self, image_size: int, channels: int, width: int, embed_dim: int):
        super().__init__()
        # What the harness must feed this backbone: it resizes, converts channels and normalises.
        self.input_spec = InputSpec((image_size, image_size), channels, (0.5,) * channels, (0.5,) * channels)
        self.embed_dim = embed_dim
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, embed_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def tiny_cnn(image_size: int = 16, channels: int = 1, width: int = 16, embed_dim: int = 32) -> TinyCNN:
    """The factory the entry point names; its keyword arguments are what a grid may set."""
    return TinyCNN(image_size, channels, width, embed_dim)

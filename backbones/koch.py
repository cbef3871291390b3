"""Koch, Zemel & Salakhutdinov 2015, "Siamese Neural Networks for One-shot Image Recognition": the CNN twin."""

from __future__ import annotations

import torch
from torch import nn

from bench.plugins import BACKBONES, InputSpec


class KochCNN(nn.Module):
    """conv 64@10 → pool → 128@7 → pool → 128@4 → pool → 256@4 → flatten → dense 4096 sigmoid.

    Koch's input is 105×105 grayscale; the network works down to 65×65 (the last conv needs 4×4).
    """

    def __init__(self, image_size: int = 105, channels: int = 1, embed_dim: int = 4096, sigmoid: bool = True):
        super().__init__()
        if image_size < 65:
            raise ValueError(f"koch needs image_size >= 65 (got {image_size}): its last conv needs a 4x4 map")
        self.embed_dim = embed_dim
        self.input_spec = InputSpec((image_size, image_size), channels, (0.0,) * channels, (1.0,) * channels)
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, 64, 10),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 7),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 128, 4),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 4),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.trunk(torch.zeros(1, channels, image_size, image_size)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, embed_dim), nn.Sigmoid() if sigmoid else nn.Identity())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


@BACKBONES.register("koch")
def koch(image_size: int = 105, channels: int = 1, embed_dim: int = 4096, sigmoid: bool = True) -> KochCNN:
    return KochCNN(image_size=image_size, channels=channels, embed_dim=embed_dim, sigmoid=sigmoid)

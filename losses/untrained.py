"""`loss = "none"`: the untrained baseline. The cell does not train; it scores the backbone's own embedding
(the trunk's pooled features, no randomly initialised head), so every trained configuration has a row that
says whether training helped at all."""

from __future__ import annotations

import torch
from torch import nn

from bench.plugins import LOSSES


class Untrained(nn.Module):
    batch = "triplets"  # a valid kind for the Protocol; never sampled: the runner does not train this cell
    distance = "cosine"
    trains = False  # the runner skips training and embeds with the backbone's trunk

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("loss 'none' is the untrained baseline: it is never trained")


@LOSSES.register("none")
def none(embed_dim: int) -> Untrained:
    return Untrained()

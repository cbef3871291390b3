"""Koch et al. 2015's siamese head: p(same) = sigmoid(w · |e₁ − e₂| + b), trained with binary cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.plugins import LOSSES


class BCEL1(nn.Module):
    batch = "pairs"
    # Evaluation compares embeddings by plain L1, the distance this head weights; the learned weights
    # themselves are not used, so every loss is scored by the same embedding-only protocol.
    distance = "l1"

    def __init__(self, embed_dim: int):
        super().__init__()
        self.head = nn.Linear(embed_dim, 1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b = len(embeddings) // 2
        same = (labels[:b] == labels[b:]).to(embeddings.dtype)
        logits = self.head((embeddings[:b] - embeddings[b:]).abs()).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, same)


@LOSSES.register("bce_l1")
def bce_l1(embed_dim: int) -> BCEL1:
    return BCEL1(embed_dim)

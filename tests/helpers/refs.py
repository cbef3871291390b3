"""Slow, obvious references the metric tests hold the evaluator to, and clustered embeddings to score."""

from __future__ import annotations

import math

import torch

DISTANCES = ["cosine", "euclidean", "l1"]


def ref_distance(a, b, distance: str) -> float:
    a, b = [float(x) for x in a], [float(x) for x in b]
    if distance == "cosine":
        dot = sum(x * y for x, y in zip(a, b))
        return 1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    if distance == "euclidean":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    return sum(abs(x - y) for x, y in zip(a, b))


def clustered(n_per_class, dim=4, spread=0.6, seed=0, dtype=torch.float64):
    """Embeddings around one random centre per class; labels 0..len(n_per_class)-1 in shuffled order."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    centres = torch.randn(len(n_per_class), dim, generator=g, dtype=dtype)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g, dtype=dtype), labels

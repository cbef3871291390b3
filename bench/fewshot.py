"""N-way K-shot classification accuracy over seeded episodes drawn from the test classes (Koch et al.'s
20-way one-shot task by default)."""
from __future__ import annotations

import math

import numpy as np
import torch

from bench.knn import check_distance


def few_shot_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, distance: str, n_way: int = 20,
                      k_shot: int = 1, episodes: int = 1000, seed: int = 0) -> dict:
    """`few_shot_<n>way_<k>shot_accuracy`: each episode draws n_way classes among those with at least
    k_shot + 1 images, then k_shot support images and one query image per class (all distinct). Each query
    is assigned the class of its nearest support image (Koch's rule; with k_shot = 1, the one image per
    class; ties go to the first-drawn class). The value is the mean over episodes of the fraction of the n_way queries assigned correctly;
    `_stderr` is the standard error of that mean over episodes. NaN (with `few_shot_classes` saying how
    many were eligible) when fewer than n_way classes qualify."""
    check_distance(distance)
    name = f"few_shot_{n_way}way_{k_shot}shot"
    codes = torch.unique(labels, return_inverse=True)[1].numpy()
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)] if len(codes) else []
    eligible = [m for m in members if len(m) >= k_shot + 1]
    out = {f"{name}_episodes": episodes, "few_shot_classes": len(eligible)}
    if len(eligible) < n_way or n_way < 2:
        return {f"{name}_accuracy": float("nan"), f"{name}_accuracy_stderr": float("nan"), **out}
    # Index drawing is a Python loop over episodes × classes (small: 20k draws for 1000 20-way episodes);
    # the distances are one batched computation.
    rng = np.random.default_rng(seed)
    picks = np.empty((episodes, n_way, k_shot + 1), dtype=np.int64)
    for e in range(episodes):
        for w, c in enumerate(rng.choice(len(eligible), n_way, replace=False)):
            picks[e, w] = rng.choice(eligible[c], k_shot + 1, replace=False)
    picks = torch.from_numpy(picks)
    support = embeddings[picks[:, :, :k_shot].reshape(episodes, n_way * k_shot)].float()
    queries = embeddings[picks[:, :, k_shot]].float()
    correct = torch.empty(episodes, n_way, dtype=torch.float64)
    for s in range(0, episodes, 256):  # bounded memory: 256 × n_way × n_way·k_shot distances at a time
        d = _batched_distances(queries[s:s + 256], support[s:s + 256], distance)
        predicted = d.argmin(dim=2) // k_shot  # support images are grouped by class, k_shot each
        correct[s:s + 256] = (predicted == torch.arange(n_way)).double()
    per_episode = correct.mean(1)
    stderr = float(per_episode.std() / math.sqrt(episodes)) if episodes > 1 else float("nan")
    return {f"{name}_accuracy": float(per_episode.mean()), f"{name}_accuracy_stderr": stderr, **out}


def _batched_distances(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        a, b = torch.nn.functional.normalize(a, dim=2), torch.nn.functional.normalize(b, dim=2)
        return 1.0 - a @ b.transpose(1, 2)
    return torch.cdist(a, b, p=2.0 if distance == "euclidean" else 1.0)

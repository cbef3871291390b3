"""Held-out evaluation of embeddings: verification ROC-AUC over pairs and recall@k (hit rate) by kNN."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def distances(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    """(len(a), len(b)) distances; smaller is more similar."""
    if distance == "cosine":
        a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
        return 1.0 - a @ b.T
    if distance == "euclidean":
        return torch.cdist(a, b)
    if distance == "l1":
        return torch.cdist(a, b, p=1)
    raise ValueError(f"unknown distance {distance!r}; use cosine, euclidean or l1")


def nearest_neighbours(embeddings: torch.Tensor, k: int, distance: str, chunk: int = 1024) -> torch.Tensor:
    """Indices of each row's k nearest other rows (itself excluded), computed in chunks of queries."""
    k = min(k, len(embeddings) - 1)
    out = []
    for start in range(0, len(embeddings), chunk):
        d = distances(embeddings[start:start + chunk], embeddings, distance)
        rows = torch.arange(len(d))
        d[rows, rows + start] = float("inf")
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...], distance: str) -> dict:
    """`recall_at_k` is the hit rate: the fraction of queries with at least one same-class image among
    their k nearest neighbours (query = each test image, gallery = the other test images). Queries whose
    class has no other test image cannot hit and are excluded; `retrieval_queries` counts the rest."""
    counts = torch.bincount(labels)
    usable = counts[labels] >= 2
    neighbours = nearest_neighbours(embeddings, max(ks), distance)
    hits = labels[neighbours] == labels[:, None]
    out = {f"recall_at_{k}": float(hits[usable, :k].any(1).float().mean()) for k in ks}
    out["retrieval_queries"] = int(usable.sum())
    return out


def verification_roc_auc(embeddings: torch.Tensor, labels: torch.Tensor, distance: str, max_pairs: int, seed: int) -> dict:
    """ROC-AUC of -distance for telling same-class from different-class pairs of test images.

    Pairs: every unordered pair i < j when there are at most `max_pairs`; otherwise `max_pairs` pairs
    drawn uniformly (seeded) from all i != j. `verification_pairs` says how many and which.
    """
    n = len(embeddings)
    total = n * (n - 1) // 2
    if total <= max_pairs:  # all pairs: distance-matrix rows by GEMM, then the upper triangle
        i, j = torch.triu_indices(n, n, offset=1)
        scores = -_all_pair_distances(embeddings, distance)
        how = "all"
    else:
        rng = np.random.default_rng(seed)
        i = torch.from_numpy(rng.integers(0, n, max_pairs))
        j = torch.from_numpy((i.numpy() + rng.integers(1, n, max_pairs)) % n)
        scores = torch.cat([
            -_pair_distance(embeddings[i[s:s + 4096]], embeddings[j[s:s + 4096]], distance) for s in range(0, len(i), 4096)
        ])
        how = "sampled"
    same = (labels[i] == labels[j]).numpy()
    if same.all() or not same.any():
        auc = float("nan")  # undefined with a single class
    else:
        auc = float(roc_auc_score(same, scores.numpy()))
    return {"verification_roc_auc": auc, "verification_pairs": int(len(i)), "verification_pair_rule": how}


def _all_pair_distances(embeddings: torch.Tensor, distance: str, chunk: int = 1024) -> torch.Tensor:
    """Distances of every pair i < j, in torch.triu_indices order, a block of rows at a time."""
    n = len(embeddings)
    out = []
    for start in range(0, n, chunk):
        d = distances(embeddings[start:start + chunk], embeddings, distance)
        rows = torch.arange(start, start + len(d))
        out.append(d[torch.arange(n)[None, :] > rows[:, None]])
    return torch.cat(out)


def _pair_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        return 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=1)
    if distance == "euclidean":
        return (a - b).norm(dim=1)
    if distance == "l1":
        return (a - b).abs().sum(1)
    raise ValueError(f"unknown distance {distance!r}; use cosine, euclidean or l1")


def evaluate(embeddings: torch.Tensor, labels: torch.Tensor, distance: str, recall_k: tuple[int, ...], max_pairs: int, seed: int) -> dict:
    embeddings = embeddings.float()
    return {
        **verification_roc_auc(embeddings, labels, distance, max_pairs, seed),
        **recall_at_k(embeddings, labels, recall_k, distance),
        "distance": distance,
    }

"""Pair verification metrics from one ROC curve: ROC-AUC, EER, TAR at fixed FARs, accuracy at the best
threshold and at a threshold chosen on a validation split. Pairs are all pairs or a seeded stratified sample."""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import auc, roc_curve

from bench.knn import check_distance, distances


def select_pairs(labels: torch.Tensor, max_pairs: int, seed: int) -> dict:
    """Every unordered pair i < j (in `torch.triu_indices` order) when there are at most `max_pairs`;
    otherwise exactly `max_pairs` distinct pairs, stratified: same-class and different-class pairs are drawn
    separately (seeded, uniformly without replacement) in their population proportion, so the sample has
    the population's same-class fraction up to rounding."""
    n = len(labels)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
        return {"i": i, "j": j, "rule": "all"}
    codes = torch.unique(labels, return_inverse=True)[1].numpy()
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    same_total = int((counts * (counts - 1) // 2).sum())
    n_same = min(same_total, round(max_pairs * same_total / total))
    n_diff = min(total - same_total, max_pairs - n_same)
    si, sj = _same_class_pairs(order, counts, n_same, rng)
    di, dj = _different_class_pairs(codes, total, total - same_total, n_diff, rng)
    return {"i": torch.from_numpy(np.concatenate([si, di])), "j": torch.from_numpy(np.concatenate([sj, dj])), "rule": "sampled"}


def _unrank_pairs(linear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair number p ↦ (a, b), a < b, in the order (0,1), (0,2), (1,2), (0,3), …: b is the largest with
    b(b−1)/2 ≤ p. The float sqrt is corrected by one step either way for exactness up to 2^52."""
    b = np.floor((1 + np.sqrt(1 + 8 * linear.astype(np.float64))) / 2).astype(np.int64)
    b -= b * (b - 1) // 2 > linear
    b += (b + 1) * b // 2 <= linear
    return linear - b * (b - 1) // 2, b


def _distinct_integers(rng: np.random.Generator, population: int, size: int) -> np.ndarray:
    """`size` distinct integers in [0, population), uniformly, in random order, in O(size) memory
    (numpy's choice(replace=False) may permute the whole population: 800 MB for 10^8 pairs)."""
    if population <= 8 * size:
        return rng.permutation(population)[:size]
    out = np.empty(0, dtype=np.int64)
    while len(out) < size:
        draw = np.concatenate([out, rng.integers(0, population, size - len(out) + 64)])
        _, first = np.unique(draw, return_index=True)
        out = draw[np.sort(first)]
    return out[:size]


def _same_class_pairs(order: np.ndarray, counts: np.ndarray, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    per_class = counts * (counts - 1) // 2
    ends = np.cumsum(per_class)
    linear = _distinct_integers(rng, int(ends[-1]), size)
    cls = np.searchsorted(ends, linear, side="right")
    a, b = _unrank_pairs(linear - (ends[cls] - per_class[cls]))
    class_start = np.cumsum(counts) - counts
    return order[class_start[cls] + a], order[class_start[cls] + b]


def _different_class_pairs(codes: np.ndarray, total: int, population: int, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Uniform distinct pairs, rejecting same-class ones: the first `size` survivors of a random draw are a
    uniform sample of different-class pairs. Draws grow until enough survive (most pairs are different)."""
    draw = min(total, math.ceil(size * total / max(population, 1) * 1.05) + 64)
    while True:
        a, b = _unrank_pairs(_distinct_integers(rng, total, draw))
        keep = codes[a] != codes[b]
        if keep.sum() >= size or draw == total:
            return a[keep][:size], b[keep][:size]
        draw = min(total, 2 * draw)


def pair_distances(embeddings: torch.Tensor, pairs: dict, distance: str, memory_mb: float = 1024) -> torch.Tensor:
    if pairs["rule"] == "all":
        return _all_pair_distances(embeddings, distance, chunk=max(1, int(memory_mb * 2**20) // (12 * len(embeddings))))
    i, j = pairs["i"], pairs["j"]
    n, dim = embeddings.shape
    # Gathering both vectors of every sampled pair moves 2·P·D floats; computing whole rows of the distance
    # matrix costs n² entries, by GEMM for cosine/euclidean. Rows win when the sample is a large share of
    # all pairs or the embeddings are wide (Koch's 4096-d): 3,120 × 4096-d, 1M pairs: 50 s → 2 s.
    if n * n <= len(i) * (dim // 16 if distance != "l1" else 10):
        return _sampled_pairs_by_rows(embeddings, i, j, distance, chunk=max(1, int(memory_mb * 2**20) // (12 * n)))
    step = max(1, int(memory_mb * 2**20) // (12 * dim))
    return torch.cat([_pair_distance(embeddings[i[s:s + step]], embeddings[j[s:s + step]], distance) for s in range(0, len(i), step)])


def _sampled_pairs_by_rows(embeddings: torch.Tensor, i: torch.Tensor, j: torch.Tensor, distance: str, chunk: int) -> torch.Tensor:
    i, j = torch.as_tensor(i), torch.as_tensor(j)
    out = torch.empty(len(i), dtype=embeddings.dtype)
    order = torch.argsort(i)
    sorted_i = i[order]
    for start in range(0, len(embeddings), chunk):
        lo, hi = torch.searchsorted(sorted_i, torch.tensor([start, start + chunk])).tolist()
        if lo == hi:
            continue
        rows = distances(embeddings[start:start + chunk], embeddings, distance)
        picked = order[lo:hi]
        out[picked] = rows[i[picked] - start, j[picked]].to(out.dtype)
    return out


def _all_pair_distances(embeddings: torch.Tensor, distance: str, chunk: int = 1024) -> torch.Tensor:
    """Distances of every pair i < j, in torch.triu_indices order, a block of rows at a time (GEMM)."""
    n = len(embeddings)
    out = []
    for start in range(0, n, chunk):
        d = distances(embeddings[start:start + chunk], embeddings, distance)
        rows = torch.arange(start, start + len(d))
        out.append(d[torch.arange(n)[None, :] > rows[:, None]])
    return torch.cat(out) if out else torch.empty(0, dtype=embeddings.dtype)


def _pair_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    check_distance(distance)
    if distance == "cosine":
        return 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=1)
    if distance == "euclidean":
        return (a - b).norm(dim=1)
    return (a - b).abs().sum(1)


def roc_metrics(same: np.ndarray, dist: np.ndarray, tar_far: tuple[float, ...]) -> dict:
    """From sklearn's ROC of score = −distance:
    - `verification_roc_auc`: area under it (what `roc_auc_score` returns).
    - `verification_eer`: where the piecewise-linear ROC crosses FAR = 1 − TAR (FAR = FRR there).
    - `verification_tar_at_far_<f>`: the highest TAR of a threshold whose FAR ≤ f (no interpolation).
    - `verification_accuracy_best_threshold`: the best pair accuracy over all thresholds, and
      `verification_best_threshold`, the distance at or below which a pair is called same-class.
    All NaN when the pairs hold only one kind (a single class, or every image its own class)."""
    keys = ["verification_roc_auc", "verification_eer", *(f"verification_tar_at_far_{f:g}" for f in tar_far),
            "verification_accuracy_best_threshold", "verification_best_threshold"]
    positives = int(same.sum())
    negatives = len(same) - positives
    if positives == 0 or negatives == 0:
        return dict.fromkeys(keys, float("nan"))
    fpr, tpr, thresholds = roc_curve(same, -dist)
    out = {"verification_roc_auc": float(auc(fpr, tpr))}
    gap = tpr + fpr - 1  # < 0 before the crossing, ≥ 0 from it on; non-decreasing along the curve
    at = int(np.argmax(gap >= 0))
    f0, f1, g0, g1 = fpr[at - 1], fpr[at], gap[at - 1], gap[at]
    out["verification_eer"] = float(f1 if g1 == g0 else f0 + (f1 - f0) * (-g0) / (g1 - g0))
    for f in tar_far:
        out[f"verification_tar_at_far_{f:g}"] = float(tpr[fpr <= f].max())
    accuracy = (tpr * positives + (1 - fpr) * negatives) / len(same)
    best = int(np.argmax(accuracy))
    out["verification_accuracy_best_threshold"] = float(accuracy[best])
    out["verification_best_threshold"] = float(-thresholds[best])
    return out


def verification_metrics(embeddings: torch.Tensor, labels: torch.Tensor, distance: str, max_pairs: int, seed: int,
                         tar_far: tuple[float, ...] = (1e-2, 1e-3), memory_mb: float = 1024,
                         val_embeddings: torch.Tensor | None = None, val_labels: torch.Tensor | None = None) -> dict:
    """Verification over pairs of `embeddings` (see `select_pairs` and `roc_metrics`). With a validation
    split, `verification_accuracy_val_threshold` is the test pair accuracy at the best-accuracy distance
    threshold of the validation pairs (drawn by the same rule), as papers that tune on validation report."""
    pairs = select_pairs(labels, max_pairs, seed)
    dist = pair_distances(embeddings, pairs, distance, memory_mb).double().numpy()
    same = (labels[pairs["i"]] == labels[pairs["j"]]).numpy()
    out = roc_metrics(same, dist, tar_far)
    out |= {"verification_pairs": len(same), "verification_same_pairs": int(same.sum()),
            "verification_different_pairs": int(len(same) - same.sum()), "verification_pair_rule": pairs["rule"]}
    if val_embeddings is not None:
        val_pairs = select_pairs(val_labels, max_pairs, seed)
        val_same = (val_labels[val_pairs["i"]] == val_labels[val_pairs["j"]]).numpy()
        val_dist = pair_distances(val_embeddings, val_pairs, distance, memory_mb).double().numpy()
        threshold = roc_metrics(val_same, val_dist, ())["verification_best_threshold"]
        out["verification_val_threshold"] = threshold
        out["verification_accuracy_val_threshold"] = float(((dist <= threshold) == same).mean()) if not math.isnan(threshold) else float("nan")
    return out


def verification_roc_auc(embeddings: torch.Tensor, labels: torch.Tensor, distance: str, max_pairs: int, seed: int) -> dict:
    """`verification_roc_auc` with the pair counts and rule only (see `verification_metrics`)."""
    full = verification_metrics(embeddings, labels, distance, max_pairs, seed, tar_far=())
    return {k: full[k] for k in ("verification_roc_auc", "verification_pairs", "verification_pair_rule")}

"""Pair verification metrics from one ROC curve: ROC-AUC, EER, TAR at fixed FARs, balanced accuracy at the
best threshold and at a threshold chosen on a validation split. Pairs are all pairs or a seeded stratified
sample, within the test images or, with a separate gallery, between queries and gallery."""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.eval.knn import check_distance, distances
from bench.eval.memo import Memo, digest
from bench.items import ITEM_PAIRS, material_digest

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
GATHER_BYTES = 4 * 2**20  # one side of a chunk of pairs' gathered vectors in `pair_distances`
_SAMPLES = Memo(lambda pairs: {**pairs, "i": pairs["i"].clone(), "j": pairs["j"].clone()}, keep=2)  # up to 32 MB each (2M pairs)
ITEMS_STREAM = 2  # the kept pairs draw from default_rng([2, seed]); the pair sample itself from default_rng(seed)


def select_pairs(labels: torch.Tensor, max_pairs: int, seed: int, gallery_labels: torch.Tensor | None = None) -> dict:
    """Every unordered pair i < j (in `torch.triu_indices` order) when there are at most `max_pairs`;
    otherwise exactly `max_pairs` distinct pairs, stratified: same-class and different-class pairs are drawn
    separately (seeded, uniformly without replacement) in their population proportion, so the sample has
    the population's same-class fraction up to rounding. With `gallery_labels`, pairs are (query i,
    gallery j) instead, every one in row-major order or a sample by the same rule. A sample is remembered for
    the next call with the same labels (bench.eval.memo): a grid scores the same test labels in every cell."""
    n = len(labels)
    if (n * (n - 1) // 2 if gallery_labels is None else n * len(gallery_labels)) <= max_pairs:
        return _select_pairs(labels, max_pairs, seed, gallery_labels)
    return _SAMPLES.get(digest(labels, gallery_labels, max_pairs, seed), lambda: _select_pairs(labels, max_pairs, seed, gallery_labels))


def _select_pairs(labels: torch.Tensor, max_pairs: int, seed: int, gallery_labels: torch.Tensor | None = None) -> dict:
    if gallery_labels is not None:
        return _select_cross_pairs(labels, gallery_labels, max_pairs, seed)
    n = len(labels)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
        return {"i": i, "j": j, "rule": "all"}
    codes = torch.unique(labels, return_inverse=True)[1].numpy()
    order, counts = np.argsort(codes, kind="stable"), np.bincount(codes)
    start = np.cumsum(counts) - counts

    def unrank_same(linear, cls):
        a, b = _unrank_pairs(linear)
        return order[start[cls] + a], order[start[cls] + b]

    return _stratified(counts * (counts - 1) // 2, unrank_same, total, _unrank_pairs, codes, codes, max_pairs, seed)


def _select_cross_pairs(q_labels: torch.Tensor, g_labels: torch.Tensor, max_pairs: int, seed: int) -> dict:
    nq, ng = len(q_labels), len(g_labels)
    if nq * ng <= max_pairs:
        return {"i": torch.arange(nq).repeat_interleave(ng), "j": torch.arange(ng).repeat(nq), "rule": "all"}
    codes = torch.unique(torch.cat([q_labels, g_labels]), return_inverse=True)[1].numpy()
    qc, gc = codes[:nq], codes[nq:]
    q_counts, g_counts = np.bincount(qc, minlength=codes.max() + 1), np.bincount(gc, minlength=codes.max() + 1)
    q_order, g_order = np.argsort(qc, kind="stable"), np.argsort(gc, kind="stable")
    q_start, g_start = np.cumsum(q_counts) - q_counts, np.cumsum(g_counts) - g_counts

    def unrank_same(linear, cls):
        return q_order[q_start[cls] + linear // g_counts[cls]], g_order[g_start[cls] + linear % g_counts[cls]]

    return _stratified(q_counts * g_counts, unrank_same, nq * ng, lambda linear: (linear // ng, linear % ng), qc, gc, max_pairs, seed)


def _stratified(per_class: np.ndarray, unrank_same, total: int, unrank, codes_i: np.ndarray, codes_j: np.ndarray, max_pairs: int, seed: int) -> dict:
    """`max_pairs` of `total` pairs: same-class ones (`per_class` of them in each class, `unrank_same`
    maps a class's pair number to indices) and different-class ones (`unrank` maps any pair number)."""
    rng = np.random.default_rng(seed)
    same_total = int(per_class.sum())
    n_same = min(same_total, round(max_pairs * same_total / total))
    n_diff = min(total - same_total, max_pairs - n_same)
    si, sj = _same_class_pairs(per_class, unrank_same, n_same, rng)
    di, dj = _different_class_pairs(unrank, codes_i, codes_j, total, total - same_total, n_diff, rng)
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
        out = draw[np.sort(_first_occurrences(draw))]
    return out[:size]


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """The index of each distinct value's first occurrence, as np.unique(values, return_index=True)[1]:
    numpy's unique sorts stably (a mergesort argsort, ~5x slower than its vectorised quicksort on int64),
    so this sorts unstably and takes the smallest index within each run of equal values."""
    if not len(values):
        return np.empty(0, dtype=np.int64)
    order = np.argsort(values)
    ordered = values[order]
    return np.minimum.reduceat(order, np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]])))


def _same_class_pairs(per_class: np.ndarray, unrank_same, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    ends = np.cumsum(per_class)
    linear = _distinct_integers(rng, int(ends[-1]) if len(ends) else 0, size)
    cls = np.searchsorted(ends, linear, side="right")
    return unrank_same(linear - (ends[cls] - per_class[cls]), cls)


def _different_class_pairs(unrank, codes_i: np.ndarray, codes_j: np.ndarray, total: int, population: int, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Uniform distinct pairs, rejecting same-class ones: the first `size` survivors of a random draw are a
    uniform sample of different-class pairs. Draws grow until enough survive (most pairs are different)."""
    draw = min(total, math.ceil(size * total / max(population, 1) * 1.05) + 64)
    while True:
        a, b = unrank(_distinct_integers(rng, total, draw))
        keep = codes_i[a] != codes_j[b]
        if keep.sum() >= size or draw == total:
            return a[keep][:size], b[keep][:size]
        draw = min(total, 2 * draw)


def pair_distances(embeddings: torch.Tensor, pairs: dict, distance: str, memory_mb: float = 1024, gallery: torch.Tensor | None = None) -> torch.Tensor:
    """Distance of each pair (embeddings[i], embeddings[j]), or (embeddings[i], gallery[j]) with a gallery."""
    other = embeddings if gallery is None else gallery
    chunk = max(1, int(memory_mb * 2**20) // (12 * max(len(other), 1)))
    if pairs["rule"] == "all":
        if gallery is None:
            return _all_pair_distances(embeddings, distance, chunk)
        blocks = [distances(embeddings[s : s + chunk], gallery, distance).reshape(-1) for s in range(0, len(embeddings), chunk)]
        return torch.cat(blocks) if blocks else torch.empty(0, dtype=embeddings.dtype)
    i, j = pairs["i"], pairs["j"]
    dim = embeddings.shape[1]
    # Gathering both vectors of every sampled pair moves 2·P·D floats; computing whole rows of the distance
    # matrix costs n² entries, by GEMM for cosine/euclidean. Rows win when the sample is a large share of
    # all pairs or the embeddings are wide (Koch's 4096-d): 3,120 × 4096-d, 1M pairs: 50 s → 2 s.
    if len(embeddings) * len(other) <= len(i) * (dim // 16 if distance != "l1" else 10):
        return _sampled_pairs_by_rows(embeddings, i, j, distance, chunk, other)
    return _gathered_pair_distances(embeddings, other, i, j, distance, min(int(memory_mb * 2**20) // (12 * dim), GATHER_BYTES // (4 * dim)))


def _gathered_pair_distances(embeddings: torch.Tensor, other: torch.Tensor, i: torch.Tensor, j: torch.Tensor, distance: str, step: int) -> torch.Tensor:
    """`_pair_distance` of every (embeddings[i], other[j]), `step` pairs at a time: a few MB of gathered vectors
    stay in cache between the gather and the distance, index_select into two reused buffers gathers several
    times faster than indexing with a tensor, and nothing is allocated per chunk (a fresh pair of buffers per
    chunk, between the kept results, sometimes left the heap 1 GB larger). The values are `_pair_distance`'s."""
    check_distance(distance)
    step = max(1, min(step, len(i)))
    out = torch.empty(len(i), dtype=torch.promote_types(embeddings.dtype, other.dtype))
    a, b = torch.empty(step, embeddings.shape[1], dtype=embeddings.dtype), torch.empty(step, other.shape[1], dtype=other.dtype)
    for s in range(0, len(i), step):
        n = min(step, len(i) - s)
        left, right = torch.index_select(embeddings, 0, i[s : s + n], out=a[:n]), torch.index_select(other, 0, j[s : s + n], out=b[:n])
        if distance == "cosine":
            out[s : s + n] = 1.0 - torch.nn.functional.cosine_similarity(left, right, dim=1)
        elif distance == "euclidean":
            torch.linalg.vector_norm(left.sub_(right), dim=1, out=out[s : s + n])
        else:
            torch.sum(left.sub_(right).abs_(), 1, out=out[s : s + n])
    return out


def _sampled_pairs_by_rows(
    embeddings: torch.Tensor, i: torch.Tensor, j: torch.Tensor, distance: str, chunk: int, other: torch.Tensor | None = None
) -> torch.Tensor:
    other = embeddings if other is None else other
    i, j = torch.as_tensor(i), torch.as_tensor(j)
    out = torch.empty(len(i), dtype=embeddings.dtype)
    order = torch.from_numpy(np.argsort(i.numpy()))  # any order of equal i will do; numpy's vectorised sort is ~3x torch's
    sorted_i = i[order]
    for start in range(0, len(embeddings), chunk):
        lo, hi = torch.searchsorted(sorted_i, torch.tensor([start, start + chunk])).tolist()
        if lo == hi:
            continue
        rows = distances(embeddings[start : start + chunk], other, distance)
        picked = order[lo:hi]
        out[picked] = rows[i[picked] - start, j[picked]].to(out.dtype)
    return out


def _all_pair_distances(embeddings: torch.Tensor, distance: str, chunk: int = 1024) -> torch.Tensor:
    """Distances of every pair i < j, in torch.triu_indices order, a block of rows at a time (GEMM)."""
    n = len(embeddings)
    out = []
    for start in range(0, n, chunk):
        d = distances(embeddings[start : start + chunk], embeddings, distance)
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


ROC_POINTS = 300  # the most ROC points a row keeps (about 5 kB of JSON), enough to plot it and to recompute its AUC within 0.005


def downsample_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = ROC_POINTS) -> dict[str, list[float]]:
    """At most `points` vertices of the ROC (`fpr`, `tpr` from `roc_of_distances`), chosen so its shape survives.

    Rule: the first and last vertex, and around each value g of an FPR grid the last vertex with FPR ≤ g and
    the one after it. Two thirds of the grid is linear in [0, 1], so the kept polyline misses the full
    curve's area by at most half a grid step (a monotone path between two kept vertices closer than a step
    differs from their chord by at most Δfpr·Δtpr/2, and the edge across a grid value is an original one);
    one third is log-spaced from the smallest positive FPR to 1, so the low-FAR part (TAR@FAR, a log-scale
    plot) keeps its shape. sklearn's `drop_intermediate` drops only collinear points, not enough for a row:
    a million pairs can leave ~10⁵ vertices. Values are rounded to 6 significant digits."""
    if len(fpr) <= points:
        keep = np.arange(len(fpr))
    else:
        grid_points = (points - 2) // 2
        n_log = grid_points // 3
        positive = fpr[fpr > 0]
        grid = np.concatenate([np.linspace(0.0, 1.0, grid_points - n_log), np.geomspace(positive.min(), 1.0, n_log)])
        at = np.searchsorted(fpr, grid, side="right") - 1
        keep = np.unique(np.concatenate([[0, len(fpr) - 1], at, np.minimum(at + 1, len(fpr) - 1)]))
    return {"fpr": [float(f"{x:.6g}") for x in fpr[keep]], "tpr": [float(f"{x:.6g}") for x in tpr[keep]]}


def roc_of_distances(same: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`sklearn.metrics.roc_curve(same, -dist)` (drop_intermediate=True), value for value: (fpr, tpr, thresholds)
    with thresholds in score units (−distance, inf first). Both kinds of pair must be present.

    Written here because scikit-learn's sorts the scores stably with their labels (a mergesort argsort) after
    validating the labels (np.unique over every pair): a quarter of a 2M-pair verification's time. A vertex
    depends only on the counts at or below each distinct distance, so numpy's vectorised sort of the
    distances and of the same-class pairs' distances, and a search of one in the other, give the same
    counts in a few times less time (tests/test_eval_metrics.py compares every array with scikit-learn's)."""
    ordered = np.sort(dist)
    ends = np.concatenate([np.flatnonzero(ordered[1:] != ordered[:-1]), [len(ordered) - 1]])  # the last pair at each distance
    tps = np.searchsorted(np.sort(dist[same]), ordered[ends], side="right").astype(np.float64)
    fps = 1 + ends - tps
    thresholds = -ordered[ends].astype(np.float64)
    if len(fps) > 2:  # scikit-learn's drop_intermediate: keep the corners
        keep = np.flatnonzero(np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]]))
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps, fps = np.concatenate([[0.0], tps]), np.concatenate([[0.0], fps])
    return fps / fps[-1], tps / tps[-1], np.concatenate([[np.inf], thresholds])


def roc_metrics(same: np.ndarray, dist: np.ndarray, tar_far: tuple[float, ...], roc_points: int = ROC_POINTS) -> dict:
    """From sklearn's ROC of score = −distance:
    - `verification_roc_auc`: area under it (what `roc_auc_score` returns).
    - `verification_eer`: where the piecewise-linear ROC crosses FAR = 1 − TAR (FAR = FRR there).
    - `verification_tar_at_far_<f>`: the highest TAR of a threshold whose FAR ≤ f (no interpolation).
    - `verification_balanced_accuracy_best_threshold`: the best (TAR + 1 − FAR) / 2 over all thresholds, and
      `verification_best_threshold`, the distance at or below which a pair is called same-class. Balanced,
      not plain, accuracy: with 764 same-class pairs in 1.17M, calling every pair "different" scores 0.9993.
    - `verification_roc`: {"fpr": [...], "tpr": [...]}, the curve cut to at most `roc_points` vertices by
      `downsample_roc` (left out when `roc_points` is 0).
    All NaN when the pairs hold only one kind (a single class, or every image its own class), and then
    `verification_roc` is left out: there is no curve."""
    keys = [
        "verification_roc_auc",
        "verification_eer",
        *(f"verification_tar_at_far_{f:g}" for f in tar_far),
        "verification_balanced_accuracy_best_threshold",
        "verification_best_threshold",
    ]
    if same.all() or not same.any():
        return dict.fromkeys(keys, float("nan"))
    fpr, tpr, thresholds = roc_of_distances(same, dist)
    out = {"verification_roc_auc": float(_trapezoid(tpr, fpr))}  # sklearn's `auc` of this curve (its x never decreases)
    gap = tpr + fpr - 1  # < 0 before the crossing, ≥ 0 from it on; non-decreasing along the curve
    at = int(np.argmax(gap >= 0))
    f0, f1, g0, g1 = fpr[at - 1], fpr[at], gap[at - 1], gap[at]
    out["verification_eer"] = float(f1 if g1 == g0 else f0 + (f1 - f0) * (-g0) / (g1 - g0))
    for f in tar_far:
        out[f"verification_tar_at_far_{f:g}"] = float(tpr[fpr <= f].max())
    # Linear in (FAR, TAR), so its maximum lies on a vertex that roc_curve keeps (drop_intermediate drops
    # only collinear points). Compared in integer counts, TP·N − FP·P, so that equal balanced accuracies tie
    # exactly and the smallest such distance threshold wins, rather than whichever float rounds up.
    positives, negatives = int(same.sum()), int(len(same) - same.sum())
    tp, fp = np.rint(tpr * positives).astype(np.int64), np.rint(fpr * negatives).astype(np.int64)
    best = int(np.argmax(tp * negatives - fp * positives))
    out["verification_balanced_accuracy_best_threshold"] = float((tpr[best] + 1 - fpr[best]) / 2)
    out["verification_best_threshold"] = float(-thresholds[best])
    if roc_points:
        out["verification_roc"] = downsample_roc(fpr, tpr, roc_points)
    return out


def item_pairs(same: np.ndarray, seed: int, size: int = ITEM_PAIRS) -> np.ndarray:
    """Which of the evaluated pairs a cell keeps item by item, in evaluation order: all of them when there are
    at most `size`; else `size` pairs, same-class and different-class ones drawn separately (seeded by the eval
    seed, uniformly without replacement within each kind), half each, or all of the rarer kind and the other
    kind filling the rest. Not a uniform draw over all pairs: with 764 same-class pairs among 1.17M, that would
    keep about 3 positives, and the ROC-AUC (a comparison of positives with negatives, whatever their
    proportion) estimated from 3 is noise. The labels, the pairs and the seed decide it, never the model."""
    if len(same) <= size:
        return np.arange(len(same))
    rng = np.random.default_rng([ITEMS_STREAM, seed])
    positive, negative = np.flatnonzero(same), np.flatnonzero(~same)
    n_positive = min(len(positive), max(size // 2, size - len(negative)))
    picked = np.concatenate([positive[_distinct_integers(rng, len(positive), n_positive)], negative[_distinct_integers(rng, len(negative), size - n_positive)]])
    return np.sort(picked)


def pair_items(pairs: dict, same: np.ndarray, dist: np.ndarray, seed: int) -> dict:
    """The kept pairs' items: `verification.rank`, the dense rank of each one's distance among the kept pairs
    (0 = nearest, ties share a rank: the ROC-AUC of −rank is that of −distance on them), `verification.same`,
    and `material.verification`, the digest of their (i, j) and same flags."""
    keep = item_pairs(same, seed)
    i, j = np.asarray(pairs["i"])[keep], np.asarray(pairs["j"])[keep]
    return {
        "verification.rank": np.unique(dist[keep], return_inverse=True)[1].astype(np.uint16),  # scipy's rankdata(method="dense") − 1
        "verification.same": same[keep].astype(bool),
        "material.verification": np.array(material_digest(i, j, same[keep])),
    }


def balanced_accuracy(same: np.ndarray, dist: np.ndarray, threshold: float) -> float:
    """(TAR + TRR) / 2 when pairs at distance ≤ `threshold` are called same-class; NaN without both kinds."""
    if same.all() or not same.any() or math.isnan(threshold):
        return float("nan")
    return float(((dist[same] <= threshold).mean() + (dist[~same] > threshold).mean()) / 2)


def verification_metrics(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    distance: str,
    max_pairs: int,
    seed: int,
    tar_far: tuple[float, ...] = (1e-2, 1e-3),
    memory_mb: float = 1024,
    val_embeddings: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    roc_points: int = ROC_POINTS,
    items: dict | None = None,
) -> dict:
    """Verification over pairs of `embeddings`, or over (query, gallery) pairs when a gallery is given (see
    `select_pairs` and `roc_metrics`). With a validation split, `verification_balanced_accuracy_val_threshold`
    is the test balanced accuracy at the distance threshold that maximises it on the validation pairs (drawn
    by the same rule among the validation images), as papers that tune on validation report. Whatever is
    NaN is explained in `verification_note`. `roc_points` = 0 leaves out `verification_roc` (e.g. for
    curve points, whose rows need no plot). `items`, when given, receives the kept pairs (`item_pairs`)
    unless the ROC-AUC is NaN."""
    pairs = select_pairs(labels, max_pairs, seed, gallery_labels)
    dist = pair_distances(embeddings, pairs, distance, memory_mb, gallery).double().numpy()
    same = (labels[pairs["i"]] == (labels if gallery is None else gallery_labels)[pairs["j"]]).numpy()
    out = roc_metrics(same, dist, tar_far, roc_points)
    if items is not None and not math.isnan(out["verification_roc_auc"]):
        items.update(pair_items(pairs, same, dist, seed))
    out |= {
        "verification_pairs": len(same),
        "verification_same_pairs": int(same.sum()),
        "verification_different_pairs": int(len(same) - same.sum()),
        "verification_pair_rule": pairs["rule"],
    }
    notes = [_why_nan(same, "query–gallery" if gallery is not None else "test")]
    if val_embeddings is not None:
        val_pairs = select_pairs(val_labels, max_pairs, seed)
        val_same = (val_labels[val_pairs["i"]] == val_labels[val_pairs["j"]]).numpy()
        val_dist = pair_distances(val_embeddings, val_pairs, distance, memory_mb).double().numpy()
        threshold = roc_metrics(val_same, val_dist, (), roc_points=0)["verification_best_threshold"]
        out["verification_val_threshold"] = threshold
        out["verification_balanced_accuracy_val_threshold"] = balanced_accuracy(same, dist, threshold)
        notes.append(_why_nan(val_same, "validation"))
    if any(notes):
        out["verification_note"] = "; ".join(n for n in notes if n)
    return out


def _why_nan(same: np.ndarray, what: str) -> str:
    """Why the metrics of these pairs are NaN, in one line, or "" when they are not."""
    nan = "the validation threshold is NaN" if what == "validation" else "ROC metrics are NaN"
    if not same.any():
        hint = "no query class has a gallery image" if what == "query–gallery" else "every class has a single image"
        return f"no same-class pair among the {len(same)} {what} pairs ({hint}): {nan}"
    if same.all():
        return f"all {len(same)} {what} pairs are same-class (one class only): {nan}"
    return ""


def verification_roc_auc(embeddings: torch.Tensor, labels: torch.Tensor, distance: str, max_pairs: int, seed: int) -> dict:
    """`verification_roc_auc` with the pair counts and rule only (see `verification_metrics`)."""
    full = verification_metrics(embeddings, labels, distance, max_pairs, seed, tar_far=(), roc_points=0)
    return {k: full[k] for k in ("verification_roc_auc", "verification_pairs", "verification_pair_rule")}

"""Retrieval, verification and few-shot metrics against slow references: Python loops, PML's
AccuracyCalculator, scikit-learn and scipy; ties, lone classes, k beyond a class, a single class."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations, product

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from refs import DISTANCES, clustered, ref_distance
from scipy.optimize import brentq
from scipy.spatial.distance import cdist
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score, roc_curve

from bench.config import EvalConfig
from bench.errors import UserError
from bench.eval.fewshot import _EPISODES, class_pools, draw_episodes, few_shot_accuracy
from bench.eval.knn import _ranking_matrix, faiss_available, nearest_neighbours, smallest_k
from bench.eval.metrics import evaluate
from bench.eval.retrieval import retrieval_metrics
from bench.eval.verification import (
    _first_occurrences,
    _gathered_pair_distances,
    _pair_distance,
    _select_pairs,
    _unrank_pairs,
    roc_metrics,
    roc_of_distances,
    select_pairs,
    verification_metrics,
)
from bench.run.job import Job

PML_DISTANCE = {"cosine": CosineSimilarity(), "euclidean": LpDistance(normalize_embeddings=False), "l1": LpDistance(normalize_embeddings=False, p=1)}
BACKENDS = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(not faiss_available(), reason="faiss not installed"))]


# ------------------------------------------------------------------------------------------ retrieval


def retrieval_reference(q, ql, g, gl, ks, distance, same_set):
    """Python loops over the definitions; neighbours sorted by (distance, gallery index)."""
    sums, n = {f"recall_at_{k}": 0.0 for k in ks} | {"precision_at_1": 0.0, "r_precision": 0.0, "map_at_r": 0.0}, 0
    for a in range(len(q)):
        cand = [j for j in range(len(g)) if not (same_set and j == a)]
        order = sorted(cand, key=lambda j: (ref_distance(q[a], g[j], distance), j))
        rel = [int(gl[j]) == int(ql[a]) for j in order]
        r = sum(rel)
        if r == 0:
            continue
        n += 1
        for k in ks:
            sums[f"recall_at_{k}"] += any(rel[:k])
        sums["precision_at_1"] += rel[0]
        sums["r_precision"] += sum(rel[:r]) / r
        sums["map_at_r"] += sum(sum(rel[: i + 1]) / (i + 1) for i in range(r) if rel[i]) / r
    return {k: v / n if n else float("nan") for k, v in sums.items()} | {"retrieval_queries": n, "retrieval_lone_queries": len(q) - n}


def check_against_reference(got, expected, tol=1e-9):
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=tol, nan_ok=True), key


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_retrieval_matches_loops(distance, backend):
    # lone class 5; class 0 has 2 images, so k = 4, 8 and 40 exceed it
    x, y = clustered([2, 3, 6, 4, 5, 1], spread=1.3, seed=30, dtype=torch.float32)
    ks = (1, 2, 4, 8, 40)
    got = retrieval_metrics(x, y, ks, distance, backend=backend)
    expected = retrieval_reference(x.double(), y, x.double(), y, ks, distance, True)
    check_against_reference(got, expected, tol=1e-6)
    assert got["retrieval_lone_queries"] == 1 and 0 < expected["map_at_r"] < expected["precision_at_1"] < 1


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_matches_pml_accuracy_calculator(distance, seed):
    x, y = clustered([7, 12, 3, 9, 1, 15, 6], dim=8, spread=1.5, seed=40 + seed, dtype=torch.float32)
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=CustomKNN(PML_DISTANCE[distance]),
    )
    pml = calc.get_accuracy(x, y)
    got = retrieval_metrics(x, y, (1,), distance, memory_mb=0.01, backend="torch")  # tiny chunks
    assert got["precision_at_1"] == pytest.approx(pml["precision_at_1"], abs=1e-12)
    assert got["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-12)
    assert got["map_at_r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-12)
    assert 0.1 < got["map_at_r"] < 0.95  # neither trivial nor perfect


@pytest.mark.parametrize("distance", DISTANCES)
def test_separate_gallery_matches_pml_and_loops(distance):
    q, ql = clustered([3, 3, 3, 2], dim=5, spread=1.2, seed=50, dtype=torch.float32)
    g, gl = clustered([4, 6, 2, 5], dim=5, spread=1.2, seed=50, dtype=torch.float32)  # same centres (same seed)
    ql = torch.where(ql == 3, torch.tensor(9), ql)  # class 9 has no gallery image: excluded
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=CustomKNN(PML_DISTANCE[distance]),
    )
    pml = calc.get_accuracy(q, ql, g, gl, ref_includes_query=False)
    got = retrieval_metrics(q, ql, (1, 3), distance, gallery=g, gallery_labels=gl, backend="torch")
    assert got["retrieval_gallery"] == "separate" and got["retrieval_lone_queries"] == 2
    assert got["map_at_r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-12)
    assert got["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-12)
    check_against_reference(got, retrieval_reference(q.double(), ql, g.double(), gl, (1, 3), distance, False), tol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_lower_gallery_index(backend):
    # Integer points, so every distance is exact. Query 0 at x=0 has two neighbours at distance 1: row 1
    # (other class) and row 2 (its class); the lower index wins, so its precision@1 is 0, recall@2 is 1.
    x = torch.tensor([[0.0], [1.0], [-1.0], [5.0], [5.0], [5.0]])
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    got = retrieval_metrics(x, y, (1, 2), "euclidean", backend=backend)
    expected = retrieval_reference(x, y, x, y, (1, 2), "euclidean", True)
    check_against_reference(got, expected)
    # Query 4 (x=5) has rows 3 and 5 at distance 0: row 3 comes first and is another class.
    assert nearest_neighbours(x, 2, "euclidean", backend=backend)[4].tolist() == [3, 5]
    assert nearest_neighbours(x, 2, "euclidean", backend=backend)[0].tolist() == [1, 2]


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_with_many_duplicates_at_the_k_boundary(distance, backend):
    # 4 distinct integer points, each repeated 6 times (labels mixed): every top-k crosses a tie group.
    base = torch.tensor([[1.0, 2.0], [2.0, -1.0], [-3.0, 1.0], [0.0, 4.0]])
    x = base.repeat(6, 1)
    y = torch.arange(24) % 3
    for k in (1, 5, 7):
        got = nearest_neighbours(x, k, distance, chunk=5, backend=backend)
        for q in range(24):
            order = sorted((j for j in range(24) if j != q), key=lambda j: (ref_distance(x[q], x[j], distance), j))
            assert got[q].tolist() == order[:k], (k, q)
    check_against_reference(retrieval_metrics(x, y, (1, 3), distance, backend=backend), retrieval_reference(x, y, x, y, (1, 3), distance, True))


def test_single_class_and_all_lone_classes():
    x = torch.randn(6, 3)
    one = retrieval_metrics(x, torch.zeros(6, dtype=torch.long), (1, 10), "cosine")
    assert (one["recall_at_1"], one["precision_at_1"], one["r_precision"], one["map_at_r"], one["retrieval_queries"]) == (1.0, 1.0, 1.0, 1.0, 6)
    lone = retrieval_metrics(x, torch.arange(6), (1,), "cosine")
    assert lone["retrieval_queries"] == 0 and lone["retrieval_lone_queries"] == 6 and math.isnan(lone["map_at_r"])


@pytest.mark.parametrize("distance", DISTANCES)
def test_chunk_size_from_memory_bound_does_not_change_results(distance):
    x, y = clustered([9] * 12, dim=6, spread=1.4, seed=60, dtype=torch.float32)
    results = [retrieval_metrics(x, y, (1, 4), distance, memory_mb=mb, backend="torch") for mb in (0.002, 0.05, 1024)]
    for key, value in results[2].items():
        assert results[0][key] == pytest.approx(value, abs=1e-12) and results[1][key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
@pytest.mark.parametrize("distance", DISTANCES)
def test_faiss_and_torch_agree(distance):
    x, y = clustered([20] * 15, dim=16, spread=1.5, seed=61, dtype=torch.float32)
    a = retrieval_metrics(x, y, (1, 8), distance, backend="torch")
    b = retrieval_metrics(x, y, (1, 8), distance, backend="faiss")
    assert b["knn_backend"] == "faiss" and a["knn_backend"] == "torch"
    for key in ("recall_at_1", "recall_at_8", "precision_at_1", "r_precision", "map_at_r"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


# ------------------------------------------------------------------------------------------ verification


def threshold_loop_reference(same, dist, fars):
    """Every distance threshold t ('same' if d ≤ t), plus 'nothing is same', by brute force; the first
    (smallest) threshold wins a tie of balanced accuracy."""
    same, dist = list(map(bool, same)), list(map(float, dist))
    pos, neg = sum(same), len(same) - sum(same)
    points = []
    for t in [-math.inf, *sorted(set(dist))]:
        tp = sum(1 for s, d in zip(same, dist) if s and d <= t)
        fp = sum(1 for s, d in zip(same, dist) if not s and d <= t)
        points.append((fp / neg, tp / pos, Fraction(tp, pos) / 2 + Fraction(neg - fp, neg) / 2, t))
    best = max(points, key=lambda p: p[2])  # exact fractions: ties are ties
    out = {f"verification_tar_at_far_{f:g}": max(p[1] for p in points if p[0] <= f) for f in fars}
    return out | {"verification_balanced_accuracy_best_threshold": best[2], "best_threshold": best[3]}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_metrics_match_loops_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    same = rng.random(400) < 0.3
    dist = np.round(rng.normal(1.0, 0.5, 400) - 0.6 * same, 1)  # rounded: many ties
    fars = (0.01, 0.1, 0.5)
    got = roc_metrics(same, dist, fars)
    expected = threshold_loop_reference(same, dist, fars)
    for key in expected:
        if key != "best_threshold":
            assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    assert (dist <= got["verification_best_threshold"]).tolist() == (dist <= expected["best_threshold"]).tolist()
    assert got["verification_roc_auc"] == pytest.approx(roc_auc_score(same, -dist), abs=1e-12)
    fpr, tpr, _ = roc_curve(same, -dist)
    eer = brentq(lambda f: 1.0 - f - np.interp(f, fpr, tpr), 0.0, 1.0)  # the usual face-verification recipe
    assert got["verification_eer"] == pytest.approx(eer, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_balanced_accuracy_on_skewed_pairs_matches_sklearn_loop_not_plain_accuracy(seed):
    # 1% same-class pairs, as in a many-class test set: plain accuracy is best when nothing is called "same".
    rng = np.random.default_rng(seed)
    same = rng.random(3000) < 0.01
    dist = np.round(rng.normal(1.0, 0.3, 3000) - 0.4 * same, 2)
    got = roc_metrics(same, dist, ())
    candidates = [-math.inf, *np.unique(dist)]
    balanced = [balanced_accuracy_score(same, dist <= t) for t in candidates]
    plain = [accuracy_score(same, dist <= t) for t in candidates]
    best = int(np.argmax(balanced))
    assert got["verification_balanced_accuracy_best_threshold"] == pytest.approx(balanced[best], abs=1e-12)
    assert got["verification_best_threshold"] == candidates[best]
    assert 0.7 < balanced[best] < 0.95
    assert max(plain) > 0.985 and balanced[int(np.argmax(plain))] < 0.55  # the old metric: "all different"


def test_roc_metrics_hand_made():
    # distances 1..6; same-class pairs at 1, 2, 4. Threshold 2: TAR 2/3, TRR 1; threshold 4: TAR 1, TRR 2/3.
    # Both have balanced accuracy 5/6; the smaller threshold wins the tie.
    same = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    got = roc_metrics(same, np.arange(1.0, 7.0), (0.01, 0.34))
    assert got["verification_balanced_accuracy_best_threshold"] == pytest.approx(5 / 6)
    assert got["verification_best_threshold"] == 2.0
    assert got["verification_tar_at_far_0.01"] == pytest.approx(2 / 3)
    assert got["verification_tar_at_far_0.34"] == 1.0
    assert got["verification_eer"] == pytest.approx(1 / 3)  # at t = 4 (or 3): FAR = FRR = 1/3
    assert got["verification_roc_auc"] == pytest.approx(8 / 9)
    # One same-class pair in ten, at distance 3: plain accuracy would pick "nothing is same" (0.9);
    # balanced accuracy picks 3: TAR 1, TRR 7/9.
    got = roc_metrics(np.arange(10) == 2, np.arange(1.0, 11.0), ())
    assert got["verification_balanced_accuracy_best_threshold"] == pytest.approx(8 / 9)
    assert got["verification_best_threshold"] == 3.0


def test_validation_threshold_is_chosen_on_validation_pairs():
    x, y = clustered([5] * 8, dim=4, spread=1.2, seed=70)
    vx, vy = clustered([5] * 6, dim=4, spread=1.2, seed=71)
    got = verification_metrics(x, y, "euclidean", 10**6, 0, val_embeddings=vx, val_labels=vy)
    vn, n = len(vx), len(x)
    val = threshold_loop_reference(
        [vy[a] == vy[b] for a in range(vn) for b in range(a + 1, vn)],
        [ref_distance(vx[a], vx[b], "euclidean") for a in range(vn) for b in range(a + 1, vn)],
        (),
    )
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    same = [bool(y[a] == y[b]) for a, b in pairs]
    called = [ref_distance(x[a], x[b], "euclidean") <= val["best_threshold"] for a, b in pairs]
    assert got["verification_val_threshold"] == pytest.approx(val["best_threshold"], abs=1e-9)
    assert got["verification_balanced_accuracy_val_threshold"] == pytest.approx(balanced_accuracy_score(same, called), abs=1e-12)
    assert got["verification_balanced_accuracy_val_threshold"] <= got["verification_balanced_accuracy_best_threshold"]
    assert "verification_note" not in got


def test_stratified_sample_keeps_the_same_class_fraction_and_distinct_pairs():
    y = torch.arange(300) % 40  # 300 images, 40 classes: 44850 pairs
    same_population = sum(int(y[a] == y[b]) for a in range(300) for b in range(a + 1, 300))
    pairs = select_pairs(y, 5000, seed=3)
    i, j = pairs["i"].numpy(), pairs["j"].numpy()
    assert pairs["rule"] == "sampled" and len(i) == 5000
    assert (i < j).all() and len(set(zip(i.tolist(), j.tolist()))) == 5000
    assert (y[i] == y[j]).sum() == round(5000 * same_population / 44850)
    again = select_pairs(y, 5000, seed=3)
    assert (again["i"] == pairs["i"]).all() and (again["j"] == pairs["j"]).all()


def test_stratified_sample_scales_to_half_a_million_labels():
    y = torch.from_numpy(np.random.default_rng(0).integers(0, 5000, 500_000))
    pairs = select_pairs(y, 20_000, seed=0)
    same = (y[pairs["i"]] == y[pairs["j"]]).float().mean()
    assert len(pairs["i"]) == 20_000 and (pairs["i"] < pairs["j"]).all()
    assert same * 20_000 == pytest.approx(20_000 / 5000, abs=1.5)  # ≈ 1/5000 of pairs are same-class


def test_unrank_pairs_is_exact():
    n = 70
    a, b = _unrank_pairs(np.arange(n * (n - 1) // 2))
    assert sorted(zip(a.tolist(), b.tolist())) == [(p, q) for p in range(n) for q in range(p + 1, n)]
    big = np.array([2**31 * (2**31 - 1) // 2 - 1, 2**52 + 12345, 10**15 + 7])  # float sqrt alone can be off by one
    a, b = _unrank_pairs(big)
    assert ((b * (b - 1) // 2 + a) == big).all() and (a < b).all() and (a >= 0).all()


# ------------------------------------------------------------------------------------------ few-shot


def exact_few_shot_expectation(dist, pools, n_way, k_shot, one_pool):
    """Mean and std of episode accuracy over every possible episode: every set of n_way classes equally
    likely and, within a set, every choice of a (k_shot support subset, query) per class equally likely —
    query outside the support when the pools are one. `dist[q][s]` is the query-to-support distance.
    Independent of any random draw order."""
    options = [[(support, q) for support in combinations(s_pool, k_shot) for q in q_pool if not (one_pool and q in support)] for s_pool, q_pool in pools]
    moments = []
    for classes in combinations(range(len(pools)), n_way):
        accuracies = []
        for episode in product(*(options[c] for c in classes)):
            right = 0
            for w, (_, q) in enumerate(episode):
                right += min((dist[q][s], v) for v, (support, _) in enumerate(episode) for s in support)[1] == w
            accuracies.append(right / n_way)
        moments.append((np.mean(accuracies), np.mean(np.square(accuracies))))
    mean, square = np.mean(moments, axis=0)
    return float(mean), float(math.sqrt(square - mean**2))


def check_expectation(got, name, mean, std, episodes):
    """The implementation's Monte-Carlo mean within 4.5 of its standard errors of the exact expectation,
    and its standard error close to the exact one."""
    assert got[f"{name}_accuracy_stderr"] == pytest.approx(std / math.sqrt(episodes), rel=0.15)
    assert abs(got[f"{name}_accuracy"] - mean) < 4.5 * got[f"{name}_accuracy_stderr"]


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("n_way,k_shot", [(3, 1), (3, 2)])
def test_few_shot_agrees_with_the_exact_expectation_over_all_episodes(distance, n_way, k_shot):
    x, y = clustered([3, 4, 2, 5, 3, 1], dim=3, spread=1.0, seed=80)  # class 5: too few for any; class 2: for 2-shot
    dist = [[ref_distance(x[a], x[b], distance) for b in range(len(x))] for a in range(len(x))]
    pools = [(m, m) for m in (np.flatnonzero(y.numpy() == c) for c in range(6)) if len(m) >= k_shot + 1]
    mean, std = exact_few_shot_expectation(dist, pools, n_way, k_shot, one_pool=True)
    got = few_shot_accuracy(x, y, distance, n_way, k_shot, episodes=4000, seed=4)
    assert got["few_shot_classes"] == len(pools) == (5 if k_shot == 1 else 4) and 0.4 < mean < 0.9
    check_expectation(got, f"few_shot_{n_way}way_{k_shot}shot", mean, std, 4000)


@pytest.mark.parametrize("k_shot", [1, 2])
def test_few_shot_with_a_gallery_agrees_with_the_exact_expectation(k_shot):
    # Queries hold one or two images per class (episodes within them are impossible for 2-shot); support
    # comes from the gallery. Class 4 has no gallery image, class 5 no query: neither qualifies.
    gen = torch.Generator().manual_seed(81)
    centres = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    ql = torch.tensor([0, 1, 1, 2, 3, 4, 4])
    gl = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 5, 5, 5])
    q, g = (centres[lab] + 0.8 * torch.randn(len(lab), 3, generator=gen, dtype=torch.float64) for lab in (ql, gl))
    dist = [[ref_distance(q[a], g[b], "euclidean") for b in range(len(g))] for a in range(len(q))]
    pools = [(np.flatnonzero(gl.numpy() == c), np.flatnonzero(ql.numpy() == c)) for c in range(4)]
    mean, std = exact_few_shot_expectation(dist, pools, 3, k_shot, one_pool=False)
    got = few_shot_accuracy(q, ql, "euclidean", 3, k_shot, episodes=4000, seed=5, gallery=g, gallery_labels=gl)
    assert got["few_shot_classes"] == 4 and 0.4 < mean < 0.95 and "few_shot_note" not in got
    check_expectation(got, f"few_shot_3way_{k_shot}shot", mean, std, 4000)


@pytest.mark.parametrize("gallery", [False, True])
def test_episodes_draw_classes_and_images_uniformly(gallery):
    sizes = [2, 3, 5, 1, 4, 2, 6, 3]  # class 3 has one image: never drawn without a gallery
    y = torch.repeat_interleave(torch.arange(8), torch.tensor(sizes))
    gl = torch.repeat_interleave(torch.arange(8), torch.tensor([1, 1, 1, 1, 1, 1, 1, 0])) if gallery else None
    pools = class_pools(y, 1, gl)
    qualifying = [c for c in range(8) if (sizes[c] >= 2 if not gallery else c != 7)]
    episodes, n_way = 3000, 4
    support, query, drawn = draw_episodes(pools, n_way, 1, episodes, np.random.default_rng(6))
    classes = y[torch.from_numpy(query)].numpy()
    assert (np.sort(classes, 1)[:, 1:] != np.sort(classes, 1)[:, :-1]).all()  # n distinct classes per episode
    assert (classes == np.array(qualifying)[drawn]).all()
    assert ((gl if gallery else y)[torch.from_numpy(support[..., 0])].numpy() == classes).all()  # support of the query's class
    if not gallery:
        assert (support[..., 0] != query).all()  # distinct images
    p = n_way / len(qualifying)  # every qualifying class equally often: binomial counts within 5 sd
    counts = np.bincount(classes.ravel(), minlength=8)
    assert counts[[c for c in range(8) if c not in qualifying]].sum() == 0
    assert np.abs(counts[qualifying] - episodes * p).max() < 5 * math.sqrt(episodes * p * (1 - p))
    for c in (2, 6):  # within a class, each image is the query equally often
        per_image = np.bincount(query[classes == c], minlength=len(y))[y.numpy() == c]
        expected = counts[c] / sizes[c]
        assert np.abs(per_image - expected).max() < 5 * math.sqrt(expected), c


def test_few_shot_with_a_gallery_on_a_constructed_set():
    # l1 on integer points, so every distance is exact. Gallery: 3 copies of each class's corner 10·e_c.
    # Queries: one per class; classes 0–2 sit on their own corner, classes 3–5 on the corner of class c − 3,
    # class 7 has no gallery image, class 6 no query. 6-way: every qualifying class is in every episode, so
    # exactly the queries of classes 0–2 are right: accuracy 1/2 in every episode.
    corners = 10 * torch.eye(8)
    g, gl = corners[:7].repeat_interleave(3, 0), torch.arange(7).repeat_interleave(3)
    ql = torch.tensor([0, 1, 2, 3, 4, 5, 7])
    q = corners[torch.tensor([0, 1, 2, 0, 1, 2, 7])]
    got = few_shot_accuracy(q, ql, "l1", 6, 1, episodes=50, seed=0, gallery=g, gallery_labels=gl)
    assert got["few_shot_classes"] == 6
    assert got["few_shot_6way_1shot_accuracy"] == 0.5 and got["few_shot_6way_1shot_accuracy_stderr"] == 0.0
    within = few_shot_accuracy(q, ql, "l1", 6, 1, episodes=50)  # one image per query class: no episode
    assert math.isnan(within["few_shot_6way_1shot_accuracy"]) and "2+ images" in within["few_shot_note"]


def test_few_shot_needs_n_way_classes():
    got = few_shot_accuracy(torch.randn(12, 3), torch.arange(12) % 4, "cosine", n_way=20, k_shot=1, episodes=10)
    assert math.isnan(got["few_shot_20way_1shot_accuracy"]) and got["few_shot_classes"] == 4
    assert got["few_shot_note"].startswith("4 classes have 2+ images, a 20-way episode needs 20")


# ------------------------------------------------------------------------------------------ evaluate


def test_evaluate_row_is_flat_and_distance_can_be_overridden():
    x, y = clustered([6] * 25, dim=8, spread=1.0, seed=90)
    row = evaluate(x, y, "l1", EvalConfig(episodes=20, distance="euclidean"), seed=1)
    assert row["distance"] == "euclidean"
    assert all(isinstance(v, (int, float, str)) for k, v in row.items() if k != "verification_roc")  # the ROC: points for plots
    assert set(row["verification_roc"]) == {"fpr", "tpr"}
    for key in (
        "verification_roc_auc",
        "verification_eer",
        "verification_tar_at_far_0.01",
        "verification_tar_at_far_0.001",
        "verification_balanced_accuracy_best_threshold",
        "recall_at_8",
        "precision_at_1",
        "r_precision",
        "map_at_r",
        "few_shot_20way_1shot_accuracy",
        "few_shot_20way_1shot_accuracy_stderr",
    ):
        assert isinstance(row[key], float) and not math.isnan(row[key]), key
    assert not [k for k in row if k.endswith("_note")]
    # euclidean, not the l1 asked for: checked against PML and sklearn, not against our own functions
    calc = AccuracyCalculator(include=("r_precision",), k="max_bin_count", device=torch.device("cpu"), knn_func=CustomKNN(PML_DISTANCE["euclidean"]))
    assert row["r_precision"] == pytest.approx(calc.get_accuracy(x.float(), y)["r_precision"], abs=1e-6)
    i, j = np.triu_indices(len(x), 1)
    auc = roc_auc_score((y[i] == y[j]).numpy(), -(x[i] - x[j]).norm(dim=1).numpy())
    assert row["verification_roc_auc"] == pytest.approx(auc, abs=1e-6)


@pytest.mark.parametrize(
    "embeddings,labels,message",
    [
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), torch.tensor([0, 0]), "NaN"),
        (torch.randn(3, 2), torch.tensor([0, 1]), "one integer label per embedding"),
        (torch.randn(3, 2), torch.tensor([0.0, 1.0, 1.0]), "must be integers"),
        (torch.randn(3), torch.tensor([0, 1, 1]), "2-D"),
    ],
)
def test_evaluate_rejects_bad_input_in_one_line(embeddings, labels, message):
    with pytest.raises(UserError, match=message) as err:
        evaluate(embeddings, labels, "cosine")
    assert "\n" not in str(err.value)


def test_evaluate_rejects_gallery_of_another_dimension():
    with pytest.raises(UserError, match="gallery: embeddings have 3 dimensions"):
        evaluate(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), "cosine", gallery=torch.randn(4, 3), gallery_labels=torch.tensor([0, 0, 1, 1]))


# ------------------------------------------------------------- the fast paths against slow, obvious ones


@pytest.mark.parametrize("seed", range(4))
def test_roc_of_distances_is_sklearns_roc_curve_value_for_value(seed):
    rng = np.random.default_rng(seed)
    for n in (2, 3, 50, 3000):
        same = rng.random(n) < (0.5, 0.05, 0.3, 0.01)[seed]
        same[0], same[-1] = True, False  # both kinds
        dist = rng.normal(size=n)
        if seed % 2:
            dist = np.round(dist, 1)  # ties, within and across kinds
        if seed == 2:
            dist = dist.astype(np.float32).astype(np.float64)  # what pair_distances hands over
        for mine, theirs in zip(roc_of_distances(same, dist), roc_curve(same, -dist)):
            assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
        assert roc_metrics(same, dist, ())["verification_roc_auc"] == roc_auc_score(same, -dist)


@pytest.mark.parametrize("finish", [False, True])
def test_smallest_k_is_a_stable_sort_of_each_row(finish):
    g = torch.Generator().manual_seed(5)
    root = (lambda x: x.clamp_min_(0).sqrt_()) if finish else None  # cdist's own clamp and square root
    for rows, n, k in [(0, 10, 3), (7, 1, 1), (7, 9, 9), (7, 10, 5), (7, 11, 6), (30, 257, 5), (30, 1000, 19), (5, 3000, 99)]:
        for values in (
            torch.randint(-3, 4, (rows, n), generator=g).float(),  # ties everywhere, the k-th place too
            torch.randn(rows, n, generator=g, dtype=torch.float64),
        ):
            if rows:
                values[:, 0] = float("inf")  # a query's own column
            expected = (root(values.clone()) if finish else values).sort(dim=1, stable=True).indices[:, :k]
            assert torch.equal(smallest_k(values.clone(), k, root), expected), (rows, n, k)


@pytest.mark.parametrize("distance", ["euclidean", "l1"])
def test_ranking_is_torch_cdist_bit_for_bit(distance):
    g = torch.Generator().manual_seed(6)
    for n_query, n_gallery, dim in [(3, 5, 2), (30, 20, 3), (20, 40, 8), (93, 600, 128)]:
        q, gallery = torch.randn(n_query, dim, generator=g), torch.randn(n_gallery, dim, generator=g)
        assert torch.equal(_ranking_matrix(q, gallery, distance), torch.cdist(q, gallery, p=2.0 if distance == "euclidean" else 1.0))


@pytest.mark.parametrize("distance", DISTANCES)
def test_gathered_pair_distances_are_the_pairs_distances_bit_for_bit(distance):
    g = torch.Generator().manual_seed(7)
    for dtype in (torch.float32, torch.float64):
        x, other = torch.randn(50, 33, generator=g, dtype=dtype), torch.randn(40, 33, generator=g, dtype=dtype)
        i, j = torch.randint(0, 50, (701,), generator=g), torch.randint(0, 40, (701,), generator=g)
        for step in (1, 7, 10**6):
            assert torch.equal(_gathered_pair_distances(x, other, i, j, distance, step), _pair_distance(x[i], other[j], distance))


def test_first_occurrences_are_numpy_uniques():
    rng = np.random.default_rng(8)
    for n, high in [(0, 5), (1, 5), (10, 3), (1000, 50), (100_000, 10**9)]:
        values = rng.integers(0, high, n)
        assert np.array_equal(_first_occurrences(values), np.unique(values, return_index=True)[1])


@pytest.mark.parametrize("distance", DISTANCES)
def test_metrics_on_random_data_match_pml_sklearn_and_brute_force(distance):
    # 600 images of 30 classes: 19 neighbours among 599 (smallest_k's block bound at work), 20,000 of 179,700 pairs (sampled)
    x, y = clustered([20] * 30, dim=16, spread=1.0, seed=91, dtype=torch.float32)
    got = evaluate(x, y, distance, EvalConfig(max_pairs=20_000, episodes=50, recall_k=(1, 4)), seed=3)
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=CustomKNN(PML_DISTANCE[distance]),
    )
    pml = calc.get_accuracy(x, y)
    assert got["precision_at_1"] == pytest.approx(pml["precision_at_1"], abs=1e-12)
    assert got["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-12)
    assert got["map_at_r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-12)
    d = cdist(x.double().numpy(), x.double().numpy(), {"l1": "cityblock"}.get(distance, distance))  # scipy, in float64
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    hit = y.numpy()[order] == y.numpy()[:, None]
    assert got["recall_at_4"] == pytest.approx(hit[:, :4].any(1).mean(), abs=1e-12)
    pairs = select_pairs(y, 20_000, 3)
    i, j = pairs["i"].numpy(), pairs["j"].numpy()
    assert pairs["rule"] == "sampled"
    assert got["verification_roc_auc"] == pytest.approx(roc_auc_score(y.numpy()[i] == y.numpy()[j], -d[i, j]), abs=1e-6)
    assert 0.6 < got["verification_roc_auc"] < 0.99 and 0.1 < got["map_at_r"] < 0.9  # neither trivial nor perfect


def test_label_work_remembered_between_evaluations_is_a_fresh_draw():
    """The pair sample and the episodes depend on the labels and the seed alone, so a grid draws them once; a
    caller that writes into what it got changes nothing for the next one."""
    y = torch.arange(400) % 23
    first = select_pairs(y, 3000, 4)
    first["i"][:] = 0
    again, fresh = select_pairs(y, 3000, 4), _select_pairs(y, 3000, 4)
    assert torch.equal(again["i"], fresh["i"]) and torch.equal(again["j"], fresh["j"]) and again["rule"] == "sampled"
    x = torch.randn(400, 5, generator=torch.Generator().manual_seed(9))
    items = [{}, {}]
    scores = [few_shot_accuracy(x, y, "cosine", 5, 1, 40, 2, items=kept) for kept in items]
    _EPISODES.kept.clear()
    fresh_items: dict = {}
    assert few_shot_accuracy(x, y, "cosine", 5, 1, 40, 2, items=fresh_items) == scores[0] == scores[1]
    assert all(np.array_equal(fresh_items[k], kept[k]) for kept in items for k in fresh_items)


def test_a_cell_embeds_each_image_once_per_weights_and_reuses_exactly(monkeypatch):
    """The test score's validation threshold takes the selected curve point's validation embeddings: what embedding
    the validation images again with the restored weights gives, bit for bit; no (weights, images) is embedded twice."""
    import hashlib

    from bench.builtins import load_builtins
    from bench.grid import parse_grid
    from bench.plugins import DATASETS
    from bench.run import cell as cell_module

    load_builtins()
    cell = parse_grid(
        {
            "budget": {"max_steps": 4},
            "train": {"select": "best", "batch_size": 16},
            "split": {"val_fraction": 0.2},
            "eval": {"curve": [0.5, 1.0], "episodes": 10, "n_way": 3},
            "backbone": {"conv4": {"image_size": 28}},
            "axes": {"backbone": ["conv4"], "loss": ["contrastive"], "dataset": ["digits"]},
        },
        "g",
    ).cells[0]
    real_embed, real_evaluate = cell_module.embed, cell_module.evaluate
    calls, last, checked = [], {}, []

    def fingerprint(*tensors):
        return hashlib.sha256(b"".join(t.detach().contiguous().numpy().tobytes() for t in tensors)).hexdigest()

    def spy_embed(model, inputs, *args):
        calls.append((fingerprint(*model.state_dict().values()), fingerprint(inputs)))
        last.update(model=model, args=args, **({} if "val" in last else {"val": inputs}))  # the first call: the curve's validation split
        return real_embed(model, inputs, *args)

    def spy_evaluate(*args, **kwargs):
        if kwargs.get("val_embeddings") is not None:
            checked.append(torch.equal(kwargs["val_embeddings"], real_embed(last["model"], last["val"], *last["args"])))
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(cell_module, "embed", spy_embed)
    monkeypatch.setattr(cell_module, "evaluate", spy_evaluate)
    out = cell_module.train_and_evaluate(cell, Job("g"), DATASETS.get("digits").factory(), {}, torch.device("cpu"))
    assert checked == [True] and out["train"]["selected"]
    assert len(calls) == 3 and len(set(calls)) == 3  # the two curve points' validation images, then the test images only

"""Evaluation metrics checked against brute-force Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from refs import DISTANCES, clustered, ref_distance
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from bench.eval import metrics, verification
from bench.eval.metrics import nearest_neighbours, recall_at_k, verification_roc_auc

# ------------------------------------------------------------------------------- verification ROC-AUC


def exact_auc_reference(embeddings, labels, distance):
    same, scores = [], []
    n = len(embeddings)
    for i in range(n):
        for j in range(i + 1, n):
            same.append(int(labels[i]) == int(labels[j]))
            scores.append(-ref_distance(embeddings[i], embeddings[j], distance))
    return roc_auc_score(same, scores), len(same)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("seed", [0, 1])
def test_roc_auc_all_pairs_matches_double_loop(distance, seed):
    embeddings, labels = clustered([4, 6, 3, 5, 2], spread=1.0, seed=seed)
    expected, total = exact_auc_reference(embeddings, labels, distance)
    out = verification_roc_auc(embeddings, labels, distance, max_pairs=total, seed=0)
    assert out["verification_pair_rule"] == "all"
    assert out["verification_pairs"] == total == 20 * 19 // 2
    assert 0.5 < expected < 1.0  # neither trivial nor perfect
    assert out["verification_roc_auc"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("distance", DISTANCES)
def test_roc_auc_all_pairs_float32(distance):
    embeddings, labels = clustered([5, 5, 5, 5], spread=1.0, seed=3, dtype=torch.float32)
    expected, total = exact_auc_reference(embeddings, labels, distance)
    out = verification_roc_auc(embeddings, labels, distance, max_pairs=10**6, seed=0)
    assert out["verification_pairs"] == total
    assert out["verification_roc_auc"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("distance", DISTANCES)
def test_all_pair_distances_in_triu_order_across_chunks(distance):
    embeddings, _ = clustered([3, 4], seed=4)
    n = len(embeddings)
    expected = [ref_distance(embeddings[i], embeddings[j], distance) for i in range(n) for j in range(i + 1, n)]
    for chunk in (1, 2, 3, n, 1024):
        got = metrics._all_pair_distances(embeddings, distance, chunk=chunk)
        assert got.tolist() == pytest.approx(expected, abs=1e-9)


def test_roc_auc_samples_when_pairs_exceed_max_pairs():
    embeddings, labels = clustered([6] * 10, seed=5)  # 60 images: 1770 pairs
    out = verification_roc_auc(embeddings, labels, "euclidean", max_pairs=1769, seed=0)
    assert out["verification_pair_rule"] == "sampled"
    assert out["verification_pairs"] == 1769
    out = verification_roc_auc(embeddings, labels, "euclidean", max_pairs=1770, seed=0)
    assert out["verification_pair_rule"] == "all"
    assert out["verification_pairs"] == 1770


@pytest.mark.parametrize("distance", DISTANCES)
def test_sampled_roc_auc_is_deterministic_by_seed(distance):
    embeddings, labels = clustered([5] * 12, spread=1.2, seed=6)
    a = verification_roc_auc(embeddings, labels, distance, max_pairs=500, seed=1)
    b = verification_roc_auc(embeddings, labels, distance, max_pairs=500, seed=1)
    c = verification_roc_auc(embeddings, labels, distance, max_pairs=500, seed=2)
    assert a == b
    assert a["verification_roc_auc"] != c["verification_roc_auc"]


@pytest.mark.parametrize("distance", DISTANCES)
def test_sampled_roc_auc_is_close_to_exact(distance):
    embeddings, labels = clustered([10] * 20, spread=0.8, seed=7)  # 200 images: 19900 pairs
    exact = verification_roc_auc(embeddings, labels, distance, max_pairs=10**6, seed=0)
    sampled = verification_roc_auc(embeddings, labels, distance, max_pairs=8000, seed=3)
    assert exact["verification_pair_rule"] == "all" and sampled["verification_pair_rule"] == "sampled"
    assert 0.75 < exact["verification_roc_auc"] < 0.999
    assert sampled["verification_roc_auc"] == pytest.approx(exact["verification_roc_auc"], abs=0.03)


def test_sampled_pairs_are_distinct_images_and_unbiased(monkeypatch):
    """Capture what the sampled path hands to the ROC: no pair of an image with itself (distance 0)
    and a same-class fraction close to the population's."""
    embeddings, labels = clustered([4] * 25, seed=8)  # 100 images, 4950 pairs, 150 of them same-class
    seen = {}
    real = verification.roc_of_distances

    def spy_curve(same, dist):
        seen["y"], seen["d"] = np.asarray(same), np.asarray(dist)
        return real(same, dist)

    monkeypatch.setattr(verification, "roc_of_distances", spy_curve)
    verification_roc_auc(embeddings, labels, "euclidean", max_pairs=4000, seed=0)
    assert len(seen["y"]) == 4000
    assert (seen["d"] > 0).all()  # a self-pair would be at distance exactly 0
    population = 150 / 4950
    assert abs(seen["y"].mean() - population) < 0.015


@pytest.mark.parametrize("max_pairs", [10**6, 10])
def test_roc_auc_single_class_is_nan(max_pairs):
    embeddings = torch.randn(8, 3)
    out = verification_roc_auc(embeddings, torch.zeros(8, dtype=torch.long), "cosine", max_pairs=max_pairs, seed=0)
    assert math.isnan(out["verification_roc_auc"])


def test_roc_auc_all_different_classes_is_nan():
    out = verification_roc_auc(torch.randn(6, 3), torch.arange(6), "euclidean", max_pairs=10**6, seed=0)
    assert math.isnan(out["verification_roc_auc"])
    assert out["verification_pairs"] == 15


def test_roc_auc_perfect_separation_is_one():
    embeddings = torch.tensor([[0.0], [0.1], [5.0], [5.2], [10.0], [10.3]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert verification_roc_auc(embeddings, labels, "euclidean", 10**6, 0)["verification_roc_auc"] == 1.0


# ------------------------------------------------------------------------------------------ recall@k


def recall_reference(embeddings, labels, ks, distance):
    n = len(embeddings)
    labels = [int(x) for x in labels]
    hits = {k: 0 for k in ks}
    queries = 0
    for q in range(n):
        if sum(1 for j in range(n) if j != q and labels[j] == labels[q]) == 0:
            continue
        queries += 1
        order = sorted((j for j in range(n) if j != q), key=lambda j: ref_distance(embeddings[q], embeddings[j], distance))
        for k in ks:
            if any(labels[j] == labels[q] for j in order[:k]):
                hits[k] += 1
    out = {f"recall_at_{k}": hits[k] / queries if queries else float("nan") for k in ks}
    out["retrieval_queries"] = queries
    return out


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("seed", [0, 1])
def test_recall_at_k_matches_brute_force(distance, seed):
    # class 5 is a lone image; class 0 has 2 images (k=4, 8 exceed its size); k=40 exceeds n - 1
    embeddings, labels = clustered([2, 3, 6, 4, 5, 1], spread=1.3, seed=10 + seed)
    ks = (1, 2, 4, 8, 40)
    got = recall_at_k(embeddings, labels, ks, distance)
    expected = recall_reference(embeddings, labels, ks, distance)
    assert got["retrieval_queries"] == expected["retrieval_queries"] == len(labels) - 1
    for k in ks:
        assert got[f"recall_at_{k}"] == pytest.approx(expected[f"recall_at_{k}"], abs=1e-6), k  # float32 mean
    assert 0 < expected["recall_at_1"] < 1  # not a trivial case
    assert got["recall_at_40"] == 1.0


def test_recall_at_k_hand_made():
    # 1-D points; per query the neighbour order (by |x - y|) and labels are worked out by hand:
    #   q0 (x=0,  c0): 1(c1) 2(c0) 3(c1) 4(c2)  -> first hit at rank 2
    #   q1 (x=1,  c1): 0(c0) 2(c0) 3(c1) 4(c2)  -> first hit at rank 3
    #   q2 (x=10, c0): 3(c1) 1(c1) 0(c0) 4(c2)  -> first hit at rank 3
    #   q3 (x=10.5, c1): 2(c0) 1(c1) ...        -> first hit at rank 2
    #   q4 (x=30, c2): lone class, excluded
    embeddings = torch.tensor([[0.0], [1.0], [10.0], [10.5], [30.0]])
    labels = torch.tensor([0, 1, 0, 1, 2])
    for distance in ("euclidean", "l1"):
        got = recall_at_k(embeddings, labels, (1, 2, 3), distance)
        assert got == {"recall_at_1": 0.0, "recall_at_2": 0.5, "recall_at_3": 1.0, "retrieval_queries": 4}


def test_recall_at_k_cosine_hand_made():
    # Directions: class 0 near 0°, class 1 near 90°, lone class 2 at 180°. Magnitudes differ wildly,
    # which cosine must ignore (euclidean would put the tiny vectors next to each other).
    embeddings = torch.tensor([[100.0, 1.0], [0.01, 0.0001], [0.0, 0.01], [1.0, 100.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    assert recall_at_k(embeddings, labels, (1,), "cosine") == {"recall_at_1": 1.0, "retrieval_queries": 4}
    assert recall_at_k(embeddings, labels, (1,), "euclidean")["recall_at_1"] < 1.0


def test_recall_at_k_only_lone_classes_counts_no_queries():
    out = recall_at_k(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), (1, 2), "euclidean")
    assert out["retrieval_queries"] == 0


def test_recall_at_k_lone_image_is_not_counted_as_miss():
    # Two tight pairs and a lone far point: with the lone query counted, recall@1 would be 4/5.
    embeddings = torch.tensor([[0.0], [0.1], [5.0], [5.1], [100.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    assert recall_at_k(embeddings, labels, (1,), "euclidean") == {"recall_at_1": 1.0, "retrieval_queries": 4}


# ------------------------------------------------------------------------------- nearest_neighbours


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("chunk", [1, 3, 4, 7, 1024])
def test_nearest_neighbours_matches_brute_force_across_chunks(distance, chunk):
    torch.manual_seed(20)
    embeddings = torch.randn(10, 4, dtype=torch.float64)
    got = nearest_neighbours(embeddings, 4, distance, chunk=chunk)
    assert got.shape == (10, 4)
    for q in range(10):
        order = sorted((j for j in range(10) if j != q), key=lambda j: ref_distance(embeddings[q], embeddings[j], distance))
        assert got[q].tolist() == order[:4]


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("chunk", [1, 3, 5, 1024])
def test_nearest_neighbours_excludes_query_even_with_exact_duplicates(distance, chunk):
    torch.manual_seed(21)
    base = torch.randn(5, 3)
    embeddings = torch.cat([base, base])  # row i and row i+5 are identical
    got = nearest_neighbours(embeddings, 1, distance, chunk=chunk)
    assert got[:, 0].tolist() == [(i + 5) % 10 for i in range(10)]


@pytest.mark.parametrize("chunk", [2, 3, 1024])
def test_nearest_neighbours_never_returns_query_and_caps_k(chunk):
    torch.manual_seed(22)
    embeddings = torch.randn(7, 2)
    got = nearest_neighbours(embeddings, 50, "euclidean", chunk=chunk)
    assert got.shape == (7, 6)  # k capped at n - 1
    for q in range(7):
        assert sorted(got[q].tolist()) == [j for j in range(7) if j != q]


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "l1"])
def test_sampled_pair_distances_by_rows_equal_gathered_pairs(distance):
    from bench.eval.verification import _pair_distance, _sampled_pairs_by_rows

    g = torch.Generator().manual_seed(3)
    emb = torch.randn(37, 64, generator=g, dtype=torch.float64)
    i = torch.randint(0, 37, (500,), generator=g)
    j = (i + torch.randint(1, 37, (500,), generator=g)) % 37
    expected = _pair_distance(emb[i], emb[j], distance)
    for chunk in (1, 5, 37):
        assert torch.allclose(_sampled_pairs_by_rows(emb, i, j, distance, chunk), expected, atol=1e-9)


# ------------------------------------------------------------------------------- query–gallery pairs


def query_gallery(n_query, n_gallery, dim=4, seed=0):
    """Queries and a gallery around shared class centres; query class 9 has no gallery image."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, dim, generator=g, dtype=torch.float64)
    ql = torch.cat([torch.randint(0, 6, (n_query - 2,), generator=g), torch.tensor([9, 9])])
    gl = torch.randint(0, 6, (n_gallery,), generator=g)
    return tuple(centres[lab] + torch.randn(len(lab), dim, generator=g, dtype=torch.float64) for lab in (ql, gl)) + (ql, gl)


@pytest.mark.parametrize("distance", DISTANCES)
def test_query_gallery_pairs_match_a_double_loop(distance):
    q, g, ql, gl = query_gallery(12, 15, seed=1)
    same = [bool(ql[a] == gl[b]) for a in range(12) for b in range(15)]
    dist = [ref_distance(q[a], g[b], distance) for a in range(12) for b in range(15)]
    got = verification.verification_metrics(q, ql, distance, 10**6, 0, gallery=g, gallery_labels=gl)
    assert got["verification_pair_rule"] == "all" and got["verification_pairs"] == 12 * 15
    assert got["verification_same_pairs"] == sum(same) and got["verification_different_pairs"] == 180 - sum(same)
    assert got["verification_roc_auc"] == pytest.approx(roc_auc_score(same, [-d for d in dist]), abs=1e-12)
    best = max(balanced_accuracy_score(same, [d <= t for d in dist]) for t in dist)
    assert got["verification_balanced_accuracy_best_threshold"] == pytest.approx(best, abs=1e-12)
    assert 0.6 < best < 1 and "verification_note" not in got


@pytest.mark.parametrize("dim", [4, 64])  # narrow: vectors gathered per pair; wide: whole distance rows
def test_query_gallery_sample_is_stratified_distinct_and_measured(dim):
    q, g, ql, gl = query_gallery(60, 80, dim=dim, seed=2)
    pairs = verification.select_pairs(ql, 2000, 3, gl)
    i, j = pairs["i"].numpy(), pairs["j"].numpy()
    same_population = sum(int(ql[a] == gl[b]) for a in range(60) for b in range(80))
    assert pairs["rule"] == "sampled" and len(set(zip(i.tolist(), j.tolist()))) == 2000
    assert i.min() >= 0 and i.max() < 60 and j.min() >= 0 and j.max() < 80
    assert (ql[i] == gl[j]).sum() == round(2000 * same_population / 4800)
    got = verification.pair_distances(q, pairs, "euclidean", gallery=g)
    assert got.tolist() == pytest.approx([ref_distance(q[a], g[b], "euclidean") for a, b in zip(i, j)], abs=1e-9)


def test_sampled_query_gallery_auc_is_close_to_exact():
    q, g, ql, gl = query_gallery(100, 150, seed=4)
    exact = verification.verification_metrics(q, ql, "cosine", 10**6, 0, gallery=g, gallery_labels=gl)
    sampled = verification.verification_metrics(q, ql, "cosine", 5000, 1, gallery=g, gallery_labels=gl)
    assert exact["verification_pairs"] == 15000 and sampled["verification_pair_rule"] == "sampled"
    assert sampled["verification_roc_auc"] == pytest.approx(exact["verification_roc_auc"], abs=0.02)


def test_query_gallery_verification_on_a_constructed_set():
    # l1 on integer corners 10·e_c, so distances are exactly 0 or 20. Gallery: 3 copies of each of classes
    # 0–6 on its corner. Queries: classes 0–2 on their own corner, 3–5 on the corner of class c − 3, class 7
    # on its own (no gallery image). Same-class pairs: 9 at 0, 9 at 20; different-class: 9 at 0, 120 at 20.
    corners = 10 * torch.eye(8)
    g, gl = corners[:7].repeat_interleave(3, 0), torch.arange(7).repeat_interleave(3)
    q, ql = corners[torch.tensor([0, 1, 2, 0, 1, 2, 7])], torch.tensor([0, 1, 2, 3, 4, 5, 7])
    got = verification.verification_metrics(q, ql, "l1", 10**6, 0, gallery=g, gallery_labels=gl)
    assert (got["verification_pairs"], got["verification_same_pairs"]) == (147, 18)
    # AUC: a near same-class pair beats 120 far and ties 9 near; a far one ties 120 far.
    assert got["verification_roc_auc"] == pytest.approx((9 * (120 + 9 / 2) + 9 * 120 / 2) / (18 * 129))
    assert got["verification_balanced_accuracy_best_threshold"] == pytest.approx((9 / 18 + 120 / 129) / 2)
    assert got["verification_best_threshold"] == 0.0
    none = verification.verification_metrics(q, ql + 10, "l1", 10**6, 0, gallery=g, gallery_labels=gl)
    assert math.isnan(none["verification_roc_auc"]) and "no query class has a gallery image" in none["verification_note"]

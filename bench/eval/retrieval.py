"""Retrieval metrics (recall@k as hit rate, precision@1, R-Precision, MAP@R) accumulated chunk by chunk
over an exact kNN, so memory stays bounded whatever the number of queries."""

from __future__ import annotations

import numpy as np
import torch

from bench.eval.knn import faiss_available, iter_knn
from bench.items import fixed_point, material_digest


def retrieval_metrics(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    ks: tuple[int, ...],
    distance: str,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    memory_mb: float = 1024,
    backend: str = "auto",
    items: dict | None = None,
) -> dict:
    """Each query ranks the gallery (default: the other queries) by `distance`, ties by gallery index.

    Definitions, those of pytorch-metric-learning's AccuracyCalculator (avg over queries, not classes); R is
    the number of gallery images of the query's class (itself excluded):
    - `recall_at_k`: hit rate, the fraction of queries with at least one same-class image in their top k.
    - `precision_at_1`: fraction of queries whose nearest image is of their class.
    - `r_precision`: mean over queries of (same-class images in the top R) / R.
    - `map_at_r`: mean over queries of (1/R) Σ_{i ≤ R, rank i same-class} precision@i.
    Queries with R = 0 (a class with no other image) cannot hit and are excluded: `retrieval_queries`
    counts the rest, `retrieval_lone_queries` the excluded ones (all excluded: NaN and `retrieval_note`).

    Written here rather than calling AccuracyCalculator because that holds every query's k = max-class-size
    neighbours at once (and needs faiss or an N×N matrix); these sums stream over query chunks.

    `items`, when given, receives each scored query's outcome (bench.items): `retrieval.first_hit` (the rank
    of its first same-class neighbour among the k searched, 0 if none), `retrieval.r_precision` and
    `retrieval.map_at_r` (uint16 fixed point), `retrieval.queries` (their indices), `retrieval.k` (first_hit
    answers recall_at_K for every K up to it) and `material.retrieval`; nothing when the metrics are NaN.
    """
    same_set = gallery is None
    if same_set:
        gallery, gallery_labels = queries, query_labels
    names, codes = torch.unique(torch.cat([query_labels, gallery_labels]), return_inverse=True)
    q_codes, g_codes = codes[: len(query_labels)], codes[len(query_labels) :]
    relevant = torch.bincount(g_codes, minlength=len(names))[q_codes] - int(same_set)
    usable = relevant > 0
    n_candidates = len(gallery) - int(same_set)
    k = min(max(max(ks), int(relevant.max()) if len(relevant) else 0), n_candidates)
    sums = {f"recall_at_{kk}": 0.0 for kk in ks} | {"precision_at_1": 0.0, "r_precision": 0.0, "map_at_r": 0.0}
    kept: list[tuple[torch.Tensor, ...]] = []
    if usable.any() and k > 0:
        ranks = torch.arange(1, k + 1, dtype=torch.float64)
        for start, idx in iter_knn(queries.float(), gallery.float(), k, distance, memory_mb, same_set, backend):
            use = usable[start : start + len(idx)]
            hit = g_codes[idx[use]] == q_codes[start : start + len(idx)][use, None]
            r = relevant[start : start + len(idx)][use]
            for kk in ks:
                sums[f"recall_at_{kk}"] += float(hit[:, :kk].any(1).sum())
            sums["precision_at_1"] += float(hit[:, 0].sum())
            within_r = hit & (ranks[None, :] <= r[:, None])
            r_precision = within_r.sum(1).double() / r
            sums["r_precision"] += float(r_precision.sum())
            precision_at_i = within_r.cumsum(1) / ranks
            average_precision = (precision_at_i * within_r).sum(1) / r
            sums["map_at_r"] += float(average_precision.sum())
            if items is not None:
                first_hit = torch.where(hit.any(1), hit.byte().argmax(1) + 1, 0)  # argmax: the first maximum
                kept.append((use.nonzero().flatten() + start, first_hit, r_precision, average_precision))
    n = int(usable.sum())
    if items is not None and n:
        items.update(_query_items(kept, k, k if k < n_candidates else max(k, *ks), query_labels, None if same_set else gallery_labels))
    out = {name: total / n if n else float("nan") for name, total in sums.items()}
    out["retrieval_queries"] = n
    out["retrieval_lone_queries"] = len(query_labels) - n
    if not n:
        out["retrieval_note"] = (
            f"none of the {len(query_labels)} queries has a same-class image in the {'gallery' if not same_set else 'other queries'}: retrieval metrics are NaN"
        )
    out["retrieval_gallery"] = "other_queries" if same_set else "separate"
    out["knn_backend"] = "faiss" if backend == "faiss" or (backend == "auto" and faiss_available() and gallery.device.type == "cpu") else "torch"
    return out


def _query_items(kept: list[tuple[torch.Tensor, ...]], k: int, answers: int, query_labels: torch.Tensor, gallery_labels: torch.Tensor | None) -> dict:
    """The per-query arrays of `retrieval_metrics`' items from its chunks' (queries, first hit, R-precision, AP@R).
    `answers`: the largest K whose recall first_hit gives (every K when the k searched are all the candidates)."""
    queries, first_hit, r_precision, average_precision = (torch.cat(parts).numpy() for parts in zip(*kept))
    return {
        "retrieval.first_hit": first_hit.astype(np.uint16 if k <= np.iinfo(np.uint16).max else np.uint32),
        "retrieval.r_precision": fixed_point(r_precision),
        "retrieval.map_at_r": fixed_point(average_precision),
        "retrieval.queries": queries.astype(np.int32),
        "retrieval.k": np.array(answers, dtype=np.int64),
        "material.retrieval": np.array(material_digest(query_labels.numpy(), None if gallery_labels is None else gallery_labels.numpy(), queries)),
    }


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...], distance: str, memory_mb: float = 1024, backend: str = "auto") -> dict:
    """Only `recall_at_k` (hit rate, see `retrieval_metrics`) and `retrieval_queries`, query = each image,
    gallery = the other images."""
    full = retrieval_metrics(embeddings, labels, ks, distance, memory_mb=memory_mb, backend=backend)
    return {key: full[key] for key in [f"recall_at_{k}" for k in ks] + ["retrieval_queries"]}

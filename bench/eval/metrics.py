"""Held-out evaluation of embeddings: `evaluate` is the one entry point (runner and `bench evaluate`); it
returns a flat row of verification, retrieval and few-shot metrics. The metrics live in their own modules."""

from __future__ import annotations

import numpy as np
import torch

from bench.config import EvalConfig
from bench.errors import UserError
from bench.eval.fewshot import few_shot_accuracy, within_group_few_shot_accuracy
from bench.eval.knn import DISTANCES, distances, nearest_neighbours  # noqa: F401  re-exported
from bench.eval.retrieval import recall_at_k, retrieval_metrics  # noqa: F401  re-exported
from bench.eval.verification import ROC_POINTS, _all_pair_distances, verification_metrics, verification_roc_auc  # noqa: F401


def evaluate(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    distance: str,
    config: EvalConfig = EvalConfig(),
    seed: int = 0,
    *,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    val_embeddings: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    backend: str = "auto",
    groups: torch.Tensor | np.ndarray | None = None,
    group_name: str = "",
    roc_points: int = ROC_POINTS,
    items: dict | None = None,
) -> dict:
    """All metrics of `embeddings` (held-out classes) as one flat dict for the result row.

    `distance` is what the loss was trained for; `config.distance`, when set, overrides it. Retrieval
    queries are the embeddings; the gallery is the other embeddings, or `gallery` when the dataset has one,
    and then verification pairs are query–gallery pairs and few-shot support comes from the gallery.
    A validation split (`val_embeddings`) adds the balanced accuracy at a threshold chosen on it. `seed`
    draws the verification pair sample and the few-shot episodes. `groups` (one hashable value per query
    embedding, e.g. Omniglot's alphabet, with `group_name` = "alphabet") adds the few-shot figures over
    episodes drawn within one group, from a stream of their own: the other figures do not change. A NaN
    figure comes with a `*_note`. `verification_roc` keeps at most `roc_points` ROC vertices; 0 leaves it out.

    `items`, when a dict is given, is filled with per-test-item outcomes (numpy arrays, keys in bench.items):
    each scored query's first hit, R-precision and AP@R, each episode's correct count, and up to ITEM_PAIRS
    verification pairs' distance ranks, with `material.*` digests of what the items are; a NaN figure keeps
    none. The metrics returned are the same with or without it."""
    distance = config.distance or distance
    if distance not in DISTANCES:
        raise UserError(f"distance {distance!r} is unknown — use one of {', '.join(DISTANCES)}")
    embeddings, labels = check_embeddings(embeddings, labels, "embeddings")
    if gallery is not None:
        gallery, gallery_labels = check_embeddings(gallery, gallery_labels, "gallery", embeddings.shape[1])
    if val_embeddings is not None:
        val_embeddings, val_labels = check_embeddings(val_embeddings, val_labels, "validation", embeddings.shape[1])
    return {
        **verification_metrics(
            embeddings,
            labels,
            distance,
            config.max_pairs,
            seed,
            config.tar_far,
            config.memory_mb,
            val_embeddings,
            val_labels,
            gallery,
            gallery_labels,
            roc_points,
            items=items,
        ),
        **retrieval_metrics(embeddings, labels, config.recall_k, distance, gallery, gallery_labels, config.memory_mb, backend, items=items),
        **few_shot_accuracy(
            embeddings, labels, distance, config.n_way, config.k_shot, config.episodes, seed, gallery=gallery, gallery_labels=gallery_labels, items=items
        ),
        **(
            {}
            if groups is None
            else within_group_few_shot_accuracy(
                embeddings,
                labels,
                groups,
                group_name,
                distance,
                config.n_way,
                config.k_shot,
                config.episodes,
                seed,
                gallery=gallery,
                gallery_labels=gallery_labels,
                items=items,
            )
        ),
        "distance": distance,
    }


def check_embeddings(embeddings, labels, what: str, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (N, D) embeddings and int64 (N,) labels, or a one-line UserError naming `what` and the fix."""
    if labels is None:
        raise UserError(f"{what}: embeddings without labels — give one integer label per embedding")
    embeddings, labels = torch.as_tensor(embeddings), torch.as_tensor(labels)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise UserError(f"{what}: expected a non-empty 2-D (N, D) array of embeddings, got shape {tuple(embeddings.shape)} — one row per image")
    if labels.ndim != 1 or len(labels) != len(embeddings):
        raise UserError(f"{what}: {len(embeddings)} embeddings but labels of shape {tuple(labels.shape)} — give one integer label per embedding")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise UserError(f"{what}: labels must be integers (class ids), got {labels.dtype} — convert them, e.g. with numpy.unique(..., return_inverse=True)")
    if dim is not None and embeddings.shape[1] != dim:
        raise UserError(f"{what}: embeddings have {embeddings.shape[1]} dimensions, the queries {dim} — embed both with the same model")
    embeddings = embeddings.float()
    bad = ~torch.isfinite(embeddings).all(1)
    if bad.any():
        raise UserError(
            f"{what}: {int(bad.sum())} embeddings contain NaN or inf (first at row {int(bad.nonzero()[0])}) — the model diverged or the file is corrupt"
        )
    return embeddings, labels.long()

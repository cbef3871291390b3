"""N-way K-shot classification accuracy over seeded episodes drawn from the test classes (Koch et al.'s
20-way one-shot task by default), and over episodes drawn within one group of classes (Lake et al.'s
within-alphabet task); with a separate gallery, support comes from the gallery."""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from bench.errors import UserError
from bench.eval.knn import check_distance
from bench.eval.memo import Memo, digest
from bench.items import material_digest

_EPISODES = Memo(lambda drawn: tuple(a.copy() for a in drawn), keep=8)  # a grid's cells draw the same episodes from the same labels
WITHIN_GROUP_STREAM = 1  # within-group episodes draw from default_rng([1, seed]), the all-classes ones from default_rng(seed)


def few_shot_accuracy(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    distance: str,
    n_way: int = 20,
    k_shot: int = 1,
    episodes: int = 1000,
    seed: int = 0,
    *,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    items: dict | None = None,
) -> dict:
    """`few_shot_<n>way_<k>shot_accuracy`: each episode draws n_way classes among those with at least
    k_shot + 1 images, then k_shot support images and one query image per class (all distinct). With a
    gallery, a class qualifies with k_shot gallery images and one query; support is drawn from the gallery,
    the query from `embeddings` (a retrieval set's queries often hold one image per class, so episodes
    within them are impossible). Each query is assigned the class of its nearest support image (Koch's
    rule; with k_shot = 1, the one image per class; ties go to the first-drawn class). The value is the mean
    over episodes of the fraction of the n_way queries assigned correctly; `_stderr` is the standard error
    of that mean over episodes. NaN, with `few_shot_note` saying why and `few_shot_classes` how many
    classes qualified, when fewer than n_way classes qualify. `items`, when given, receives the episodes'
    correct counts (see `_scored`), unless the accuracy is NaN."""
    check_distance(distance)
    name = f"few_shot_{n_way}way_{k_shot}shot"
    pools = class_pools(labels, k_shot, gallery_labels)
    out = {f"{name}_episodes": episodes, "few_shot_classes": len(pools)}
    nan = {f"{name}_accuracy": float("nan"), f"{name}_accuracy_stderr": float("nan")}
    if n_way < 2:
        return nan | out | {"few_shot_note": f"a {n_way}-way episode has nothing to tell apart — use eval.n_way ≥ 2 (`bench evaluate --n-way`)"}
    if len(pools) < n_way:
        need = f"{k_shot} gallery image(s) and a query" if gallery is not None else f"{k_shot + 1}+ images"
        return (
            nan
            | out
            | {
                "few_shot_note": f"{len(pools)} classes have {need}, a {n_way}-way episode needs {n_way} "
                "— lower eval.n_way or eval.k_shot in the grid (`bench evaluate --n-way`/`--k-shot`)"
            }
        )
    support, query = _EPISODES.get(
        digest("all", labels, gallery_labels, n_way, k_shot, episodes, seed),
        lambda: draw_episodes(pools, n_way, k_shot, episodes, np.random.default_rng(seed))[:2],
    )
    return out | _scored(embeddings, gallery, support, query, episodes, k_shot, distance, name, "few_shot_note", items)


def within_group_few_shot_accuracy(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor | np.ndarray,
    group_name: str,
    distance: str,
    n_way: int = 20,
    k_shot: int = 1,
    episodes: int = 1000,
    seed: int = 0,
    *,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    items: dict | None = None,
) -> dict:
    """`few_shot_<n>way_<k>shot_within_<group_name>_accuracy`: as `few_shot_accuracy`, but each episode's
    n_way classes all share one value of `groups` (one hashable value per query embedding, e.g. Omniglot's
    alphabet; a class is in the group of its queries). Each episode first picks a group **uniformly among the
    qualifying groups** (those with ≥ n_way qualifying classes), not weighted by their class count, so a small
    alphabet counts as much as a large one; then n_way of its classes uniformly, then images as
    `draw_episodes` does. The episodes come from a random stream of their own (`WITHIN_GROUP_STREAM`), so
    the all-classes figures are the same with or without groups. `few_shot_within_<group_name>_groups`
    counts the qualifying groups; NaN with `few_shot_within_note` when none qualifies. `items` as in
    `few_shot_accuracy`."""
    check_distance(distance)
    codes = group_codes(groups, labels, group_name)
    name = f"few_shot_{n_way}way_{k_shot}shot_within_{group_name}"
    pools = class_pools(labels, k_shot, gallery_labels)
    by_group = pools_by_group(pools, codes)
    pool_groups = [members for members in by_group if len(members) >= n_way]
    out = {f"{name}_episodes": episodes, f"few_shot_within_{group_name}_groups": len(pool_groups)}
    nan = {f"{name}_accuracy": float("nan"), f"{name}_accuracy_stderr": float("nan")}
    if n_way < 2:
        return nan | out | {"few_shot_within_note": f"a {n_way}-way episode has nothing to tell apart — use eval.n_way ≥ 2 (`bench evaluate --n-way`)"}
    if not pool_groups:
        need = f"{k_shot} gallery image(s) and a query" if gallery is not None else f"{k_shot + 1}+ images"
        largest = max(map(len, by_group), default=0)
        return (
            nan
            | out
            | {
                "few_shot_within_note": f"no {group_name} has {n_way} classes with {need} (the most is {largest}) "
                "— lower eval.n_way or eval.k_shot in the grid (`bench evaluate --n-way`/`--k-shot`)"
            }
        )
    support, query = _EPISODES.get(
        digest("within", labels, gallery_labels, codes, n_way, k_shot, episodes, seed),
        lambda: draw_group_episodes(pools, pool_groups, n_way, k_shot, episodes, np.random.default_rng([WITHIN_GROUP_STREAM, seed]))[:2],
    )
    return out | _scored(embeddings, gallery, support, query, episodes, k_shot, distance, name, "few_shot_within_note", items)


def _scored(embeddings, gallery, support, query, episodes: int, k_shot: int, distance: str, name: str, note: str, items: dict | None = None) -> dict:
    """Mean accuracy over the drawn episodes and its standard error (support from the gallery when there is one).
    `items` receives `<name>_accuracy`, each episode's count of correct queries (uint8; per-episode accuracy
    = count / `<name>_accuracy.queries`, n_way), and `material.<name>_accuracy`, the digest of the episodes."""
    support_set = embeddings if gallery is None else gallery
    # index_select copies rows several times faster than indexing with a tensor: 2 × 200 × 20 rows of 4096-d (Koch)
    picked = support_set.index_select(0, torch.from_numpy(support).reshape(-1)).reshape(episodes, -1, support_set.shape[1])
    correct = _episode_correct(
        picked.float(), embeddings.index_select(0, torch.from_numpy(query).reshape(-1)).reshape(*query.shape, -1).float(), k_shot, distance
    )
    per_episode = correct.mean(1)
    if items is not None:
        n_way = correct.shape[1]
        items[f"{name}_accuracy"] = correct.sum(1).numpy().astype(np.uint8 if n_way <= np.iinfo(np.uint8).max else np.uint16)
        items[f"{name}_accuracy.queries"] = np.array(n_way, dtype=np.uint16)
        items[f"material.{name}_accuracy"] = np.array(material_digest(support, query, np.array(gallery is None)))
    out = {f"{name}_accuracy": float(per_episode.mean())}
    if episodes < 2:
        return out | {f"{name}_accuracy_stderr": float("nan"), note: "one episode has no standard error — use 2+ episodes"}
    return out | {f"{name}_accuracy_stderr": float(per_episode.std() / math.sqrt(episodes))}


def group_codes(groups: torch.Tensor | np.ndarray, labels: torch.Tensor, group_name: str) -> np.ndarray:
    """An int64 code per query for `groups` (any hashable values, numbered in order of first appearance),
    or a one-line UserError: a group name that cannot sit in a metric name, a length mismatch, or a class
    whose images span two groups (the group must be an attribute of the class, as the alphabet is)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", group_name):
        raise UserError(f'episode group name {group_name!r} must be letters, digits or _ (it becomes part of a metric name) — e.g. "alphabet"')
    values = groups.cpu().numpy() if isinstance(groups, torch.Tensor) else np.asarray(groups)
    if values.shape != (len(labels),):
        raise UserError(f"{group_name}: {len(labels)} embeddings but groups of shape {values.shape} — give one {group_name} per embedding")
    numbering: dict = {}  # by hand, not np.unique: any hashable values, even ones that do not sort together
    codes = np.array([numbering.setdefault(v, len(numbering)) for v in values.tolist()], dtype=np.int64)
    pairs = np.unique(np.stack([labels.numpy(), codes]), axis=1)  # distinct (class, group), sorted by class
    split = np.flatnonzero(np.diff(pairs[0]) == 0)
    if len(split):
        raise UserError(f"class {pairs[0, split[0]]} has images in more than one {group_name} — episode groups must be per class")
    return codes


def pools_by_group(pools: list[tuple[np.ndarray, np.ndarray]], codes: np.ndarray) -> list[np.ndarray]:
    """The pool numbers of each group that holds any, in group-code order; a pool's group is that of its
    query candidates (indices into the queries, like `codes`)."""
    pool_codes = np.array([codes[q[0]] for _, q in pools], dtype=np.int64)
    return [np.flatnonzero(pool_codes == g) for g in np.unique(pool_codes)]


def draw_group_episodes(
    pools: list[tuple[np.ndarray, np.ndarray]], groups: list[np.ndarray], n_way: int, k_shot: int, episodes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As `draw_episodes`, within one group per episode: the group uniformly among `groups` (each the pool
    numbers of one group, ≥ n_way of them), then n_way of its pools uniformly without replacement."""
    support = np.empty((episodes, n_way, k_shot), dtype=np.int64)
    query = np.empty((episodes, n_way), dtype=np.int64)
    classes = np.empty((episodes, n_way), dtype=np.int64)
    for e in range(episodes):
        classes[e] = rng.choice(groups[rng.integers(len(groups))], n_way, replace=False)
        for w, c in enumerate(classes[e]):
            support[e, w], query[e, w] = _draw_images(pools[c], k_shot, rng)
    return support, query, classes


def class_pools(labels: torch.Tensor, k_shot: int, gallery_labels: torch.Tensor | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(support candidates, query candidates) of each qualifying class, in class order. Without a gallery
    both are the class's images (one array, so `draw_episodes` keeps support and query distinct)."""
    if gallery_labels is None:
        codes = torch.unique(labels, return_inverse=True)[1].numpy()
        members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)] if len(codes) else []
        return [(m, m) for m in members if len(m) >= k_shot + 1]
    codes = torch.unique(torch.cat([labels, gallery_labels]), return_inverse=True)[1].numpy()
    q_codes, g_codes = codes[: len(labels)], codes[len(labels) :]
    pools = [(np.flatnonzero(g_codes == c), np.flatnonzero(q_codes == c)) for c in range(codes.max() + 1)] if len(codes) else []
    return [(s, q) for s, q in pools if len(s) >= k_shot and len(q) >= 1]


def draw_episodes(
    pools: list[tuple[np.ndarray, np.ndarray]], n_way: int, k_shot: int, episodes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Support (E, n_way, k_shot) and query (E, n_way) indices and the drawn pool numbers (E, n_way): n_way
    distinct classes per episode, uniformly; k_shot support images and one query uniformly without
    replacement within each. A Python loop (20k draws for 1000 20-way episodes); the distances are batched."""
    support = np.empty((episodes, n_way, k_shot), dtype=np.int64)
    query = np.empty((episodes, n_way), dtype=np.int64)
    classes = np.empty((episodes, n_way), dtype=np.int64)
    for e in range(episodes):
        classes[e] = rng.choice(len(pools), n_way, replace=False)
        for w, c in enumerate(classes[e]):
            support[e, w], query[e, w] = _draw_images(pools[c], k_shot, rng)
    return support, query, classes


def _draw_images(pool: tuple[np.ndarray, np.ndarray], k_shot: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    s_pool, q_pool = pool
    # positions drawn, then looked up: the same draws as choice(pool, ...), which spends a third of its time on the array
    if s_pool is q_pool:  # one pool: k_shot + 1 distinct images, the last one the query
        picks = s_pool[rng.choice(len(s_pool), k_shot + 1, replace=False)]
        return picks[:k_shot], picks[k_shot]
    return s_pool[rng.choice(len(s_pool), k_shot, replace=False)], q_pool[rng.choice(len(q_pool))]


def _episode_correct(support: torch.Tensor, queries: torch.Tensor, k_shot: int, distance: str) -> torch.Tensor:
    """(episodes, n_way) 1.0 where a query's nearest support image is of its class, else 0.0; support rows
    are grouped by class, k_shot each, in the queries' order."""
    episodes, n_way = queries.shape[:2]
    correct = torch.empty(episodes, n_way, dtype=torch.float64)
    for s in range(0, episodes, 256):  # bounded memory: 256 × n_way × n_way·k_shot distances at a time
        predicted = _batched_distances(queries[s : s + 256], support[s : s + 256], distance).argmin(dim=2) // k_shot
        correct[s : s + 256] = (predicted == torch.arange(n_way)).double()
    return correct


def _batched_distances(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        a, b = torch.nn.functional.normalize(a, dim=2), torch.nn.functional.normalize(b, dim=2)
        return 1.0 - a @ b.transpose(1, 2)
    return torch.cdist(a, b, p=2.0 if distance == "euclidean" else 1.0)

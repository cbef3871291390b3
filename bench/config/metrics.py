"""The one table of metric definitions: every key of a row's `metrics`, its direction and meaning.

The evaluator's output, the leaderboard's sort direction and docs/metrics.md all
follow this table; `tests/test_metric_defs.py` checks that every key a row carries has an entry here and
is named in docs/metrics.md. Parameterised names (`recall_at_<k>`, `verification_tar_at_far_<f>`,
`few_shot_<n>way_<k>shot_accuracy`) are patterns: `<…>` stands for the value from `[eval]`, a number,
except `<group>`, a name (`eval.episode_group`: letters, digits, _).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower", "none"]  # none: a count, a setting, a label or a standard error, not a score


PLACEHOLDER = {"<group>": r"[A-Za-z0-9_]+"}  # non-numeric placeholders; every other <…> is a number


@dataclass(frozen=True)
class MetricDef:
    pattern: str  # the name, with <k>, <f>, <n> for numbers from [eval], <group> for a name
    direction: Direction
    meaning: str

    @property
    def regex(self) -> re.Pattern:
        parts = re.split(r"(<\w+>)", self.pattern)  # literal text at even positions, placeholders at odd
        return re.compile("".join(PLACEHOLDER.get(p, r"[0-9.e-]+") if i % 2 else re.escape(p) for i, p in enumerate(parts)) + r"\Z")


METRICS: tuple[MetricDef, ...] = (
    MetricDef("verification_roc_auc", "higher", "ROC-AUC of −distance over the verification pairs (sklearn)"),
    MetricDef("verification_eer", "lower", "equal error rate: where the ROC crosses FAR = FRR"),
    MetricDef("verification_tar_at_far_<f>", "higher", "best true-accept rate of a threshold with false-accept rate ≤ f"),
    MetricDef(
        "verification_balanced_accuracy_best_threshold",
        "higher",
        "balanced accuracy (mean of TPR and TNR) at the threshold that maximises it on the test pairs (optimistic)",
    ),
    MetricDef("verification_best_threshold", "none", "the distance at or below which a pair is called same-class, for the balanced accuracy above"),
    MetricDef("verification_balanced_accuracy_val_threshold", "higher", "test balanced accuracy at the threshold that maximises it on the validation split"),
    MetricDef("verification_val_threshold", "none", "the distance threshold chosen on the validation split"),
    MetricDef("verification_pairs", "none", "how many pairs the ROC is computed over (query × gallery pairs with a separate gallery)"),
    MetricDef("verification_same_pairs", "none", "of which same-class"),
    MetricDef("verification_different_pairs", "none", "of which different-class"),
    MetricDef("verification_pair_rule", "none", "`all` pairs or a `sampled` stratified subset"),
    MetricDef("verification_note", "none", "why verification figures are missing, when they are"),
    MetricDef(
        "verification_roc",
        "none",
        'the ROC as {"fpr": [...], "tpr": [...]}, at most 300 of its vertices (the rule in `downsample_roc`); absent when verification is NaN',
    ),
    MetricDef("recall_at_<k>", "higher", "hit rate: fraction of queries with ≥ 1 same-class item in the top k"),
    MetricDef("precision_at_1", "higher", "fraction of queries whose nearest neighbour is same-class (PML's definition)"),
    MetricDef("r_precision", "higher", "precision in the top R, R = the query's same-class items in the gallery (PML)"),
    MetricDef("map_at_r", "higher", "mean average precision at R (PML)"),
    MetricDef("retrieval_queries", "none", "queries scored (those with ≥ 1 same-class item in the gallery)"),
    MetricDef("retrieval_lone_queries", "none", "queries excluded because no other (gallery) item is of their class"),
    MetricDef("retrieval_note", "none", "why retrieval figures are missing, when they are"),
    MetricDef("retrieval_gallery", "none", "`other_queries` (leave-one-out) or `separate` gallery"),
    MetricDef("knn_backend", "none", "`torch` or `faiss`: which exact kNN ran"),
    MetricDef("few_shot_<n>way_<k>shot_accuracy", "higher", "mean over episodes of the fraction of queries whose nearest support image is of their class"),
    MetricDef(
        "few_shot_<n>way_<k>shot_accuracy_stderr",
        "none",
        "standard error of that mean over episodes (how precise the score is, not a score: the leaderboard shows it beside the accuracy)",
    ),
    MetricDef("few_shot_<n>way_<k>shot_episodes", "none", "how many episodes were drawn"),
    MetricDef("few_shot_classes", "none", "test classes with k + 1 images (with a gallery: k gallery images and a query)"),
    MetricDef("few_shot_note", "none", "why few-shot figures are missing, when they are"),
    MetricDef(
        "few_shot_<n>way_<k>shot_within_<group>_accuracy",
        "higher",
        "the same over episodes whose n classes share one value of `eval.episode_group` (the group uniform among those that qualify)",
    ),
    MetricDef("few_shot_<n>way_<k>shot_within_<group>_accuracy_stderr", "none", "standard error of that mean over episodes (not a score)"),
    MetricDef("few_shot_<n>way_<k>shot_within_<group>_episodes", "none", "how many within-group episodes were drawn"),
    MetricDef("few_shot_within_<group>_groups", "none", "groups with ≥ n classes that qualify as for `few_shot_classes`"),
    MetricDef("few_shot_within_note", "none", "why within-group few-shot figures are missing, when they are"),
    MetricDef("distance", "none", "the distance every metric was computed with"),
)


def definition(name: str) -> MetricDef | None:
    """The entry that `name` (a key of a row's metrics) instantiates, or None."""
    for d in METRICS:
        if d.regex.match(name):
            return d
    return None


def direction(name: str) -> Direction:
    d = definition(name)
    if d is None:
        raise KeyError(name)
    return d.direction


def lower_is_better(name: str) -> bool:
    return direction(name) == "lower"


def scores() -> list[str]:
    """Patterns of the metrics a leaderboard can sort by (those with a direction)."""
    return [d.pattern for d in METRICS if d.direction != "none"]

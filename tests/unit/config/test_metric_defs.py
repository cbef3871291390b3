"""The one table of metric definitions covers every key `evaluate` writes and is what docs/metrics.md shows."""

from __future__ import annotations

import math

import pytest
import torch
from paths import ROOT

from bench.config import EvalConfig
from bench.config.metrics import METRICS, definition, direction, lower_is_better
from bench.eval.metrics import evaluate

METRICS_PAGE = ROOT / "docs" / "metrics.md"
CONFIG = EvalConfig(recall_k=(1, 3, 16), tar_far=(0.05, 1e-4), n_way=5, k_shot=2, episodes=20, max_pairs=500)


def embeddings(n_classes: int, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return torch.randn(len(labels), 6, generator=g), labels


def check_defined(row: dict) -> None:
    undefined = [key for key in row if definition(key) is None]
    assert not undefined, f"keys missing from bench/eval/definitions.py: {undefined}"
    assert all(direction(key) in ("higher", "lower", "none") for key in row)


def check_nan_has_note(row: dict) -> None:
    """Every NaN figure comes with the note of its group."""
    groups = {
        "verification": "verification_note",
        "few_shot": "few_shot_note",
        "recall": "retrieval_note",
        "precision": "retrieval_note",
        "r_precision": "retrieval_note",
        "map": "retrieval_note",
    }
    for key, value in row.items():
        if isinstance(value, float) and math.isnan(value):
            note = next(n for prefix, n in groups.items() if key.startswith(prefix))
            assert isinstance(row.get(note), str) and row[note], (key, note)


def test_every_key_of_an_evaluation_with_a_validation_split_is_defined():
    x, y = embeddings(8, 5, seed=0)
    vx, vy = embeddings(6, 4, seed=1)
    row = evaluate(x, y, "cosine", CONFIG, seed=0, val_embeddings=vx, val_labels=vy)
    assert {"verification_tar_at_far_0.0001", "recall_at_16", "verification_balanced_accuracy_val_threshold", "few_shot_5way_2shot_accuracy_stderr"} <= set(row)
    check_defined(row)


def test_every_key_of_a_separate_gallery_evaluation_is_defined():
    x, y = embeddings(8, 1, seed=2)
    g, gl = embeddings(8, 4, seed=3)
    row = evaluate(x, y, "euclidean", CONFIG, seed=0, gallery=g, gallery_labels=gl)
    assert row["retrieval_gallery"] == "separate" and not math.isnan(row["verification_roc_auc"])
    check_defined(row)


@pytest.mark.parametrize("gallery", [False, True])
def test_every_nan_figure_is_explained_by_a_defined_note(gallery):
    x, y = embeddings(6, 1, seed=4)  # every class a single image: no pair, episode or hit within the queries
    g, gl = embeddings(6, 1, seed=5) if gallery else (None, None)
    row = evaluate(x, y, "cosine", CONFIG, gallery=g, gallery_labels=None if gl is None else gl + 100)  # no shared class
    assert math.isnan(row["verification_roc_auc"]) and math.isnan(row["map_at_r"])
    check_defined(row)
    check_nan_has_note(row)


def test_every_pattern_is_named_in_the_docs():
    text = METRICS_PAGE.read_text(encoding="utf-8")
    missing = [d.pattern for d in METRICS if f"`{d.pattern}`" not in text]
    assert not missing, f"add to docs/metrics.md: {missing}"


def test_directions():
    assert lower_is_better("verification_eer") and not lower_is_better("verification_roc_auc")
    assert direction("verification_tar_at_far_0.001") == "higher"
    assert direction("verification_balanced_accuracy_best_threshold") == "higher" and direction("verification_pairs") == "none"
    assert definition("verification_accuracy_best_threshold") is None  # plain accuracy is gone: it misleads on rare pairs


STDERRS = ("few_shot_20way_1shot_accuracy_stderr", "few_shot_5way_2shot_within_alphabet_accuracy_stderr")


@pytest.mark.parametrize("name", STDERRS)
def test_a_standard_error_is_not_a_score_anywhere_a_score_is_asked_for(name, tmp_path, capsys):
    from bench.cli import main
    from bench.config.space import parse_search
    from bench.errors import UserError
    from bench.grid import parse_grid

    assert direction(name) == "none"  # how precise a score is, not how good: never sorted, selected or searched by
    grid = {"budget": {"max_steps": 1}, "axes": {"backbone": ["koch"], "loss": ["bce_l1"]}}
    with pytest.raises(UserError, match="select_metric = .* is not a score"):
        parse_grid({**grid, "eval": {"select_metric": name}}, "g")
    with pytest.raises(UserError, match=r"\[search\] metric = .* is not a score"):
        parse_search({"trials": 2, "metric": name, "train.lr": {"log": [1e-5, 1e-2]}}, "g")
    assert main(["run", "--grid", str(tmp_path / "g.toml"), "--metric", name]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a score" in err and len(err.splitlines()) == 1

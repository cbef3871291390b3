"""Leaderboard aggregation over seeds and its markdown rendering, on hand-made rows."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from bench.errors import UserError
from bench.leaderboard import markdown, table


def row(backbone, loss, seed, auc, r1=0.5, *, dataset="toy", status="ok", steps=100, stopped_by="budget", loss_args=None, **extra):
    metrics = {"verification_roc_auc": auc, "recall_at_1": r1, "recall_at_2": min(1.0, r1 + 0.1), **extra}
    return {
        "schema": 1,
        "cell_id": f"{backbone}-{loss}-{seed}-{json.dumps(loss_args, sort_keys=True)}-{status}",
        "status": status,
        "config": {
            "backbone": backbone, "loss": loss, "dataset": dataset, "seed": seed,
            "loss_args": loss_args or {}, "train": {"batch_size": 32, "lr": 0.001},
            "split": {"seed": 0}, "eval": {"recall_k": [1, 2]},
        },
        "metrics": metrics,
        "train": {"stopped_by": stopped_by, "steps": steps},
    }


def error_row(backbone, loss, seed):
    # What the runner writes for a failed cell: no metrics, no train section.
    return {"schema": 1, "cell_id": f"err-{seed}", "status": "error", "error": "RuntimeError: boom",
            "config": {"backbone": backbone, "loss": loss, "dataset": "toy", "seed": seed, "loss_args": {},
                       "train": {"batch_size": 32, "lr": 0.001}, "split": {"seed": 0}, "eval": {"recall_k": [1, 2]}}}


A_AUC, A_R1 = [0.80, 0.90, 0.86], [0.4, 0.5, 0.7]
B_AUC = [0.95, 0.97]
ROWS = [
    *(row("resnet", "triplet", s, A_AUC[s], A_R1[s], steps=100 + 10 * s) for s in range(3)),
    *(row("resnet", "contrastive", s, B_AUC[s], 0.9) for s in range(2)),
    row("convnet", "triplet", 0, 0.70, 0.2, stopped_by="steps"),
    error_row("resnet", "triplet", 3),
    row("resnet", "triplet", 4, 0.01, 0.0, status="diverged", stopped_by="diverged"),
    error_row("vit", "bce_l1", 0),  # a configuration that only ever failed: no line for it
]


def by_config(frame):
    return {(r.backbone, r.loss): r for r in frame.itertuples()}


def test_table_mean_std_n_over_seeds():
    frame = table(ROWS)
    assert len(frame) == 4
    got = by_config(frame)
    a = got[("resnet", "triplet")]
    assert a.n == 3  # the error row and the diverged row are not in the mean
    assert (a.seeds, a.ok) == (5, 3)  # ... but they are counted and named
    assert a.others == "seed 3: error, seed 4: diverged"
    assert a.verification_roc_auc_mean == pytest.approx(np.mean(A_AUC))
    assert a.verification_roc_auc_std == pytest.approx(np.std(A_AUC, ddof=1))
    assert a.verification_roc_auc_std == pytest.approx(pd.Series(A_AUC).std())
    assert a.recall_at_1_mean == pytest.approx(np.mean(A_R1))
    assert a.recall_at_1_std == pytest.approx(np.std(A_R1, ddof=1))
    assert a.steps == 110
    assert a.stopped_by == "budget"
    b = got[("resnet", "contrastive")]
    assert b.n == 2
    assert b.verification_roc_auc_mean == pytest.approx(0.96)
    assert b.verification_roc_auc_std == pytest.approx(np.std(B_AUC, ddof=1))
    c = got[("convnet", "triplet")]
    assert c.n == 1 and math.isnan(c.verification_roc_auc_std)
    assert c.stopped_by == "steps"
    v = got[("vit", "bce_l1")]  # a configuration that only ever failed keeps its line, ranked last
    assert (v.seeds, v.ok, v.others) == (1, 0, "seed 0: error") and math.isnan(v.verification_roc_auc_mean)
    assert frame.iloc[-1]["backbone"] == "vit"


def test_table_sorts_higher_is_better():
    frame = table(ROWS)
    assert [(r.backbone, r.loss) for r in frame.itertuples()] == [
        ("resnet", "contrastive"), ("resnet", "triplet"), ("convnet", "triplet"), ("vit", "bce_l1")]
    frame = table(ROWS, metric="recall_at_1")
    scored = frame["recall_at_1_mean"].dropna().tolist()
    assert scored == sorted(scored, reverse=True) and len(scored) == 3 and math.isnan(frame["recall_at_1_mean"].iloc[-1])
    assert list(frame.columns[:5]) == ["backbone", "loss", "dataset", "recall_at_1_mean", "recall_at_1_std"]


def test_table_lower_is_better_metric_sorts_ascending():
    rows = [row("a", "l", 0, 0.9, verification_eer=0.30), row("b", "l", 0, 0.8, verification_eer=0.10),
            row("c", "l", 0, 0.7, verification_eer=0.20)]
    assert list(table(rows, metric="verification_eer")["backbone"]) == ["b", "c", "a"]
    assert "(lower is better)" in markdown(table(rows, metric="verification_eer"), metric="verification_eer")


def test_table_nan_metric_sorts_last():
    rows = [row("a", "l", 0, float("nan")), row("b", "l", 0, 0.6), row("c", "l", 0, 0.9)]
    assert list(table(rows)["backbone"]) == ["c", "b", "a"]


def test_table_splits_configurations_by_varying_arguments():
    rows = [row("r", "triplet", s, 0.8 + 0.01 * s, loss_args={"margin": m}) for s in range(2) for m in (0.1, 0.2)]
    frame = table(rows)
    assert "loss_args.margin" in frame.columns
    assert sorted(frame["loss_args.margin"]) == ["0.1", "0.2"]
    assert list(frame["n"]) == [2, 2]
    assert "seed" not in frame.columns and "train.lr" not in frame.columns  # seed and constants are not keys


def test_table_of_only_failed_rows_is_empty():
    assert table([error_row("a", "b", 0)]).empty
    assert table([]).empty


def test_table_unknown_or_directionless_metric_is_a_user_error():
    with pytest.raises(UserError, match="'no_such_metric' is not a metric of these rows.*verification_roc_auc"):
        table(ROWS, metric="no_such_metric")
    rows = [row("a", "l", 0, 0.9, verification_pairs=10)]
    with pytest.raises(UserError, match="not a score"):
        table(rows, metric="verification_pairs")


def test_a_broken_row_is_not_reported_as_an_unknown_metric():
    broken = row("a", "l", 0, 0.9)
    del broken["train"]  # a KeyError inside the aggregation must surface as itself
    with pytest.raises(KeyError, match="train"):
        table([broken])


def test_rows_whose_keys_differ_are_separate_configurations():
    # Koch's CNN takes no `head`; EfficientNet rows have one. Neither may vanish or merge.
    koch = [row("koch", "triplet", s, 0.7 + 0.01 * s) for s in range(2)]
    lite = [{**row("lite", "triplet", s, 0.8), "config": {**row("lite", "triplet", s, 0.8)["config"], "backbone_args": {"head": h}},
             "cell_id": f"lite-{h}-{s}"} for s in range(2) for h in ("linear", "sigmoid4096")]
    frame = table(koch + lite)
    assert len(frame) == 3 and sorted(frame["n"]) == [2, 2, 2]
    heads = dict(zip(frame["backbone"] + "/" + frame["backbone_args.head"], frame["n"]))
    assert heads == {"koch/—": 2, "lite/linear": 2, "lite/sigmoid4096": 2}
    text = markdown(frame)
    assert any(ln.startswith("| ") and "koch" in ln for ln in text.splitlines())


def test_a_row_without_an_argument_does_not_merge_with_rows_that_have_it():
    old = row("r", "triplet", 0, 0.5)  # written before `margin` existed
    new = [row("r", "triplet", s, 0.9, loss_args={"margin": 0.2}) for s in range(2)]
    frame = table([old, *new])
    assert sorted(zip(frame["loss_args.margin"], frame["n"])) == [("0.2", 2), ("—", 1)]
    assert frame["verification_roc_auc_mean"].tolist() == [pytest.approx(0.9), pytest.approx(0.5)]


def _cells(line: str) -> list[str]:
    # Split a markdown table line on unescaped pipes.
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_markdown_shows_mean_std_and_escapes_pipes():
    rows = [row("res|net", "triplet", s, A_AUC[s], A_R1[s], dataset="a|b") for s in range(3)]
    rows.append(row("solo", "contrastive", 0, 0.5, 0.25))
    text = markdown(table(rows), title="toy grid")
    lines = text.splitlines()
    assert lines[0] == "# toy grid"
    table_lines = [ln for ln in lines if ln.startswith("|")]
    header = _cells(table_lines[0])
    assert header[:4] == ["#", "backbone", "loss", "dataset"]
    assert header[-4:] == ["ok / seeds", "not ok", "steps", "stopped by"]
    assert all(len(_cells(ln)) == len(header) for ln in table_lines)  # no stray column from an unescaped |
    first = dict(zip(header, _cells(table_lines[2])))
    assert first["#"] == "1"
    assert first["backbone"] == r"res\|net" and first["dataset"] == r"a\|b"
    assert first["verification_roc_auc"] == f"{np.mean(A_AUC):.4f} ± {np.std(A_AUC, ddof=1):.4f}"
    assert first["recall_at_1"] == f"{np.mean(A_R1):.4f} ± {np.std(A_R1, ddof=1):.4f}"
    assert first["ok / seeds"] == "3 / 3" and first["not ok"] == ""
    second = dict(zip(header, _cells(table_lines[3])))
    assert second["#"] == "2" and second["backbone"] == "solo"
    assert second["verification_roc_auc"] == "0.5000"  # a single seed: no ± std
    assert "Sorted by **verification_roc_auc** (higher is better)" in text


def test_markdown_nan_mean_is_a_dash_and_empty_table_says_so():
    text = markdown(table([row("a", "l", 0, float("nan")), row("b", "l", 0, 0.6)]))
    last = _cells([ln for ln in text.splitlines() if ln.startswith("|")][-1])
    assert last[1] == "a" and "—" in last
    assert "No finished cells yet." in markdown(pd.DataFrame(), title="t")


def test_a_rerun_row_supersedes_the_earlier_row_of_its_cell():
    failed = row("r", "triplet", 0, float("nan"), status="error")
    rerun = {**row("r", "triplet", 0, 0.9), "cell_id": failed["cell_id"]}
    frame = table([failed, row("r", "triplet", 1, 0.7), rerun])
    assert frame["n"].tolist() == [2] and frame["verification_roc_auc_mean"].tolist() == [pytest.approx(0.8)]

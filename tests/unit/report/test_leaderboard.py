"""Leaderboard aggregation over seeds and its markdown rendering, on hand-made rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from boards import _cells, board, by_backbone, cell, row, welch_by_hand, write
from scipy import stats

from bench.errors import UserError
from bench.report.leaderboard import markdown
from bench.report.table import table
from bench.report.verdicts import signed
from bench.schema import RowError


def error_row(backbone, loss, seed):
    # What the runner writes for a failed cell: no metrics, no train section.
    return {
        "schema": 1,
        "cell_id": f"err-{seed}",
        "status": "error",
        "error": "RuntimeError: boom",
        "config": {
            "backbone": backbone,
            "loss": loss,
            "dataset": "toy",
            "seed": seed,
            "loss_args": {},
            "train": {"batch_size": 32, "lr": 0.001},
            "split": {"seed": 0},
            "eval": {"recall_k": [1, 2]},
        },
    }


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
    assert a.ok == 3  # the error row and the diverged row are not in the mean
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
    assert b.ok == 2
    assert b.verification_roc_auc_mean == pytest.approx(0.96)
    assert b.verification_roc_auc_std == pytest.approx(np.std(B_AUC, ddof=1))
    c = got[("convnet", "triplet")]
    assert c.ok == 1 and math.isnan(c.verification_roc_auc_std)
    assert c.stopped_by == "steps"
    v = got[("vit", "bce_l1")]  # a configuration that only ever failed keeps its line, ranked last
    assert (v.seeds, v.ok, v.others) == (1, 0, "seed 0: error") and math.isnan(v.verification_roc_auc_mean)
    assert frame.iloc[-1]["backbone"] == "vit"


def test_table_sorts_higher_is_better():
    frame = table(ROWS)
    assert [(r.backbone, r.loss) for r in frame.itertuples()] == [("resnet", "contrastive"), ("resnet", "triplet"), ("convnet", "triplet"), ("vit", "bce_l1")]
    frame = table(ROWS, metric="recall_at_1")
    scored = frame["recall_at_1_mean"].dropna().tolist()
    assert scored == sorted(scored, reverse=True) and len(scored) == 3 and math.isnan(frame["recall_at_1_mean"].iloc[-1])
    assert list(frame.columns[:5]) == ["backbone", "loss", "dataset", "recall_at_1_mean", "recall_at_1_std"]


def test_table_lower_is_better_metric_sorts_ascending():
    rows = [row("a", "l", 0, 0.9, verification_eer=0.30), row("b", "l", 0, 0.8, verification_eer=0.10), row("c", "l", 0, 0.7, verification_eer=0.20)]
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
    assert list(frame["ok"]) == [2, 2]
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
    del broken["train"]  # a row that breaks the schema must surface as itself, naming what it lacks
    with pytest.raises(RowError, match="an ok row with no train"):
        table([broken])


def test_rows_whose_keys_differ_are_separate_configurations():
    # Koch's CNN takes no `head`; EfficientNet rows have one. Neither may vanish or merge.
    koch = [row("koch", "triplet", s, 0.7 + 0.01 * s) for s in range(2)]
    lite = [
        {**row("lite", "triplet", s, 0.8), "config": {**row("lite", "triplet", s, 0.8)["config"], "backbone_args": {"head": h}}, "cell_id": f"lite-{h}-{s}"}
        for s in range(2)
        for h in ("linear", "sigmoid4096")
    ]
    frame = table(koch + lite)
    assert len(frame) == 3 and sorted(frame["ok"]) == [2, 2, 2]
    heads = dict(zip(frame["backbone"] + "/" + frame["backbone_args.head"], frame["ok"]))
    assert heads == {"koch/—": 2, "lite/linear": 2, "lite/sigmoid4096": 2}
    text = markdown(frame)
    assert any(ln.startswith("| ") and "koch" in ln for ln in text.splitlines())


def test_a_row_without_an_argument_does_not_merge_with_rows_that_have_it():
    old = row("r", "triplet", 0, 0.5)  # written before `margin` existed
    new = [row("r", "triplet", s, 0.9, loss_args={"margin": 0.2}) for s in range(2)]
    frame = table([old, *new])
    assert sorted(zip(frame["loss_args.margin"], frame["ok"])) == [("0.2", 2), ("—", 1)]
    assert frame["verification_roc_auc_mean"].tolist() == [pytest.approx(0.9), pytest.approx(0.5)]


def _rows(text: str) -> list[dict]:
    """The body rows of the (one) markdown table, as {header: cell}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = _cells(lines[0])
    return [dict(zip(header, _cells(ln))) for ln in lines[2:]]


def test_markdown_shows_mean_std_and_escapes_pipes():
    rows = [row("res|net", "triplet", s, A_AUC[s], A_R1[s], dataset="a|b") for s in range(3)]
    rows.append(row("solo", "contrastive", 0, 0.5, 0.25, dataset="a|b"))  # the same data: one table
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
    assert frame["ok"].tolist() == [2] and frame["verification_roc_auc_mean"].tolist() == [pytest.approx(0.8)]


# --- verdicts: significance vs the best, gain over the untrained baseline, still improving, selected -------


def grid(samples: dict[str, list[float]], metric="verification_roc_auc"):
    return [cell(name, "triplet", s, v, metric=metric) for name, values in samples.items() for s, v in enumerate(values)]


def test_vs_best_is_welchs_test_against_the_best_mean_held_to_the_familys_level():
    from bench.report.paired import ItemBootstrap
    from bench.report.simultaneous import Family, Member

    samples = {"best": [0.95, 0.97], "near": [0.80, 0.90, 0.86], "far": [0.60, 0.62, 0.61, 0.63]}
    got = by_backbone(table(grid(samples)))
    assert got["best"]["vs_best"] == "best" and math.isnan(got["best"]["vs_best_p"])
    p_near, p_far = welch_by_hand(samples["best"], samples["near"]), welch_by_hand(samples["best"], samples["far"])
    assert got["near"]["vs_best_p"] == pytest.approx(p_near, rel=1e-9)  # each comparison's own test is Welch's
    assert got["far"]["vs_best_p"] == pytest.approx(p_far, rel=1e-9)
    family = Family([Member(k, None, np.array(v), False) for k, v in samples.items()], ItemBootstrap())
    per = family.per_comparison_level()
    assert per < 0.05  # three lines, three pairs: each held to a stricter level than 5 %
    for name, p in (("near", p_near), ("far", p_far)):
        df = stats.ttest_ind(samples[name], samples["best"], equal_var=False).df
        assert got[name]["critical"] == pytest.approx(stats.t.isf(per / 2, df), rel=1e-6)
        assert got[name]["vs_best"] == ("below" if p < per else "not separated")
        assert got[name]["vs_best_delta"] - got[name]["vs_best_low"] == pytest.approx(
            got[name]["critical"] * math.sqrt(np.var(samples[name], ddof=1) / len(samples[name]) + np.var(samples["best"], ddof=1) / 2)
        )
    assert (got["near"]["vs_best"], got["far"]["vs_best"]) == ("not separated", "below")
    assert got["near"]["vs_best_test"] == "Welch"
    frame = table(grid(samples))
    text = markdown(frame)
    cells = {c["backbone"]: c for c in _rows(text)}
    assert cells["near"]["vs best"] == f"not separated (Welch, p_adj={got['near']['vs_best_p_adj']:.2g})"
    assert cells["far"]["vs best"] == f"below (Welch, p_adj={got['far']['vs_best_p_adj']:.2g})"
    r = got["near"]
    assert cells["near"]["Δ vs best [simultaneous 95%]"] == f"{signed(r['vs_best_delta'])} [{signed(r['vs_best_low'])}, {signed(r['vs_best_high'])}]"
    assert "*simultaneous*" in text and "*Welch*" in text and "**Verdict**" in text and "not separated from it" in text


def test_vs_best_follows_a_lower_is_better_metric():
    samples = {"low": [0.10, 0.12], "high": [0.30, 0.34, 0.32]}
    got = by_backbone(table(grid(samples, "verification_eer"), metric="verification_eer"))
    assert got["low"]["vs_best"] == "best"
    assert got["high"]["vs_best_p"] == pytest.approx(welch_by_hand(samples["low"], samples["high"]), rel=1e-9)
    assert got["high"]["vs_best"] == "below" and got["high"]["vs_best_delta"] > 0  # line − best: higher error


@pytest.mark.filterwarnings("error")  # scipy's "precision loss" warning on a constant sample is silenced on purpose
def test_vs_best_without_variance_is_untested_never_p_zero():
    samples = {"best": [0.9, 0.9], "same": [0.9, 0.9, 0.9], "lower": [0.8, 0.8], "varies": [0.7, 0.85]}
    got = by_backbone(table(grid(samples)))
    assert got["best"]["vs_best"] == "best"  # first of the tied means, as the stable sort ranks it
    for name in ("same", "lower"):  # identical seeds on both sides and no items: nothing to test against
        assert got[name]["vs_best"] == "untested" and got[name]["vs_best_test"].startswith("no variance") and math.isnan(got[name]["vs_best_p"])
    # one constant sample: Welch's test is defined (only the other variance counts)
    assert got["varies"]["vs_best_p"] == pytest.approx(welch_by_hand(samples["best"], samples["varies"]), rel=1e-9)


def test_one_seed_is_untested_even_when_it_ranks_first():
    rows = [*grid({"lucky": [0.99], "best": [0.95, 0.97], "near": [0.80, 0.90, 0.86]}), error_row("broken", "triplet", 0)]
    frame = table(rows)
    assert list(frame["backbone"]) == ["lucky", "best", "near", "broken"]  # still sorted by the mean
    assert list(frame["vs_best"]) == ["1 seed: untested", "best", "not separated", "—"]
    assert math.isnan(frame["vs_best_p"][0])
    lines = [ln for ln in markdown(frame).splitlines() if ln.startswith("|")]
    header = _cells(lines[0])
    assert dict(zip(header, _cells(lines[2])))["vs best"] == "1 seed: untested"


def test_a_plain_grid_keeps_todays_columns():
    # one seed each, no curve, no untrained baseline, no selection: every verdict column says nothing
    text = markdown(table([row("a", "l", 0, 0.9), row("b", "l", 0, 0.8)]))
    header = _cells(next(ln for ln in text.splitlines() if ln.startswith("|")))
    assert header == ["#", "backbone", "loss", "dataset", "verification_roc_auc", "recall_at_1", "recall_at_2", "ok / seeds", "not ok", "steps", "stopped by"]
    assert "Welch" not in text and "untrained" not in text and "improving" not in text


LITE = {"pretrained": True}


def lite(loss, seed, value, head="linear", metric="verification_roc_auc", **config):
    args = {**LITE, "embed_dim": 1280} if loss == "none" else {**LITE, "head": head, "embed_dim": 128}
    return cell(
        "lite",
        loss,
        seed,
        value,
        metric=metric,
        **{"backbone_args": args, "model": {"preprocess": "native", "freeze": "none"}, "train": {"precision": "auto"}, **config},
    )


def test_gain_over_the_untrained_baseline_with_the_same_backbone_input_and_data():
    rows = [lite("none", s, v) for s, v in enumerate([0.70, 0.72])]
    rows += [lite("triplet", s, v, loss_args={"margin": 0.2}) for s, v in enumerate([0.77, 0.75])]
    # another head, loss, lr, budget and freeze: still measured against the same untrained features
    rows += [
        lite(
            "contrastive",
            s,
            0.68,
            head="sigmoid4096",
            budget={"max_steps": 50},
            model={"preprocess": "native", "freeze": "backbone"},
            train={"precision": "auto", "lr": 0.1},
        )
        for s in range(2)
    ]
    rows += [lite("triplet", 0, 0.9, model={"preprocess": "unit", "freeze": "none"})]  # fed differently: no baseline
    rows += [lite("triplet", 0, 0.9, train={"precision": "fp32"}, loss_args={"margin": 0.3})]  # another precision: none
    frame = table(rows)
    got = {
        (r["loss"], r["backbone_args.head"], r["model.preprocess"], r.get("train.precision")): (r["untrained_verification_roc_auc"], r["gain_vs_untrained"])
        for _, r in frame.iterrows()
    }
    assert got[("triplet", "linear", "native", "auto")] == (pytest.approx(0.71), pytest.approx(0.76 - 0.71))
    assert got[("contrastive", "sigmoid4096", "native", "auto")] == (pytest.approx(0.71), pytest.approx(0.68 - 0.71))
    base = got[("none", "—", "native", "auto")]
    assert math.isnan(base[0]) and math.isnan(base[1])
    for key in [("triplet", "linear", "unit", "auto"), ("triplet", "linear", "native", "fp32")]:
        assert all(math.isnan(x) for x in got[key])
    lines = [ln for ln in markdown(frame).splitlines() if ln.startswith("|")]
    header = _cells(lines[0])
    shown = {(c["loss"], c["model.preprocess"], c["train.precision"]): c["gain vs untrained"] for c in (dict(zip(header, _cells(ln))) for ln in lines[2:])}
    assert shown == {
        ("triplet", "native", "auto"): "+0.050",
        ("contrastive", "native", "auto"): "−0.030",
        ("none", "native", "auto"): "(baseline)",
        ("triplet", "unit", "auto"): "—",
        ("triplet", "native", "fp32"): "—",
    }
    assert "untrained backbone (loss none)" in markdown(frame)


def test_gain_over_untrained_is_positive_when_a_lower_is_better_metric_drops():
    metric = "verification_eer"
    rows = [lite("none", s, v, metric=metric) for s, v in enumerate([0.30, 0.32])]
    rows += [lite("triplet", s, v, metric=metric) for s, v in enumerate([0.20, 0.22])]
    rows += [lite("contrastive", s, 0.35, metric=metric) for s in range(2)]
    got = {r["loss"]: r for _, r in table(rows, metric=metric).iterrows()}
    assert got["triplet"][f"untrained_{metric}"] == pytest.approx(0.31)
    assert got["triplet"]["gain_vs_untrained"] == pytest.approx(0.10)  # lower EER: a positive gain
    assert got["contrastive"]["gain_vs_untrained"] == pytest.approx(-0.04)


def curve(half, full, *, on="val", metric="verification_roc_auc", extra=()):
    points = [(0.25, half - 0.1), (0.5, half), (1.0, full), *extra]
    return [{"fraction": f, "progress": f, "steps": int(100 * f), "samples": int(3200 * f), "seconds": f, "on": on, "metrics": {metric: v}} for f, v in points]


def improving(curves: dict[str, list[tuple[float, float]]], metric="verification_roc_auc") -> dict[str, str]:
    """still_improving per backbone, from (value at half, value at the full budget) per seed."""
    rows = [cell(name, "l", s, f, metric=metric, curve=curve(h, f, metric=metric)) for name, pairs in curves.items() for s, (h, f) in enumerate(pairs)]
    return {b: r["still_improving"] for b, r in by_backbone(table(rows, metric=metric)).items()}


def one_sided_p_by_hand(gains):
    # the one-sample t statistic of the gains against 0, its upper tail of the t distribution (n − 1 df)
    n = len(gains)
    mean = sum(gains) / n
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / (n - 1))
    return stats.t.sf(mean / (sd / math.sqrt(n)), n - 1)


def test_still_improving_the_three_cases_of_the_issue():
    got = improving(
        {
            "steady": [(0.50, 0.55), (0.60, 0.65), (0.70, 0.75)],  # 3 seeds each gaining +0.05, levels spread by 0.1
            "tiny": [(0.70, 0.7001)],  # 1 seed gaining +0.0001
            "noisy": [(0.80, 0.83), (0.82, 0.80), (0.81, 0.82), (0.79, 0.795)],  # gains +0.03 −0.02 +0.01 +0.005
        }
    )
    assert got["steady"] == "yes (+0.050, no variance)"  # equal gains (to the bit); the spread of levels does not hide a gain every seed made
    assert got["tiny"] == "untested (+0.000, 1 seed)"
    gains = [0.83 - 0.80, 0.80 - 0.82, 0.82 - 0.81, 0.795 - 0.79]
    p = one_sided_p_by_hand(gains)
    assert p == pytest.approx(stats.ttest_1samp(gains, 0, alternative="greater").pvalue, rel=1e-9) and p > 0.05
    assert got["noisy"] == f"no (+0.006, p={p:.2g})" == "no (+0.006, p=0.29)"


def test_still_improving_paired_rules_for_two_seeds_equal_gains_and_a_clear_rise():
    got = improving(
        {
            "both": [(0.80, 0.82), (0.60, 0.61)],
            "one": [(0.80, 0.85), (0.60, 0.59)],  # mean +0.02, but one seed lost
            "exact": [(0.5, 0.625), (0.25, 0.375), (0.75, 0.875)],  # gains exactly +0.125 each: no variance, decided
            "zero": [(0.5, 0.5), (0.25, 0.25), (0.75, 0.75)],
            "rising": [(0.80, 0.85), (0.82, 0.86), (0.81, 0.84)],
        }
    )
    assert got["both"] == "yes (+0.015, 2 of 2 seeds gain)"
    assert got["one"] == "no (+0.020, 1 of 2 seeds gain)"
    assert got["exact"] == "yes (+0.125, no variance)" and got["zero"] == "no (+0.000, no variance)"
    p = one_sided_p_by_hand([0.05, 0.04, 0.03])
    assert p < 0.05 and got["rising"] == f"yes (+0.040, p={p:.2g})"
    text = markdown(table([cell("a", "l", s, f, curve=curve(h, f)) for s, (h, f) in enumerate([(0.8, 0.85), (0.82, 0.86), (0.81, 0.84)])]))
    assert "still improving" in text and "paired by seed" in text and "one-sided" in text


def test_still_improving_in_a_lower_is_better_metric():
    metric = "verification_eer"
    got = improving({"falling": [(0.20, 0.15), (0.22, 0.16)], "worse": [(0.10, 0.13), (0.11, 0.14)]}, metric)
    assert got["falling"] == "yes (+0.055, 2 of 2 seeds gain)"
    assert got["worse"] == "no (−0.030, 0 of 2 seeds gain)"


def test_still_improving_reads_one_split_validation_first():
    # a curve scored on both splits: the validation points decide, never half of one and all of the other
    both = curve(0.80, 0.81) + curve(0.50, 0.90, on="test")
    assert table([cell("a", "l", 0, 0.9, curve=both)])["still_improving"][0] == "untested (+0.010, 1 seed)"  # not +0.400 from the test points
    mixed = [p for p in curve(0.80, 0.81) if p["fraction"] != 1.0] + [p for p in curve(0.5, 0.9, on="test") if p["fraction"] == 1.0]
    assert table([cell("a", "l", 0, 0.9, curve=mixed)])["still_improving"][0] == "—"
    short = [{**p, "fraction": 0.3} if p["fraction"] == 0.5 else p for p in curve(0.6, 0.7)]
    assert table([cell("a", "l", 0, 0.7, curve=short), cell("b", "l", 0, 0.5)])["still_improving"].tolist() == ["—", "—"]


def test_selected_curve_point_per_configuration():
    rows = [cell("same", "l", s, 0.8, selected=0.5) for s in range(2)]
    rows += [cell("differ", "l", s, 0.8, selected=f) for s, f in ((1, 1.0), (0, 0.5))]
    rows += [cell("last", "l", 0, 0.8)]
    got = {b: r["selected"] for b, r in by_backbone(table(rows)).items()}
    assert got == {"same": "best@0.5", "differ": "best@0.5, 1.0", "last": "—"}  # seed order
    lines = [ln for ln in markdown(table(rows)).splitlines() if ln.startswith("|")]
    header = _cells(lines[0])
    assert "selected" in header and "still improving" not in header and "gain vs untrained" not in header
    assert all(len(_cells(ln)) == len(header) for ln in lines)


# --- several files, the cells that are not ok, CSV, plot links, non-numeric metrics -------------------------


def test_several_files_merge_by_cell_and_a_later_file_supersedes(tmp_path, monkeypatch, capsys):
    first = [row("resnet", "triplet", s, A_AUC[s]) for s in range(3)] + [error_row("vit", "bce_l1", 0)]
    rerun = {**row("vit", "bce_l1", 0, 0.99), "cell_id": "err-0"}  # the failed cell, rerun into another file
    write(tmp_path / "a.jsonl", first)
    write(tmp_path / "b.jsonl", [rerun, row("koch", "triplet", 0, 0.6)])
    code, err = board(tmp_path, monkeypatch, capsys, "a.jsonl", "b.jsonl", "--out", "both.md")
    assert code == 0, err
    text = (tmp_path / "both.md").read_text()
    lines = [_cells(ln) for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
    assert [ln[1] for ln in lines] == ["vit", "resnet", "koch"] and lines[0][-4] == "1 / 1"  # the error row is gone
    assert text.startswith("# a + b") and "Not ok" not in text
    code, err = board(tmp_path, monkeypatch, capsys, "b.jsonl", "a.jsonl", "--out", "back.md")  # the order decides
    back = (tmp_path / "back.md").read_text()
    lines = [_cells(ln) for ln in back.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
    assert [ln[1] for ln in lines] == ["resnet", "koch", "vit"] and lines[-1][-4] == "0 / 1"
    assert "- `err-0` vit · bce_l1 · toy, seed 0: **error** — RuntimeError: boom" in back


def test_several_files_need_out_and_each_must_exist(tmp_path, monkeypatch, capsys):
    write(tmp_path / "a.jsonl", ROWS)
    code, err = board(tmp_path, monkeypatch, capsys, "a.jsonl", "a.jsonl")
    assert code == 2 and len(err.splitlines()) == 1 and "2 results files need --out FILE.md" in err
    code, err = board(tmp_path, monkeypatch, capsys, "a.jsonl", "missing.jsonl", "--out", "x.md")
    assert code == 2 and len(err.splitlines()) == 1 and "missing.jsonl: no such results file" in err
    assert not list(tmp_path.glob("*.md"))


def test_cells_that_are_not_ok_are_listed_under_the_table(tmp_path, monkeypatch, capsys):
    broken = {**error_row("res|net", "triplet", 7), "error": "ValueError: a|b went wrong\n  File x.py, line 3\nmore"}
    diverged = {**row("resnet", "triplet", 4, 0.01, status="diverged", stopped_by="diverged"), "error": "loss is NaN at step 12"}
    write(tmp_path / "r.jsonl", [*ROWS[:3], broken, diverged, {**error_row("x", "y", 1), "status": "timeout", "error": ""}])
    code, err = board(tmp_path, monkeypatch, capsys, "r.jsonl")
    assert code == 0, err
    text = (tmp_path / "r.md").read_text()
    tail = text.split("**Not ok** (3 cells; newest row of each):\n\n")[1].splitlines()
    assert tail == [
        r"- `err-7` res\|net · triplet · toy, seed 7: **error** — ValueError: a\|b went wrong",
        "- `resnet-triplet-4-null-diverged` resnet · triplet · toy, seed 4: **diverged** — loss is NaN at step 12",
        "- `err-1` x · y · toy, seed 1: **timeout**",
    ]
    assert text.index("| 1 |") < text.index("**Not ok**")  # under the table


def test_csv_holds_the_leaderboard_frame(tmp_path, monkeypatch, capsys):
    write(tmp_path / "r.jsonl", ROWS)
    code, err = board(tmp_path, monkeypatch, capsys, "r.jsonl", "--csv", "out/board.csv", "--metric", "recall_at_1")
    assert code == 0, err
    got = pd.read_csv(tmp_path / "out" / "board.csv", keep_default_na=False, na_values=[""])
    expected = table(ROWS, "recall_at_1")
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected)
    assert got["backbone"].tolist() == expected["backbone"].tolist()
    assert np.allclose(got["recall_at_1_mean"], expected["recall_at_1_mean"], equal_nan=True)
    assert np.allclose(got["verification_roc_auc_std"], expected["verification_roc_auc_std"], equal_nan=True)
    assert got["others"].fillna("").tolist() == expected["others"].tolist()
    text = (tmp_path / "out" / "board.csv").read_text()
    assert "—" not in text and "[]" not in text  # missing values are empty cells
    assert got["vs_best_test"].isna().any() and (expected["vs_best_test"] == "—").any()
    code, err = board(tmp_path, monkeypatch, capsys, "r.jsonl", "--out", "o.md", "--csv", "out")  # a folder: nothing written
    assert code == 2 and "out: is a folder — give a file path to --csv" in err and not (tmp_path / "o.md").exists()


def test_markdown_links_the_plots_beside_it(tmp_path, monkeypatch, capsys):
    write(tmp_path / "r.jsonl", ROWS)
    board(tmp_path, monkeypatch, capsys, "r.jsonl")
    assert "Plots:" not in (tmp_path / "r.md").read_text()
    (tmp_path / "r_plots").mkdir()
    for name in ("roc.png", "leaderboard.png", "notes.txt"):
        (tmp_path / "r_plots" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    board(tmp_path, monkeypatch, capsys, "r.jsonl")
    assert (tmp_path / "r.md").read_text().splitlines()[-1] == "Plots: [leaderboard](r_plots/leaderboard.png) · [roc](r_plots/roc.png)"
    (tmp_path / "sub").mkdir()
    board(tmp_path, monkeypatch, capsys, "r.jsonl", "--out", "sub/r.md")  # the folder is looked for beside the output
    assert "Plots:" not in (tmp_path / "sub" / "r.md").read_text()


def test_the_roc_a_row_carries_is_not_a_leaderboard_column():
    roc = {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.9, 1.0]}
    rows = [row("a", "l", s, 0.8 + 0.01 * s, verification_roc=roc) for s in range(2)] + [row("b", "l", 0, 0.7)]
    frame = table(rows)
    assert [c for c in frame.columns if c.startswith("verification_roc")] == ["verification_roc_auc_mean", "verification_roc_auc_std"]
    assert frame["verification_roc_auc_mean"].tolist() == [pytest.approx(0.805), pytest.approx(0.7)]
    with pytest.raises(UserError, match="'verification_roc' is not a score"):
        table(rows, metric="verification_roc")

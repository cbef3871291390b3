"""What the leaderboard compares: comparison groups, the baseline at the same distance, identical replicates,
seeds split by speed environment, a search file's own metric, and standard errors beside (never as) scores."""

from __future__ import annotations

import json
import math

import pytest
from boards import _cells, board, by_backbone, cell, tables, welch_by_hand, write
from scipy import stats

from bench.errors import UserError
from bench.report.leaderboard import markdown
from bench.report.table import ranked, table

FEW_SHOT = "few_shot_20way_1shot_accuracy"


def measured(r: dict, **metrics) -> dict:
    r["metrics"].update(metrics)
    return r


# --- 1. comparison groups ------------------------------------------------------------------------------------


def test_lines_are_ranked_and_tested_only_within_the_data_they_score():
    # contrastive is the best on the hard dataset; triplet on the easy one must not make it "below"
    rows = [cell("r", "contrastive", s, v, dataset="hard") for s, v in enumerate([0.80, 0.81, 0.82])]
    rows += [cell("r", "triplet", s, v, dataset="hard") for s, v in enumerate([0.70, 0.72, 0.71])]
    rows += [cell("r", "triplet", s, v, dataset="easy") for s, v in enumerate([0.990, 0.991, 0.992])]
    frame = table(rows)
    got = {(r["loss"], r["dataset"]): r for _, r in frame.iterrows()}
    assert got[("contrastive", "hard")]["vs_best"] == "best" and got[("triplet", "easy")]["vs_best"] == "best"
    p = welch_by_hand([0.80, 0.81, 0.82], [0.70, 0.72, 0.71])
    assert got[("triplet", "hard")]["vs_best_p"] == pytest.approx(p, rel=1e-9)
    assert list(zip(frame["group"], frame["loss"])) == [
        ("dataset = hard", "contrastive"),
        ("dataset = hard", "triplet"),
        ("dataset = easy", "triplet"),
    ]  # groups in grid order, best first
    text = markdown(frame)
    assert list(tables(text)) == ["dataset = hard", "dataset = easy"]
    hard, easy = tables(text)["dataset = hard"], tables(text)["dataset = easy"]
    assert [(c["#"], c["loss"], c["vs best"]) for c in hard] == [("1", "contrastive", "best"), ("2", "triplet", "below (Welch, p_adj<0.001)")]
    assert [(c["#"], c["loss"], c["vs best"]) for c in easy] == [("1", "triplet", "best")]
    assert "only within a *comparison group*" in text
    _, lines = ranked(rows)  # the plots draw the same lines in the same order
    assert [(ln[0].config["loss"], ln[0].config["dataset"]) for ln in lines] == list(zip(frame["loss"], frame["dataset"]))


def test_a_split_or_evaluation_axis_makes_groups_but_the_distance_curve_and_selection_metric_do_not():
    rows = [cell("a", "l", s, 0.9 - 0.01 * s, split={"seed": seed}) for s in range(2) for seed in (0, 1)]
    rows += [cell("b", "l", s, 0.8 + 0.01 * s, eval={"distance": "l1", "curve": [0.5, 1.0], "select_metric": "recall_at_1"}) for s in range(2)]
    rows += [cell("c", "l", s, 0.85, eval={"recall_k": [1, 4]}) for s in range(2)]
    frame = table(rows)
    assert sorted(set(frame["group"])) == [
        "eval.recall_k = [1, 2], split.seed = 0",
        "eval.recall_k = [1, 2], split.seed = 1",
        "eval.recall_k = [1, 4], split.seed = 0",
    ]
    first = frame[frame["group"] == "eval.recall_k = [1, 2], split.seed = 0"]
    assert list(first["backbone"]) == ["a", "b"]  # b's distance, curve and selection metric are its method
    assert list(first["vs_best"])[0] == "best" and all(v == "best" for v in frame[frame["group"] != first["group"].iloc[0]]["vs_best"])
    text = markdown(frame)
    assert "### eval.recall_k = [1, 4], split.seed = 0" in text
    one = markdown(table([r for r in rows if r["config"]["split"]["seed"] == 0 and r["config"]["eval"]["recall_k"] == [1, 2]]))
    assert "###" not in one and "comparison group" not in one and len(tables(one)[""]) == 2  # one group: one table, as before


# --- 2. the untrained baseline at the distance the line was scored with -------------------------------------


def scored(r: dict, distance: str) -> dict:
    r["metrics"]["distance"] = distance
    return r


def test_gain_vs_untrained_is_against_the_baseline_scored_with_the_same_distance():
    base = {"backbone_args": {"pretrained": True}}
    rows = [scored(cell("lite", "none", s, 0.44, **base), "cosine") for s in range(2)]  # eval.distance unset: cosine
    rows += [scored(cell("lite", "none", s, 0.41, eval={"distance": "l1"}, **base), "l1") for s in range(2)]
    rows += [scored(cell("lite", "bce_l1", s, v, **base), "l1") for s, v in enumerate([0.44, 0.45])]  # eval.distance unset, scored l1
    rows += [scored(cell("lite", "triplet", s, v, **base), "cosine") for s, v in enumerate([0.50, 0.52])]
    rows += [scored(cell("koch", "none", s, 0.30), "cosine") for s in range(2)]
    rows += [scored(cell("koch", "bce_l1", s, 0.35), "l1") for s in range(2)]  # no koch baseline at l1
    frame = table(rows)
    got = {(r["backbone"], r["loss"]): r for _, r in frame.iterrows()}
    assert got[("lite", "bce_l1")]["untrained_verification_roc_auc"] == pytest.approx(0.41)
    assert got[("lite", "bce_l1")]["gain_vs_untrained"] == pytest.approx(0.445 - 0.41)
    assert got[("lite", "triplet")]["gain_vs_untrained"] == pytest.approx(0.51 - 0.44)
    assert math.isnan(got[("koch", "bce_l1")]["gain_vs_untrained"])  # never a gain against another distance
    shown = {(c["backbone"], c["loss"], c["distance"]): c["gain vs untrained"] for c in tables(markdown(frame))[""]}
    assert shown == {
        ("lite", "bce_l1", "l1"): "+0.035",
        ("lite", "triplet", "cosine"): "+0.070",
        ("koch", "bce_l1", "l1"): "—",
        ("lite", "none", "cosine"): "(baseline)",
        ("lite", "none", "l1"): "(baseline)",
        ("koch", "none", "cosine"): "(baseline)",
    }
    assert "scored with the same distance" in markdown(frame)


def test_the_distance_column_shows_only_where_distances_differ_within_a_group():
    rows = [scored(cell("a", "triplet", s, 0.9, dataset="one"), "cosine") for s in range(2)]
    rows += [scored(cell("a", "bce_l1", s, 0.8, dataset="two"), "l1") for s in range(2)]
    text = markdown(table(rows))
    assert all("distance" not in c for t in tables(text).values() for c in t)


# --- 3. identical replicates are one observation ------------------------------------------------------------


def fixed(backbone, value, seeds=3, metric="verification_roc_auc"):
    return [cell(backbone, "none", s, value, metric=metric) for s in range(seeds)]  # every metric identical across seeds


def test_identical_seeds_are_one_value_tested_with_a_one_sample_test():
    best = [0.86, 0.88, 0.87]
    rows = [cell("trained", "triplet", s, v) for s, v in enumerate(best)] + fixed("untrained", 0.85)
    rows += [cell("other", "triplet", s, v) for s, v in enumerate([0.80, 0.86])]
    frame = table(rows)
    got = by_backbone(frame)
    assert bool(got["untrained"]["identical_seeds"]) and not bool(got["trained"]["identical_seeds"])
    p = stats.ttest_1samp(best, 0.85).pvalue  # the best's seeds against a fixed number, not a sample of 3
    assert got["untrained"]["vs_best_p"] == pytest.approx(p, rel=1e-9)
    assert got["untrained"]["vs_best_p_adj"] >= p  # the family's adjustment only ever widens
    assert got["untrained"]["vs_best_test"] == "1-sample" and got["other"]["vs_best_test"] == "Welch"  # two samples: Welch
    line = next(c for c in tables(markdown(frame))[""] if c["backbone"] == "untrained")
    assert line["ok / seeds"] == "3 / 3 (1 distinct value)" and line["verification_roc_auc"] == "0.8500"
    assert "bit-identical" in markdown(frame) and "*1-sample* against a line of identical seeds" in markdown(frame)


def test_a_fixed_value_can_be_the_best_and_two_fixed_values_without_items_are_untested():
    rows = fixed("base", 0.90) + fixed("same", 0.90, seeds=2) + fixed("low", 0.70, seeds=2)
    rows += [cell("trained", "triplet", s, v) for s, v in enumerate([0.80, 0.84, 0.82])]
    rows += [cell("solo", "triplet", 0, 0.95)]
    got = {b: (r["vs_best"], r["vs_best_test"]) for b, r in by_backbone(table(rows)).items()}
    no_variance = "no variance (identical seeds, no per-item files)"
    assert got == {
        "solo": ("1 seed: untested", "—"),
        "base": ("best", "—"),
        "same": ("untested", no_variance),
        "low": ("untested", no_variance),
        "trained": ("below", "1-sample"),
    }


def test_identical_seeds_are_one_gain_for_still_improving():
    points = [
        {"fraction": f, "progress": f, "steps": int(10 * f), "samples": 0, "seconds": f, "on": "val", "metrics": {"verification_roc_auc": v}}
        for f, v in ((0.5, 0.80), (1.0, 0.85))
    ]
    rows = [{**r, "curve": points} for r in fixed("deterministic", 0.85)]
    assert table(rows)["still_improving"].tolist() == ["untested (+0.050, 1 distinct value)"]


def test_seeds_equal_on_the_sort_metric_alone_stay_separate_observations():
    rows = [measured(cell("coincide", "triplet", s, 0.8), recall_at_1=0.5 + 0.1 * s) for s in range(2)]  # other metrics differ
    rows += [cell("best", "triplet", s, v) for s, v in enumerate([0.85, 0.86])]
    got = by_backbone(table(rows))
    assert not bool(got["coincide"]["identical_seeds"])
    assert got["coincide"]["vs_best_p"] == pytest.approx(welch_by_hand([0.85, 0.86], [0.8, 0.8]), rel=1e-9)


# --- 9. seeds bought by seconds on different machines are not pooled ----------------------------------------


def timed(seed, value, threads, stopped_by="max_seconds", cpu="Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", status="ok"):
    r = cell("conv4", "triplet", seed, value)
    r["env"] = {"device": "cpu", "torch_threads": threads, **({"cpu_model": cpu} if cpu else {})}
    r["precision"] = "bf16"
    r["train"]["stopped_by"] = stopped_by
    r["status"] = status
    return r


def test_seconds_bound_seeds_from_different_speed_environments_are_separate_lines():
    rows = [timed(0, 0.80, 2), timed(1, 0.82, 2), timed(2, 0.70, 1), timed(3, 0.71, 1), timed(4, 0.5, 1, status="error")]
    frame = table(rows)
    assert list(frame["speed_env"]) == [
        "cpu 2 threads Intel Xeon Platinum 8375C CPU @ 2.90GHz bf16",
        "cpu 1 threads Intel Xeon Platinum 8375C CPU @ 2.90GHz bf16",
    ]
    assert list(frame["ok"]) == [2, 2] and list(frame["seeds"]) == [2, 3]  # the failed seed joins its environment's line
    header = _cells(next(ln for ln in markdown(frame).splitlines() if ln.startswith("| #")))
    assert "speed env" in header and "separate lines" in markdown(frame)


def test_steps_bound_seeds_pool_whatever_their_environment():
    rows = [timed(0, 0.80, 2, "max_steps"), timed(1, 0.82, 1, "max_steps")]
    frame = table(rows)
    assert list(frame["ok"]) == [2] and "speed_env" not in frame


def test_steps_bound_seeds_in_different_precisions_are_separate_lines():
    # precision = "auto" resolved to bf16 on one machine and fp32 on another: different arithmetic, not more seeds
    rows = [timed(0, 0.80, 2, "max_steps"), timed(1, 0.82, 2, "max_steps"), timed(2, 0.70, 1, "max_steps"), timed(3, 0.72, 2, "max_steps")]
    for r in rows[2:]:
        r["precision"] = "fp32"
    frame = table(rows)
    assert list(frame["speed_env"]) == ["bf16", "fp32"] and list(frame["ok"]) == [2, 2]


def test_a_table_whose_rows_ran_at_different_thread_counts_says_so_under_it():
    mixed = [timed(0, 0.80, 2, "max_steps"), timed(1, 0.82, 1, "max_steps"), timed(2, 0.81, 2, "max_steps")]
    text = markdown(table(mixed))
    note = next(ln for ln in text.splitlines() if ln.startswith("*numerics*"))
    assert "2 arithmetic environments" in note and "1 threads" in note and ": 2 rows" in note and ": 1 row" in note
    same = [timed(s, 0.8 + s / 100, 2, "max_steps") for s in range(3)]
    assert "*numerics*" not in markdown(table(same))


def test_rows_without_a_cpu_model_are_compared_on_the_fields_they_have():
    same = [timed(0, 0.80, 2, cpu=None), timed(1, 0.82, 2)]  # one row predates cpu_model: threads, device and precision agree
    assert list(table(same)["ok"]) == [2]
    differ = [timed(0, 0.80, 2, cpu=None), timed(1, 0.82, 1)]
    assert list(table(differ)["speed_env"]) == ["cpu 1 threads bf16", "cpu 2 threads bf16"]  # best first


# --- 6. a search file sorts by its search metric --------------------------------------------------------------


def search_rows(metric=FEW_SHOT):
    final = [
        measured(cell(name, "triplet", s, v, metric=FEW_SHOT), verification_roc_auc=auc)
        for name, v, auc in (("a", 0.6, 0.7), ("b", 0.5, 0.9))
        for s in range(2)
    ]
    for r in final:
        r["search"] = {"role": "final", "study": r["config"]["backbone"], "trial": 0, "trials": 1, "params": {}, "metric": metric, "objective": 0.5}
    trial = cell("a", "triplet", 9, 0.4, metric=FEW_SHOT, trial={"study": "a", "number": 0, "params": {}, "metric": metric})
    return final + [trial]


def test_a_search_file_sorts_by_its_search_metric_unless_metric_is_given(tmp_path, monkeypatch, capsys):
    write(tmp_path / "s.jsonl", search_rows())
    code, err = board(tmp_path, monkeypatch, capsys, "s.jsonl")
    assert code == 0, err
    text = (tmp_path / "s.md").read_text()
    assert f"Sorted by **{FEW_SHOT}**" in text and [c["backbone"] for c in tables(text)[""]] == ["a", "b"]
    code, err = board(tmp_path, monkeypatch, capsys, "s.jsonl", "--metric", "verification_roc_auc")
    assert code == 0 and [c["backbone"] for c in tables((tmp_path / "s.md").read_text())[""]] == ["b", "a"]
    write(
        tmp_path / "two.jsonl",
        search_rows() + [{**r, "cell_id": r["cell_id"] + "x", "search": {**r["search"], "metric": "recall_at_1"}} for r in search_rows()[:1]],
    )
    code, err = board(tmp_path, monkeypatch, capsys, "two.jsonl")
    assert code == 2 and len(err.splitlines()) == 1 and "searches with different metrics" in err and not (tmp_path / "two.md").exists()


# --- 7. a standard error is shown beside its score, never taken for one ------------------------------------------


def test_a_standard_error_is_not_a_sort_metric_and_is_shown_beside_its_score(tmp_path, monkeypatch, capsys):
    rows = [measured(cell("a", "triplet", s, v, metric=FEW_SHOT), **{f"{FEW_SHOT}_stderr": se}) for s, (v, se) in enumerate([(0.55, 0.006), (0.56, 0.008)])]
    with pytest.raises(UserError, match="is not a score"):
        table(rows, f"{FEW_SHOT}_stderr")
    text = markdown(table(rows, FEW_SHOT), FEW_SHOT)
    assert tables(text)[""][0][FEW_SHOT] == "0.5550 ± 0.0071 (se 0.0070)" and "standard error over episodes" in text
    write(tmp_path / "r.jsonl", rows)
    code, err = board(tmp_path, monkeypatch, capsys, "r.jsonl", "--metric", f"{FEW_SHOT}_stderr")
    assert code == 2 and len(err.splitlines()) == 1 and "is not a score" in err
    assert json.loads(json.dumps(rows[0]))  # the rows themselves are untouched

"""The leaderboard's "why": simultaneous comparisons with the best and a stated verdict, power, and the ranking along the budget."""

from __future__ import annotations

import math

import pytest
from boards import cell, tables

from bench.report.budget import flips, fraction_text
from bench.report.leaderboard import markdown
from bench.report.table import table
from bench.report.verdicts import signed

AUC = "verification_roc_auc"


def curve(*values) -> list[dict]:
    fractions = (0.25, 0.5, 1.0)
    return [
        {"fraction": f, "progress": f, "steps": int(100 * f), "samples": 0, "seconds": f, "on": "val", "metrics": {AUC: v}} for f, v in zip(fractions, values)
    ]


def test_a_flip_along_the_budget_is_named_with_where_it_happened():
    e = (-0.002, 0.0, 0.002)  # the seeds' spread at 1/4 and 1/2: se of a difference 0.0016, far under the margins
    rows = [cell("r", "contrastive", s, 0.90 + 0.01 * s, curve=curve(0.60 + e[s], 0.80 + e[s], 0.92 + 0.01 * s)) for s in range(3)]
    rows += [cell("r", "triplet", s, 0.85 + 0.01 * s, curve=curve(0.70 + e[s], 0.82 + e[s], 0.86 + 0.01 * s)) for s in range(3)]
    rows += [cell("r", "bce_l1", s, 0.70 + 0.01 * s, curve=curve(0.50 + e[s], 0.60 + e[s], 0.70 + 0.01 * s)) for s in range(3)]
    text = markdown(table(rows))
    said = next(ln for ln in text.splitlines() if ln.startswith("**Along the budget**"))
    # triplet was ahead at 1/4 and 1/2 (by 0.02 at 1/2), contrastive after (by 0.06 at the end); bce_l1 never led
    assert "1 pair of lines changed order: #2 triplet led #1 contrastive until 1/2 (+0.020), #1 contrastive after (+0.060 at the end)" in said
    assert "at 1/4, 1/2, the end" in said


def test_a_stable_ranking_says_so_and_lines_without_curves_say_nothing():
    rows = [cell("r", loss, s, v + 0.01 * s, curve=curve(v - 0.2, v - 0.1, v + 0.01 * s)) for loss, v in (("a", 0.9), ("b", 0.8)) for s in range(2)]
    said = [ln for ln in markdown(table(rows)).splitlines() if ln.startswith("**Along the budget**")]
    assert said and "no two lines change order" in said[0]
    plain = [cell("r", loss, s, v) for loss, v in (("a", 0.9), ("b", 0.8)) for s in range(2)]
    assert "Along the budget" not in markdown(table(plain))


def test_flips_against_a_loop_over_pairs():
    plain = [{0.25: 0.5, 0.5: 0.7, 1.0: 0.9}, {0.25: 0.6, 0.5: 0.6, 1.0: 0.8}, {0.25: 0.7, 0.5: 0.8, 1.0: 0.85}, {}]
    means = [{f: (m, 0.001) for f, m in c.items()} for c in plain]  # se 0.001 per line: every margin here is beyond it
    found = flips(means, ["A", "B", "C", "D"], AUC)
    assert found.fractions == [0.25, 0.5, 1.0]
    by_hand = 0
    for i in range(3):
        for j in range(i + 1, 3):
            end = plain[i][1.0] - plain[j][1.0]
            by_hand += any((plain[i][f] - plain[j][f]) * end < 0 for f in (0.25, 0.5))
    assert len(found.said) == by_hand == 2 and found.within_noise == found.unknown_spread == 0  # A–B and A–C; B–C holds
    assert found.said[0] == "B led A until 1/4 (+0.100), A after (+0.100 at the end)"
    assert [fraction_text(f) for f in (0.125, 0.5, 1.0, 0.3, 0.333)] == ["1/8", "1/2", "the end", "3/10", "0.333"]


def test_the_verdict_names_the_lines_not_separated_and_what_more_seeds_would_do():
    rows = [cell("r", "a", s, v) for s, v in enumerate([0.90, 0.92, 0.91])]
    rows += [cell("r", "b", s, v) for s, v in enumerate([0.89, 0.93, 0.90])]  # within the noise
    rows += [cell("r", "c", s, v) for s, v in enumerate([0.70, 0.71, 0.72])]  # clearly below
    frame = table(rows)
    got = {r["loss"]: r for _, r in frame.iterrows()}
    assert (got["a"]["vs_best"], got["b"]["vs_best"], got["c"]["vs_best"]) == ("best", "not separated", "below")
    assert got["b"]["seeds_to_resolve"] > 3 and math.isnan(got["c"]["seeds_to_resolve"])
    assert got["b"]["detectable"] > abs(got["b"]["vs_best_delta"])  # this design could not have told them apart
    text = markdown(frame)
    verdict = next(ln for ln in text.splitlines() if ln.startswith("**Verdict**"))
    assert verdict.startswith("**Verdict** (verification_roc_auc, 3 ok seeds per line): best **#1 a** (0.9100); 1 of 2 tested lines below it")
    assert "not separated from it" in verdict and "tied" not in verdict
    assert f"#2 b (−0.003, detectable {got['b']['detectable']:.3f})" in verdict
    assert f"About {int(got['b']['seeds_to_resolve'])} seeds per line would detect a true difference of 0.02 for 1 of them" in verdict
    line = next(c for c in tables(text)[""] if c["loss"] == "b")
    assert line["detectable Δ"].startswith(f"{got['b']['detectable']:.3f} (≈ {int(got['b']['seeds_to_resolve'])} seeds detect 0.02)")


def test_more_lines_make_each_comparison_stricter_and_the_raw_test_stays_the_same():
    best = [cell("r", "best", s, v) for s, v in enumerate([0.90, 0.91, 0.92])]
    near = [cell("r", "near", s, v) for s, v in enumerate([0.86, 0.88, 0.87])]
    alone = table(best + near)
    crowd = table(best + near + [cell("r", f"x{k}", s, 0.899 + 0.01 * s - 0.001 * k) for k in range(4) for s in range(3)])
    a, c = alone.set_index("loss").loc["near"], crowd.set_index("loss").loc["near"]
    assert c["vs_best_p"] == pytest.approx(a["vs_best_p"])  # the comparison's own test is the same
    # two lines: the family is that one comparison, so its adjusted p is its own (up to the law's Monte-Carlo draws)
    assert a["vs_best_p_adj"] == pytest.approx(a["vs_best_p"], abs=0.01)
    # six lines: 15 pairs any of which could have been the best and the worst, so the critical value and p_adj grow
    assert c["critical"] > a["critical"] and c["vs_best_p_adj"] > a["vs_best_p_adj"]
    assert c["vs_best_high"] - c["vs_best_low"] > a["vs_best_high"] - a["vs_best_low"]


def test_the_equivalence_margin_of_report_says_equivalent_only_inside_it():
    best = [cell("r", "best", s, v) for s, v in enumerate([0.900, 0.902, 0.901])]
    twin = [cell("r", "twin", s, v) for s, v in enumerate([0.8995, 0.9012, 0.9003])]
    frame = table(best + twin, equivalence=0.01)
    got = frame.set_index("loss").loc["twin"]
    assert got["vs_best"] == "equivalent (±0.01)" and got["vs_best_low"] > -0.01 and got["vs_best_high"] < 0.01
    assert table(best + twin).set_index("loss").loc["twin", "vs_best"] == "not separated"  # no margin: never "equivalent"
    assert table(best + twin, equivalence=0.0001).set_index("loss").loc["twin", "vs_best"] == "not separated"
    for r in best + twin:
        r["report"] = {"equivalence": 0.01}  # the grid's [report] table, carried by its rows
    assert table(best + twin).set_index("loss").loc["twin", "vs_best"] == "equivalent (±0.01)"
    assert "equivalent to it within ±0.01: #2 twin" in markdown(table(best + twin))


def test_steps_show_their_range_and_a_seed_starved_by_the_clock_is_named():
    rows = [cell("r", "a", 0, 0.9), cell("r", "a", 1, 0.8)]
    rows[0]["train"].update(steps=60, stopped_by="max_steps")
    rows[1]["train"].update(steps=4, stopped_by="max_seconds")
    rows += [cell("r", "b", s, 0.7 + 0.01 * s) for s in range(2)]
    frame = table(rows)
    line = next(c for c in tables(markdown(frame))[""] if c["loss"] == "a")
    assert line["steps"] == "4–60"
    assert line["stopped by"] == "max_seconds,max_steps (seed 1 at 4 of 60 steps: short by the clock)"
    assert next(c for c in tables(markdown(frame))[""] if c["loss"] == "b")["steps"] == "100"


def test_a_metric_nan_on_every_line_says_why_under_its_table():
    few = "few_shot_20way_1shot_accuracy"
    note = "16 classes have 2+ images, a 20-way episode needs 20 — lower eval.n_way (bench evaluate --n-way) or eval.k_shot"
    rows = [cell("r", loss, s, math.nan, metric=few) for loss in ("a", "b") for s in range(2)]
    for r in rows:
        r["metrics"]["few_shot_note"] = note
    text = markdown(table(rows, few), few)
    assert f"*{few} is NaN on every line of this table*: {note}" in text
    assert "is NaN on every line" not in markdown(table([cell("r", "a", s, 0.5 + 0.1 * s, metric=few) for s in range(2)], few), few)


def test_the_leaderboard_pairs_lines_over_the_items_their_rows_kept(tmp_path, monkeypatch, capsys):
    """Rows with per-item files (bench.items) are compared paired over the shared episodes, through the CLI; the
    interval is what bench.report.paired gives for the same lines, and narrower than the seeds-alone one."""
    import json

    import numpy as np

    from bench.cli import main
    from bench.items import item_scores, write_items
    from bench.report.paired import ItemBootstrap, contrast

    few, episodes = "few_shot_5way_1shot_accuracy", 600
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.2, 0.8, episodes)
    results = tmp_path / "r.jsonl"
    rows, seeds = [], {}
    for loss, skill in (("a", 0.05), ("b", 0.0)):
        for s in range(3):
            correct = rng.binomial(5, np.clip(difficulty + skill + rng.normal(0, 0.01), 0, 1)).astype(np.uint8)
            r = cell("r", loss, s, float(correct.mean() / 5), metric=few)
            arrays = {few: correct, f"{few}.queries": np.array(5, np.uint16), f"material.{few}": np.array("m" * 64)}
            r["items"] = write_items(results, r["cell_id"].replace("/", "_")[:40] + str(abs(hash(r["cell_id"]))), arrays)
            rows.append(r)
            seeds.setdefault(loss, []).append(item_scores(arrays, few))
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "r.jsonl", "--metric", few]) == 0
    line = next(c for c in tables((tmp_path / "r.md").read_text())[""] if c["loss"] == "b")
    assert line["vs best"].startswith(f"below (paired, {episodes} items")
    values = {k: np.array([float(np.mean(s.values)) for s in v]) for k, v in seeds.items()}
    expected = contrast([("b", seeds["b"], values["b"], False), ("a", seeds["a"], values["a"], False)], [1.0, -1.0], ItemBootstrap())
    # two lines: the family's critical value is the comparison's own 95 % one (to the law's Monte-Carlo error)
    shown = line["Δ vs best [simultaneous 95%]"]
    assert shown.startswith(f"{signed(expected.estimate)} [")
    low, high = (float(x.replace("−", "-")) for x in shown.split("[")[1].rstrip("]").split(", "))
    assert low == pytest.approx(expected.low, abs=0.003) and high == pytest.approx(expected.high, abs=0.003)
    # the items were used: the shared difficulty cancels, and the seed × item noise left is what the seeds' raw
    # variance already holds, so the items' own part is ~0 and the interval is the seeds' (not the unpaired one's)
    assert expected.method == "paired" and expected.item_var < 0.1 * expected.seed_var
    unpaired = contrast([("b", seeds["b"], values["b"], False), ("a", seeds["a"], values["a"], False)], [1.0, -1.0], ItemBootstrap(), paired=False)
    assert unpaired.item_var > 10 * expected.item_var + 1e-6


def test_rows_of_grids_with_different_report_options_need_the_flags():
    from bench.errors import UserError

    rows = [cell("r", loss, s, v) for loss, base in (("a", 0.9), ("b", 0.8)) for s, v in enumerate([base, base + 0.01])]
    for r, margin in zip(rows, (0.01, 0.01, 0.02, 0.02)):
        r["report"] = {"equivalence": margin}
    with pytest.raises(UserError, match="different \\[report\\] options"):
        table(rows)
    assert table(rows, equivalence=0.5, target=0.02).set_index("loss").loc["b", "resolve_target"] == 0.02  # the flags decide


def test_the_views_default_metric_is_the_rows_report_metric():
    from bench.errors import UserError
    from bench.report.table import DEFAULT_METRIC, default_metric

    rows = [cell("r", loss, s, v) for loss, base in (("a", 0.9), ("b", 0.8)) for s, v in enumerate([base, base + 0.01])]
    assert default_metric(rows) == DEFAULT_METRIC
    for r in rows:
        r["report"] = {"metric": "recall_at_1", "equivalence": 0.01}
    assert default_metric(rows) == "recall_at_1"
    rows[0]["search"] = {"study": "s", "trial": 0, "metric": "map_at_r"}  # a declared metric wins over a search's
    assert default_metric(rows) == "recall_at_1"
    table(rows, "verification_roc_auc")  # one metric and the same judging options: no conflict
    rows[1]["report"] = {"metric": "map_at_r", "equivalence": 0.01}
    with pytest.raises(UserError, match="different \\[report\\] metrics \\(map_at_r, recall_at_1\\)"):
        default_metric(rows)

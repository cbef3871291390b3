"""`bench effects`: the effect of each axis from matched pairs of lines, with its interval, and each axis's share of
the variance, on synthetic grids with planted effects (checked against a loop over pairs written here and against
statsmodels' anova_lm called directly), with and without per-item files, and the bad inputs."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.cli import main
from bench.items import write_items
from bench.report.verdicts import signed
from bench.report.effects import effects

FEW = "few_shot_5way_1shot_accuracy"
TRUTH_A = 0.10  # a1 − a0 at b0; at b1 the interaction adds 2 × 0.04
INTERACTION = 0.04  # + at (a1, b1), − at (a0, b1): B averages to 0 over A's levels
MATERIAL = "e" * 64


def planted(a: str, b: str) -> float:
    return 0.5 + TRUTH_A * (a == "a1") + (b == "b1") * (INTERACTION if a == "a1" else -INTERACTION)


def row(a: str, b: str, seed: int, value: float, *, loss: str = "triplet", config: dict | None = None, **metrics) -> dict:
    cfg = {"backbone": "net", "loss": loss, "dataset": "toy", "seed": seed, "A": a, "B": b, "loss_args": {},
           "train": {"batch_size": 32, "lr": 0.001}, "split": {"seed": 0}, "eval": {"episodes": 400}, **(config or {})}
    cell = f"{a}-{b}-{loss}-{seed}-{json.dumps(config, sort_keys=True)}"
    return {"schema": 2, "cell_id": cell, "status": "ok", "config": cfg,
            "metrics": {FEW: value, f"{FEW}_stderr": 0.01, "verification_pairs": 100, **metrics},
            "train": {"stopped_by": "steps", "steps": 100}}


def grid(rng, corners=(("a0", "b0"), ("a0", "b1"), ("a1", "b0"), ("a1", "b1")), seeds: int = 3, sd: float = 0.01) -> list[dict]:
    return [row(a, b, s, planted(a, b) + rng.normal(0, sd)) for a, b in corners for s in range(seeds)]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["effects", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


def table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """The effects table as {(axis, "level vs reference"): cells}."""
    found = {}
    for ln in text.splitlines():
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if len(cells) == 8 and " vs " in cells[1]:
            found[(cells[0], cells[1])] = cells
    return found


def seed_means(rows: list[dict]) -> dict[tuple[str, str], float]:
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by.setdefault((r["config"]["A"], r["config"]["B"]), []).append(r["metrics"][FEW])
    return {k: float(np.mean(v)) for k, v in by.items()}


def by_level(group, axis: str, level: str):
    return next(e for e in group.effects if e.axis == axis and e.level == level)


# --- planted effects ------------------------------------------------------------------------------------------

def test_planted_effects_are_recovered_and_agree_with_a_loop_over_pairs_and_with_anova_lm(tmp_path, capsys):
    rows = grid(np.random.default_rng(0))
    (group,) = effects(rows, FEW, interactions=[("A", "B")])
    assert group.axes == {"A": ["a0", "a1"], "B": ["b0", "b1"]}
    a, b = by_level(group, "A", "a1"), by_level(group, "B", "b1")
    truth_a = np.mean([planted("a1", bl) - planted("a0", bl) for bl in ("b0", "b1")])  # 0.14
    assert a.pairs == 2 and a.low < truth_a < a.high and abs(a.estimate - truth_a) < 0.02 and a.p < 0.001
    assert b.pairs == 2 and b.low < 0 < b.high
    assert (a.method, a.agree) == ("seeds only", 2)

    # the matched-pair mean, by a loop over the pairs
    means = seed_means(rows)
    diffs = [means[("a1", bl)] - means[("a0", bl)] for bl in ("b0", "b1")]
    assert a.estimate == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)
    diffs = [means[(al, "b1")] - means[(al, "b0")] for al in ("a0", "a1")]
    assert b.estimate == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)
    # its interval: Σ c² s²/n over the four lines (c = ±1/2), Satterthwaite's df, a t quantile
    parts = [(0.25 * np.var(v, ddof=1) / len(v), len(v) - 1) for v in
             ([r["metrics"][FEW] for r in rows if (r["config"]["A"], r["config"]["B"]) == k] for k in means)]
    se2 = sum(p for p, _ in parts)
    df = se2 ** 2 / sum(p * p / d for p, d in parts)
    half = stats.t.ppf(0.975, df) * math.sqrt(se2)
    assert (a.low, a.high) == pytest.approx((a.estimate - half, a.estimate + half), abs=1e-12)

    # the shares, from statsmodels' anova_lm called here
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    data = pd.DataFrame([{"A": r["config"]["A"], "B": r["config"]["B"], "seed": str(r["config"]["seed"]), "y": r["metrics"][FEW]}
                         for r in rows])
    want = anova_lm(ols("y ~ C(A) + C(B) + C(seed) + C(A):C(B)", data).fit(), typ=2)
    total = float(((data.y - data.y.mean()) ** 2).sum())
    got = {t.name: t for t in group.variance.terms}
    assert list(got) == ["A", "B", "seed", "A × B", "residual"]
    for name, term in {"A": "C(A)", "B": "C(B)", "seed": "C(seed)", "A × B": "C(A):C(B)", "residual": "Residual"}.items():
        assert got[name].sum_sq == pytest.approx(want.loc[term, "sum_sq"], rel=1e-9)
        assert got[name].share == pytest.approx(want.loc[term, "sum_sq"] / total, rel=1e-9)
    assert got["A × B"].p < 0.001 and got["A × B"].share > 0.05
    assert got["A × B"].F == pytest.approx(want.loc["C(A):C(B)", "F"], rel=1e-9)
    assert sum(t.share for t in got.values()) == pytest.approx(1.0)  # complete and balanced: the shares add up
    assert group.variance.design.endswith("(complete and balanced)")

    # the CLI prints the same figures and writes them to --out
    path = write(tmp_path / "planted.jsonl", rows)
    code, out, err = cli(capsys, path, "--metric", FEW, "--interaction", "A:B", "--out", tmp_path / "effects.md")
    assert code == 0, err
    cells = table_rows(out)[("A", "a1 vs a0")]
    assert cells[2:] == ["2", f"+{a.estimate:.3f} [+{a.low:.3f}, +{a.high:.3f}]", "p<0.001", "p<0.001", "2 of 2", "seeds only"]
    assert "seeds only: these rows have no per-item files" in out
    assert "| A × B |" in out and (tmp_path / "effects.md").read_text() == out


def test_the_reference_level_and_the_direction_of_a_lower_is_better_metric(tmp_path, capsys):
    rows = grid(np.random.default_rng(1))
    (group,) = effects(rows, FEW, references={"A": "a1"})
    assert by_level(group, "A", "a0").estimate == pytest.approx(-by_level(effects(rows, FEW)[0], "A", "a1").estimate)
    for r in rows:  # the same values as an equal error rate: lower is better, so a1's higher values are worse
        r["metrics"]["verification_eer"] = r["metrics"][FEW]
    eer = by_level(effects(rows, "verification_eer")[0], "A", "a1")
    assert eer.estimate < 0 and eer.high < 0


def test_an_incomplete_grid_uses_only_the_pairs_that_exist(tmp_path, capsys):
    rng = np.random.default_rng(2)
    rows = grid(rng, corners=(("a0", "b0"), ("a0", "b1"), ("a1", "b0")))  # the (a1, b1) corner is missing
    rows += [row("a0", "b2", s, 0.5 + rng.normal(0, 0.01)) for s in range(3)] + [row("a1", "b2", 0, 0.6)]  # one seed: left out
    (group,) = effects(rows, FEW, interactions=[("A", "B")])
    a = by_level(group, "A", "a1")
    means = seed_means(rows)
    assert (a.pairs, a.one_seed) == (1, 1) and a.estimate == pytest.approx(means[("a1", "b0")] - means[("a0", "b0")])
    assert by_level(group, "B", "b1").pairs == 1  # only at a0
    assert (by_level(group, "B", "b2").pairs, by_level(group, "B", "b2").one_seed) == (1, 1)
    assert "A × B is partly determined by the terms before it in these cells (aliased) and left out of the model." in group.variance.notes
    assert [t.name for t in group.variance.terms] == ["A", "B", "seed", "residual"]
    assert "5 of 6 level combinations present, 1–3 seed rows per combination (incomplete and unbalanced)" in group.variance.design
    path = write(tmp_path / "corner.jsonl", rows)
    code, out, err = cli(capsys, path, "--metric", FEW, "--interaction", "A:B")
    assert code == 0, err
    assert table_rows(out)[("A", "a1 vs a0")][2] == "1" and "1 line left out: 1 seed" in table_rows(out)[("A", "a1 vs a0")][7]
    assert "do not add up to 1" in out


def test_options_only_the_baseline_resets_are_no_axis_and_the_baseline_pairs_on_what_it_shares():
    trained = {"train": {"batch_size": 32, "lr": 0.001, "select": "best"}, "eval": {"episodes": 400, "curve": [0.5, 1.0]},
               "backbone_args": {"embed_dim": 64}}
    untrained = {"train": {"batch_size": 32, "lr": 0.001, "select": "last"}, "eval": {"episodes": 400, "curve": []},
                 "backbone_args": {}}
    rows = [row("a0", "b0", s, v, loss=loss, config=trained) for loss, base in (("triplet", 0.60), ("contrastive", 0.65))
            for s, v in enumerate(base + np.array([0.0, 0.01, -0.01]))]
    rows += [row("a0", "b0", s, 0.40 + 0.01 * s, loss="none", config=untrained) for s in range(3)]
    (group,) = effects(rows, FEW)
    assert group.axes == {"loss": ["triplet", "contrastive", "none"]}  # not train.select, eval.curve, backbone_args.embed_dim
    none, contrastive = by_level(group, "loss", "none"), by_level(group, "loss", "contrastive")
    assert (none.pairs, contrastive.pairs) == (1, 1)
    assert none.estimate == pytest.approx(0.41 - 0.60) and contrastive.estimate == pytest.approx(0.05)
    assert "Untrained baselines are not in the model" in " ".join(group.variance.notes)


def test_each_comparison_group_has_its_own_section_and_no_pair_spans_two(tmp_path, capsys):
    rng = np.random.default_rng(7)
    rows = [row(a, "b0", s, 0.5 + 0.10 * (a == "a1") + rng.normal(0, 0.01)) for a in ("a0", "a1") for s in range(3)]
    rows += [row(a, "b0", s, 0.3 - 0.05 * (a == "a1") + rng.normal(0, 0.01), config={"dataset": "other"})
             for a in ("a0", "a1") for s in range(3)]
    groups = effects(rows, FEW)
    assert [g.label for g in groups] == ["dataset = toy", "dataset = other"]
    toy, other = (by_level(g, "A", "a1") for g in groups)
    assert (toy.pairs, other.pairs) == (1, 1)
    assert toy.estimate == pytest.approx(0.10, abs=0.03) and other.estimate == pytest.approx(-0.05, abs=0.03)
    code, out, err = cli(capsys, write(tmp_path / "two.jsonl", rows), "--metric", FEW)
    assert code == 0, err
    assert out.index("### dataset = toy") < out.index(f"{signed(toy.estimate)} [") < out.index("### dataset = other") \
        < out.index(f"{signed(other.estimate)} [")


# --- per-item files ---------------------------------------------------------------------------------------------

def test_with_per_item_files_the_interval_is_paired_and_narrower_than_seeds_only(tmp_path, capsys):
    rng = np.random.default_rng(3)
    episodes, queries = 400, 5
    difficulty = rng.uniform(0.2, 0.8, episodes)  # shared by every line and seed: a hard episode is hard for all
    results = tmp_path / "items.jsonl"
    rows = []
    for a, b in (("a0", "b0"), ("a0", "b1"), ("a1", "b0"), ("a1", "b1")):
        for s in range(2):
            p = np.clip(difficulty + planted(a, b) - 0.5 + rng.normal(0, 0.002), 0.01, 0.99)
            right = rng.binomial(queries, p).astype(np.uint8)
            r = row(a, b, s, float((right / queries).mean()))
            r["items"] = write_items(results, r["cell_id"], {FEW: right, f"{FEW}.queries": np.array(queries),
                                                             f"material.{FEW}": np.array(MATERIAL)})
            rows.append(r)
    write(results, rows)
    code, out, err = cli(capsys, results, "--metric", FEW, "--axes", "A")
    assert code == 0, err
    assert table_rows(out)[("A", "a1 vs a0")][7] == f"paired, {episodes} items" and "seeds only" not in out
    assert ("B", "b1 vs b0") not in table_rows(out)  # --axes A
    from bench.report.rows import items_loader

    paired = by_level(effects(rows, FEW, axes=["A"], load=items_loader([results]))[0], "A", "a1")
    seeds = by_level(effects(rows, FEW, axes=["A"])[0], "A", "a1")
    assert paired.method == "paired, 400 items" and seeds.method == "seeds only"
    assert paired.estimate == pytest.approx(seeds.estimate)
    assert paired.high - paired.low < 0.8 * (seeds.high - seeds.low)
    assert paired.low < np.mean([planted("a1", bl) - planted("a0", bl) for bl in ("b0", "b1")]) < paired.high


# --- the plot, and the committed results -------------------------------------------------------------------------

def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = write(tmp_path / "r.jsonl", grid(np.random.default_rng(4)))
    code, _, err = cli(capsys, path, "--metric", FEW, "--plot", tmp_path / "forest.png")
    assert code == 0, err
    assert (tmp_path / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_committed_seed_question_results(capsys):
    results = Path(__file__).resolve().parents[1] / "results" / "seed_question.jsonl"
    start = time.perf_counter()
    code, out, err = cli(capsys, results, "--metric", "few_shot_20way_1shot_accuracy")
    print(f"bench effects on {results.name}: {time.perf_counter() - start:.2f} s")  # reported with -s; never asserted
    assert code == 0, err
    found = table_rows(out)
    assert found[("model.freeze", "backbone_bn_train vs none")][2] == "3"
    assert found[("backbone_args.image_size", "28 vs 65")][7] == "never varied alone: also differs in backbone"
    assert "2 lines left out: 1 seed" in found[("loss", "none vs bce_l1")][7]  # the pretrained baselines ran one seed


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--axes", "dataset"], "--axes 'dataset' does not vary among these lines — axes that vary: A, B"),
    (["--axes", "optim.lr"], "--axes 'optim.lr' is not an option of these rows — axes that vary: A, B"),
    (["--reference", "A=a9"], "--reference A=a9: no line has A = 'a9' — its levels: a0, a1"),
    (["--reference", "A"], "give AXIS=LEVEL"),
    (["--interaction", "A:C"], "--interaction 'C' is not an option of these rows"),
    (["--metric", f"{FEW}_stderr"], "is not a score"),
    (["--metric", "verification_pairs"], "is not a score"),
    (["--metric", "recall_at_1"], f"use one of: {FEW}"),
    (["--out", "nofolder/effects.md"], "the folder nofolder does not exist"),
    (["--plot", "nofolder/forest.png"], "the folder nofolder does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r.jsonl", grid(np.random.default_rng(5)))
    extra = ([] if "--out" in args else ["--out", "effects.md"]) + ([] if "--metric" in args else ["--metric", FEW])
    code, out, err = cli(capsys, "r.jsonl", *args, *extra)
    assert code == 2 and len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def test_a_missing_results_file_and_missing_statsmodels(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "missing.jsonl", "--out", "effects.md")
    assert code == 2 and len(err.splitlines()) == 1 and "missing.jsonl: no such results file" in err
    write(tmp_path / "r.jsonl", grid(np.random.default_rng(6)))
    monkeypatch.setitem(__import__("sys").modules, "statsmodels.formula.api", None)  # import fails as if not installed
    code, out, err = cli(capsys, "r.jsonl", "--metric", FEW, "--out", "effects.md")
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'metric-bench[stats]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def test_the_table_corrects_its_p_values_by_holm_over_its_effects():
    from bench.report.effects import Effect, _effects_table

    found = [Effect("A", f"a{k}", "a0", 2, 0.1, 0.0, 0.2, p, "seeds only", 2) for k, p in enumerate((0.01, 0.02, 0.04), 1)]
    found.append(Effect("B", "b1", "b0", 0, why="never varied alone"))  # no pair: not counted
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in _effects_table(found)[2:]]
    assert [(r[4], r[5]) for r in rows] == [("p=0.01", "p=0.03"), ("p=0.02", "p=0.04"), ("p=0.04", "p=0.04"), ("—", "—")]

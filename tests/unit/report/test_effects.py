"""`bench effects`: the effect of each axis from matched pairs of lines, with its interval, the contexts it covers
and how much its pairs disagree (random over pairs when they do), and each axis's share of the variance, on synthetic
grids with planted effects (checked against a loop over pairs written here and against statsmodels' anova_lm called
directly), with and without per-item files, and the bad inputs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from paths import ROOT
from scipy import stats

from bench.cli import main
from bench.items import write_items
from bench.report.effects import Effect, effects, heterogeneity, random_over_pairs
from bench.report.paired import Comparison
from bench.report.variance import REPLICATES
from bench.report.verdicts import signed

FEW = "few_shot_5way_1shot_accuracy"
TRUTH_A = 0.10  # a1 − a0 at b0; at b1 the interaction adds 2 × 0.04
INTERACTION = 0.04  # + at (a1, b1), − at (a0, b1): B averages to 0 over A's levels
MATERIAL = "e" * 64


def planted(a: str, b: str) -> float:
    return 0.5 + TRUTH_A * (a == "a1") + (b == "b1") * (INTERACTION if a == "a1" else -INTERACTION)


def row(a: str, b: str, seed: int, value: float, *, loss: str = "triplet", config: dict | None = None, **metrics) -> dict:
    cfg = {
        "backbone": "net",
        "loss": loss,
        "dataset": "toy",
        "seed": seed,
        "A": a,
        "B": b,
        "loss_args": {},
        "train": {"batch_size": 32, "lr": 0.001},
        "split": {"seed": 0},
        "eval": {"episodes": 400},
        **(config or {}),
    }
    cell = f"{a}-{b}-{loss}-{seed}-{json.dumps(config, sort_keys=True)}"
    return {
        "schema": 2,
        "cell_id": cell,
        "status": "ok",
        "config": cfg,
        "metrics": {FEW: value, f"{FEW}_stderr": 0.01, "verification_pairs": 100, **metrics},
        "train": {"stopped_by": "steps", "steps": 100},
    }


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
        if len(cells) == 10 and " vs " in cells[1]:
            found[(cells[0], cells[1])] = cells
    return found


def seed_means(rows: list[dict]) -> dict[tuple[str, str], float]:
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by.setdefault((r["config"]["A"], r["config"]["B"]), []).append(r["metrics"][FEW])
    return {k: float(np.mean(v)) for k, v in by.items()}


def by_level(group, axis: str, level: str):
    return next(e for e in group.effects if e.axis == axis and e.level == level)


def seeds_of(rows: list[dict], a: str, b: str) -> np.ndarray:
    return np.array([r["metrics"][FEW] for r in rows if (r["config"]["A"], r["config"]["B"]) == (a, b)])


def welch(parts: list[tuple[float, np.ndarray]]) -> tuple[float, float]:
    """(se², df) of Σ c · mean(values) over (c, values) by hand: Σ c² s²/n and Satterthwaite's df."""
    pieces = [(c * c * np.var(v, ddof=1) / len(v), len(v) - 1) for c, v in parts]
    se2 = sum(x for x, _ in pieces)
    return se2, se2**2 / sum(x * x / d for x, d in pieces)


def pairs_by_hand(rows: list[dict], pairs: list[tuple[tuple[str, str], tuple[str, str]]]) -> dict:
    """The effect of (level line − reference line) pairs from the seeds alone, by a loop written here: the fixed
    interval, each pair's own difference and Welch variance, τ², I², and the random-over-pairs interval."""
    k = len(pairs)
    parts = [(1 / k, seeds_of(rows, *x)) for x, _ in pairs] + [(-1 / k, seeds_of(rows, *y)) for _, y in pairs]
    se2, df = welch(parts)
    estimate = sum(c * v.mean() for c, v in parts)
    diffs = [seeds_of(rows, *x).mean() - seeds_of(rows, *y).mean() for x, y in pairs]
    own = [welch([(1.0, seeds_of(rows, *x)), (-1.0, seeds_of(rows, *y))])[0] for x, y in pairs]
    tau2 = max(0.0, float(np.var(diffs, ddof=1)) - float(np.mean(own)))
    i2 = tau2 / (tau2 + float(np.mean(own)))
    half = stats.t.ppf(0.975, df) * math.sqrt(se2)
    out = {"estimate": estimate, "fixed": (estimate - half, estimate + half), "diffs": diffs, "tau2": tau2, "i2": i2}
    var = se2 + tau2 / k
    df_random = var**2 / (se2**2 / df + (tau2 / k) ** 2 / (k - 1))
    half = stats.t.ppf(0.975, df_random) * math.sqrt(var)
    out["random"] = (estimate - half, estimate + half)
    return out


# --- planted effects ------------------------------------------------------------------------------------------


def test_planted_effects_are_recovered_and_agree_with_a_loop_over_pairs_and_with_anova_lm(tmp_path, capsys):
    rows = grid(np.random.default_rng(0))
    (group,) = effects(rows, FEW, interactions=[("A", "B")])
    assert group.axes == {"A": ["a0", "a1"], "B": ["b0", "b1"]}
    a, b = by_level(group, "A", "a1"), by_level(group, "B", "b1")
    truth_a = np.mean([planted("a1", bl) - planted("a0", bl) for bl in ("b0", "b1")])  # 0.14: +0.10 at b0, +0.18 at b1
    assert a.pairs == 2 and a.low < truth_a < a.high and abs(a.estimate - truth_a) < 0.02
    assert b.pairs == 2 and b.low < 0 < b.high
    # the two pairs disagree far beyond their noise (the planted interaction): with 2 contexts the average over
    # contexts is barely known, and the interval says so (random over pairs, df about 1)
    assert (a.method, a.agree, a.contexts) == ("random over pairs · seeds only", 2, "B: b0, b1") and a.p > 0.05
    assert a.i2 > 0.9 and b.i2 > 0.9

    # the matched-pair mean, each pair's difference, τ², I² and both intervals, by a loop over the pairs
    for effect, pairs in ((a, [(("a1", bl), ("a0", bl)) for bl in ("b0", "b1")]), (b, [((al, "b1"), (al, "b0")) for al in ("a0", "a1")])):
        want = pairs_by_hand(rows, pairs)
        assert effect.estimate == pytest.approx(want["estimate"], abs=1e-12)
        assert (effect.smallest, effect.largest) == pytest.approx((min(want["diffs"]), max(want["diffs"])), abs=1e-12)
        assert (effect.tau2, effect.i2) == pytest.approx((want["tau2"], want["i2"]), rel=1e-9)
        assert (effect.low, effect.high) == pytest.approx(want["random"], abs=1e-12)
        assert effect.high - effect.low > 5 * (want["fixed"][1] - want["fixed"][0])

    # the shares, from statsmodels' anova_lm called here
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    data = pd.DataFrame([{"A": r["config"]["A"], "B": r["config"]["B"], "y": r["metrics"][FEW]} for r in rows])
    want = anova_lm(ols("y ~ C(A) + C(B) + C(A):C(B)", data).fit(), typ=2)  # no seed term: seeds are no shared factor
    total = float(((data.y - data.y.mean()) ** 2).sum())
    got = {t.name: t for t in group.variance.terms}
    assert list(got) == ["A", "B", "A × B", "residual", REPLICATES]
    for name, term in {"A": "C(A)", "B": "C(B)", "A × B": "C(A):C(B)", "residual": "Residual"}.items():
        assert got[name].sum_sq == pytest.approx(want.loc[term, "sum_sq"], rel=1e-9)
        assert got[name].share == pytest.approx(want.loc[term, "sum_sq"] / total, rel=1e-9)
    assert got["A × B"].p < 0.001 and got["A × B"].share > 0.05
    assert pytest.approx(want.loc["C(A):C(B)", "F"], rel=1e-9) == got["A × B"].F
    shares = [t.share for t in got.values() if t.name != REPLICATES]
    assert sum(shares) == pytest.approx(1.0)  # complete and balanced: the shares add up
    # the model is saturated: its residual is the replicates' own spread
    assert (got[REPLICATES].sum_sq, got[REPLICATES].df) == pytest.approx((got["residual"].sum_sq, 8.0), rel=1e-9)
    assert group.variance.design.endswith("(complete and balanced)")

    # the CLI prints the same figures and writes them to --out
    path = write(tmp_path / "planted.jsonl", rows)
    code, out, err = cli(capsys, path, "--metric", FEW, "--interaction", "A:B", "--out", tmp_path / "effects.md")
    assert code == 0, err
    cells = table_rows(out)[("A", "a1 vs a0")]
    assert cells[2:] == [
        "2",
        "B: b0, b1",
        f"{signed(a.estimate)} [{signed(a.low)}, {signed(a.high)}]",
        f"p={a.p:.2g}",
        cells[6],
        "2 of 2",
        f"{signed(a.smallest)} … {signed(a.largest)} · I² {100 * a.i2:.0f} %",
        "random over pairs · seeds only",
    ]
    assert "seeds only: these rows have no per-item files" in out
    assert "| A × B |" in out and (tmp_path / "effects.md").read_text() == out


def test_the_reference_level_and_the_direction_of_a_lower_is_better_metric(tmp_path, capsys):
    rows = grid(np.random.default_rng(1))
    (group,) = effects(rows, FEW, references={"A": "a1"})
    assert by_level(group, "A", "a0").estimate == pytest.approx(-by_level(effects(rows, FEW)[0], "A", "a1").estimate)
    for r in rows:  # the same values as an equal error rate: lower is better, so a1's higher values are worse
        r["metrics"]["verification_eer"] = r["metrics"][FEW]
    eer, few = by_level(effects(rows, "verification_eer")[0], "A", "a1"), by_level(effects(rows, FEW)[0], "A", "a1")
    assert eer.estimate < 0 and eer.largest < 0  # every pair is worse
    assert (eer.low, eer.high, eer.smallest) == pytest.approx((-few.high, -few.low, -few.largest))


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
    assert [t.name for t in group.variance.terms] == ["A", "B", "residual", REPLICATES]
    (default,) = effects(rows, FEW)  # tried by default, left out the same way, and said so
    assert [t.name for t in default.variance.terms] == ["A", "B", "residual", REPLICATES]
    assert "Two-way interactions fitted by default: none; left out, aliased in these cells: A × B." in " ".join(default.variance.notes)
    assert "5 of 6 level combinations present, 1–3 seed rows per combination (incomplete and unbalanced)" in group.variance.design
    path = write(tmp_path / "corner.jsonl", rows)
    code, out, err = cli(capsys, path, "--metric", FEW, "--interaction", "A:B")
    assert code == 0, err
    cells = table_rows(out)[("A", "a1 vs a0")]
    assert cells[2] == "1" and "1 line left out: 1 seed" in cells[9] and cells[8] == signed(a.estimate)  # one pair: no I²
    assert "do not add up to 1" in out


def test_options_only_the_baseline_resets_are_no_axis_and_the_baseline_pairs_on_what_it_shares():
    trained = {"train": {"batch_size": 32, "lr": 0.001, "select": "best"}, "eval": {"episodes": 400, "curve": [0.5, 1.0]}, "backbone_args": {"embed_dim": 64}}
    untrained = {"train": {"batch_size": 32, "lr": 0.001, "select": "last"}, "eval": {"episodes": 400, "curve": []}, "backbone_args": {}}
    rows = [
        row("a0", "b0", s, v, loss=loss, config=trained)
        for loss, base in (("triplet", 0.60), ("contrastive", 0.65))
        for s, v in enumerate(base + np.array([0.0, 0.01, -0.01]))
    ]
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
    rows += [row(a, "b0", s, 0.3 - 0.05 * (a == "a1") + rng.normal(0, 0.01), config={"dataset": "other"}) for a in ("a0", "a1") for s in range(3)]
    groups = effects(rows, FEW)
    assert [g.label for g in groups] == ["dataset = toy", "dataset = other"]
    toy, other = (by_level(g, "A", "a1") for g in groups)
    assert (toy.pairs, other.pairs) == (1, 1)
    assert toy.estimate == pytest.approx(0.10, abs=0.03) and other.estimate == pytest.approx(-0.05, abs=0.03)
    code, out, err = cli(capsys, write(tmp_path / "two.jsonl", rows), "--metric", FEW)
    assert code == 0, err
    assert out.index("### dataset = toy") < out.index(f"{signed(toy.estimate)} [") < out.index("### dataset = other") < out.index(f"{signed(other.estimate)} [")


# --- what an effect averages: baseline pairs, contexts, disagreement between pairs ---------------------------------


def test_untrained_baselines_pair_only_on_the_loss_axis():
    """conv4 vs Koch is an effect of a training choice: the two untrained baselines' difference is no part of it.
    Each baseline still pairs with its backbone's trained losses on the loss axis, and a group of baselines alone
    compares them with each other. A plugin's own arguments (image size) go with it, in the pairs and the contexts."""
    rows = []
    for backbone, size, base, untrained in (("koch", 65, 0.5, 0.3), ("conv4", 28, 0.7, 0.2)):
        config = {"backbone": backbone, "backbone_args": {"image_size": size}}
        for loss, gain in (("triplet", 0.0), ("contrastive", 0.05)):
            rows += [row("a0", "b0", s, base + gain + 0.01 * s, loss=loss, config=config) for s in range(3)]
        rows += [row("a0", "b0", s, untrained + 0.01 * s, loss="none", config=config) for s in range(3)]
    (group,) = effects(rows, FEW)
    assert group.axes == {"backbone": ["koch", "conv4"], "backbone_args.image_size": ["65", "28"], "loss": ["triplet", "contrastive", "none"]}
    conv4 = by_level(group, "backbone", "conv4")
    assert (conv4.pairs, conv4.contexts) == (2, "loss: triplet, contrastive")  # not the baselines' 0.2 − 0.3
    assert conv4.estimate == pytest.approx(0.2) and conv4.method == "seeds only"  # equal pairs: fixed
    none = by_level(group, "loss", "none")
    assert (none.pairs, none.contexts) == (2, "backbone: koch, conv4")  # one baseline per backbone, vs triplet
    assert none.estimate == pytest.approx(np.mean([0.3 - 0.5, 0.2 - 0.7]))
    assert (none.smallest, none.largest) == pytest.approx((-0.5, -0.2))
    (alone,) = effects([r for r in rows if r["config"]["loss"] == "none"], FEW)
    assert by_level(alone, "backbone", "conv4").pairs == 1
    assert by_level(alone, "backbone", "conv4").estimate == pytest.approx(-0.1)


def test_contexts_name_the_levels_of_the_other_axes_the_pairs_cover_in_grid_order():
    rng = np.random.default_rng(8)
    cells = [("a0", "b1", "c0"), ("a1", "b1", "c0"), ("a0", "b0", "c0"), ("a1", "b0", "c0"), ("a0", "b2", "c0"), ("a0", "b2", "c1")]
    rows = [row(a, b, s, 0.5 + rng.normal(0, 0.01), config={"C": c}) for a, b, c in cells for s in range(3)]
    (group,) = effects(rows, FEW)
    assert group.axes == {"A": ["a0", "a1"], "B": ["b1", "b0", "b2"], "C": ["c0", "c1"]}  # first appearance
    got = {(e.axis, e.level): e.contexts for e in group.effects}
    assert got == {("A", "a1"): "B: b1, b0; C: c0", ("B", "b0"): "A: a0, a1; C: c0", ("B", "b2"): "A: a0; C: c0", ("C", "c1"): "A: a0; B: b2"}


def contexts_rows(diffs: list[float], rng, noise: float, same_noise: bool = False) -> list[dict]:
    """Lines a0 and a1 in contexts b0, b1, …: a1 − a0 = diffs[k] in context k, 3 seeds each with noise; with
    `same_noise` every line draws the same seed offsets, so each pair's difference is exactly diffs[k]."""
    shared = rng.normal(0, noise, 3)
    rows = []
    for k, d in enumerate(diffs):
        for a in ("a0", "a1"):
            e = shared if same_noise else rng.normal(0, noise, 3)
            rows += [row(a, f"b{k}", s, 0.5 + 0.02 * k + d * (a == "a1") + e[s]) for s in range(3)]
    return rows


def test_pairs_that_disagree_get_the_interval_random_over_pairs():
    """Differences from −0.02 to +0.23 across six contexts, each measured to ±0.003: the fixed contrast knows the mean
    of these six to ±0.003, but not what A does in general — the random-over-pairs interval counts their spread."""
    diffs = list(np.linspace(-0.02, 0.23, 6))
    rows = contexts_rows(diffs, np.random.default_rng(9), noise=0.003)
    a = by_level(effects(rows, FEW)[0], "A", "a1")
    want = pairs_by_hand(rows, [(("a1", f"b{k}"), ("a0", f"b{k}")) for k in range(6)])
    assert a.method == "random over pairs · seeds only" and a.agree == 5 and a.contexts.startswith("B: b0, b1, b2")
    assert (a.smallest, a.largest) == pytest.approx((-0.02, 0.23), abs=0.01)
    assert a.tau2 == pytest.approx(want["tau2"], rel=1e-9) and a.i2 == pytest.approx(want["i2"], rel=1e-9) and a.i2 > 0.99
    assert (a.low, a.high) == pytest.approx(want["random"], abs=1e-12)
    fixed = want["fixed"][1] - want["fixed"][0]
    assert a.high - a.low > 20 * fixed and a.low < np.mean(diffs) < a.high and a.p > 1e-3


def test_pairs_that_agree_keep_the_fixed_interval():
    rows = contexts_rows([0.1] * 6, np.random.default_rng(10), noise=0.01, same_noise=True)
    a = by_level(effects(rows, FEW)[0], "A", "a1")
    want = pairs_by_hand(rows, [(("a1", f"b{k}"), ("a0", f"b{k}")) for k in range(6)])
    assert a.method == "seeds only" and (a.tau2, a.i2) == (0.0, 0.0) and a.agree == 6
    assert (a.low, a.high) == pytest.approx(want["fixed"], abs=1e-12)


def test_heterogeneity_and_random_over_pairs_by_hand():
    # d = 0.1, 0.3, 0.2: s² = 0.01; mean own variance 0.002: τ² = 0.008, I² = 0.008 / 0.010
    assert heterogeneity([0.1, 0.3, 0.2], [0.001, 0.002, 0.003]) == pytest.approx((0.008, 0.8))
    assert heterogeneity([0.1, 0.1], [0.001, 0.003]) == (0.0, 0.0)  # no spread beyond the noise
    assert heterogeneity([0.1, 0.1], [0.0, 0.0]) == (0.0, 0.0)
    assert all(math.isnan(x) for x in heterogeneity([0.1], [0.001]) + heterogeneity([0.1, 0.2], [math.nan, 0.001]))
    # estimate 0.2, se 0.02 on 4 df, τ² 0.008 over k = 3 pairs: V = 0.0004 + 0.008/3 = 0.0030667,
    # df = V² / (0.0004²/4 + (0.008/3)²/2) = 2.61557, t_0.975(2.61557) = 3.46414, half-width 3.46414 · √V = 0.191835
    contrast = lambda df: Comparison(0.2, 0.0, 0.0, 0.02, df, 0.0, "seeds only")
    r = random_over_pairs(contrast(4.0), 0.008, 3)
    se, df, low, high, p = r.se, r.df, r.low, r.high, r.p
    assert (se, df) == pytest.approx((math.sqrt(0.0030666667), 2.6155748), rel=1e-7)
    assert (low, high) == pytest.approx((0.2 - 0.1918354, 0.2 + 0.1918354), abs=1e-7)
    assert p == pytest.approx(2 * stats.t.sf(0.2 / se, df), rel=1e-12) and p == pytest.approx(0.0455112, abs=1e-6)
    # a contrast known exactly in its own part (df ∞): only τ²/k counts, df = 2 · (V / (τ²/k))² = 2.645
    assert random_over_pairs(contrast(math.inf), 0.008, 3).df == pytest.approx(2.645)


# --- the variance table: replicates, interactions by default ---------------------------------------------------------


def abc_rows(rng, seeds: int = 2) -> list[dict]:
    """A complete 2 × 2 × 2 grid of A, B, D with an A × B interaction planted."""
    return [
        row(a, b, s, planted(a, b) + 0.03 * (d == "d1") + rng.normal(0, 0.01), config={"D": d})
        for a in ("a0", "a1")
        for b in ("b0", "b1")
        for d in ("d0", "d1")
        for s in range(seeds)
    ]


def test_the_replicates_share_and_every_two_way_interaction_by_default_match_a_loop_and_anova_lm():
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    rows = abc_rows(np.random.default_rng(11))
    data = pd.DataFrame([{"A": r["config"]["A"], "B": r["config"]["B"], "D": r["config"]["D"], "y": r["metrics"][FEW]} for r in rows])
    total = float(((data.y - data.y.mean()) ** 2).sum())
    by_configuration: dict[tuple, list[float]] = {}
    for r in rows:
        by_configuration.setdefault((r["config"]["A"], r["config"]["B"], r["config"]["D"]), []).append(r["metrics"][FEW])
    within = sum((y - np.mean(ys)) ** 2 for ys in by_configuration.values() for y in ys)

    for interactions, formula, names in (
        (None, "C(A) + C(B) + C(D) + C(A):C(B) + C(A):C(D) + C(B):C(D)", ["A × B", "A × D", "B × D"]),
        ([("A", "B")], "C(A) + C(B) + C(D) + C(A):C(B)", ["A × B"]),
    ):
        (group,) = effects(rows, FEW, interactions=interactions)
        got = {t.name: t for t in group.variance.terms}
        assert list(got) == ["A", "B", "D", *names, "residual", REPLICATES]
        want = anova_lm(ols(f"y ~ {formula}", data).fit(), typ=2)
        for name in ["A", "B", "D", *names]:
            term = ":".join(f"C({x})" for x in name.split(" × "))
            assert pytest.approx(want.loc[term, "F"], rel=1e-9) == got[name].F
            assert got[name].sum_sq == pytest.approx(want.loc[term, "sum_sq"], rel=1e-9)
        replicates = got[REPLICATES]
        assert (replicates.sum_sq, replicates.share, replicates.df) == pytest.approx((within, within / total, 16 - 8), rel=1e-9)
        assert math.isnan(replicates.F) and math.isnan(replicates.p)
    assert "Two-way interactions fitted by default: A × B, A × D, B × D." in " ".join(effects(rows, FEW)[0].variance.notes)
    assert not any("by default" in n for n in group.variance.notes)  # named: exactly those, no default note


def test_an_interaction_that_would_leave_under_2_residual_df_is_left_out_by_default():
    rng = np.random.default_rng(12)
    rows = [row(a, b, 0, 0.5 + rng.normal(0, 0.01)) for a in ("a0", "a1") for b in ("b0", "b1", "b2")]  # one seed each
    (group,) = effects(rows, FEW)
    assert [t.name for t in group.variance.terms] == ["A", "B", "residual"]  # no replicates to show
    assert "left out, too few seed rows (< 2 residual df): A × B." in " ".join(group.variance.notes)


# --- per-item files ---------------------------------------------------------------------------------------------


def test_with_per_item_files_the_interval_is_paired_and_counts_the_test_items(tmp_path, capsys):
    """Pairing counts what the seeds cannot see: another draw of test items. Here a1 has its own item profile (better
    on some episodes, worse on others), so the A contrast depends on which episodes were drawn; the seeds, all scored
    on the same 400 episodes, do not vary with that, and only the paired interval counts it."""
    rng = np.random.default_rng(3)
    episodes, queries = 400, 5
    difficulty = rng.uniform(0.2, 0.8, episodes)  # shared by every line and seed: a hard episode is hard for all
    profile = rng.normal(0, 0.15, episodes)  # a1's own strengths and weaknesses, the same for each of its seeds
    results = tmp_path / "items.jsonl"
    rows = []
    for a, b in (("a0", "b0"), ("a1", "b0"), ("a0", "b1")):  # one pair for A (at b0), one for B (at a0)
        for s in range(3):
            p = np.clip(difficulty + 0.10 * (a == "a1") + 0.02 * (b == "b1") + profile * (a == "a1"), 0.01, 0.99)
            right = rng.binomial(queries, p).astype(np.uint8)
            r = row(a, b, s, float((right / queries).mean()))
            r["items"] = write_items(results, r["cell_id"], {FEW: right, f"{FEW}.queries": np.array(queries), f"material.{FEW}": np.array(MATERIAL)})
            rows.append(r)
    write(results, rows)
    code, out, err = cli(capsys, results, "--metric", FEW, "--axes", "A")
    assert code == 0, err
    assert table_rows(out)[("A", "a1 vs a0")][9] == f"paired, {episodes} items" and "seeds only" not in out
    assert ("B", "b1 vs b0") not in table_rows(out)  # --axes A
    from bench.report.rows import items_loader

    paired = by_level(effects(rows, FEW, axes=["A"], load=items_loader([results]))[0], "A", "a1")
    seeds = by_level(effects(rows, FEW, axes=["A"])[0], "A", "a1")
    assert paired.method == "paired, 400 items" and seeds.method == "seeds only (Welch)"
    assert paired.estimate == pytest.approx(seeds.estimate) and paired.smallest == pytest.approx(seeds.smallest)
    assert paired.high - paired.low > 1.15 * (seeds.high - seeds.low)  # measured 1.21×: the items add a1's profile
    on_these = float(np.mean(np.clip(difficulty + 0.10 + profile, 0.01, 0.99) - np.clip(difficulty, 0.01, 0.99)))
    assert paired.low < 0.10 < paired.high and paired.low < on_these < paired.high  # over item draws, and on these


# --- the plot, and the committed results -------------------------------------------------------------------------


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = write(tmp_path / "r.jsonl", grid(np.random.default_rng(4)))
    code, _, err = cli(capsys, path, "--metric", FEW, "--plot", tmp_path / "forest.png")
    assert code == 0, err
    assert (tmp_path / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_committed_seed_question_results(capsys):
    results = ROOT / "results" / "seed_question.jsonl"
    start = time.perf_counter()
    code, out, err = cli(capsys, results, "--metric", "few_shot_20way_1shot_accuracy")
    print(f"bench effects on {results.name}: {time.perf_counter() - start:.2f} s")  # reported with -s; never asserted
    assert code == 0, err
    found = table_rows(out)
    assert found[("model.freeze", "backbone_bn_train vs none")][2] == "3"
    assert found[("model.freeze", "backbone_bn_train vs none")][3].startswith("backbone: efficientnet_lite0_imagenet;")
    assert found[("backbone_args.image_size", "28 vs 65")][9] == "never varied alone: also differs in backbone"
    assert "2 lines left out: 1 seed" in found[("loss", "none vs bce_l1")][9]  # the pretrained baselines ran one seed
    # the untrained conv4-vs-Koch pair is out of the backbone effect: the 6 trained pairs alone
    assert found[("backbone", "conv4 vs koch")][2] == "6"
    # triplet vs BCE: pairs from about −0.02 to +0.23 across backbones, far beyond their noise: random over pairs
    triplet = found[("loss", "triplet vs bce_l1")]
    assert triplet[9].startswith("random over pairs · paired") and " … " in triplet[8] and "I² " in triplet[8]
    assert "| seed |" not in out and f"| {REPLICATES} |" in out and "| backbone × loss |" in out


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
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
    ],
)
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


def test_the_table_corrects_its_p_values_by_holm_over_its_effects_and_shows_an_untested_one_as_such():
    from bench.report.effects import _effects_table

    found = [Effect("A", f"a{k}", "a0", 2, 0.1, 0.0, 0.2, p, "seeds only", 2, smallest=0.05, largest=0.15, i2=0.5) for k, p in enumerate((0.01, 0.02, 0.04), 1)]
    found.append(Effect("B", "b1", "b0", 0, why="never varied alone"))  # no pair: not counted
    found.append(Effect("B", "b2", "b0", 1, 0.1, method="seeds only (untested: no variance)", agree=1, smallest=0.1))
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in _effects_table(found)[2:]]
    assert [(r[5], r[6]) for r in rows] == [("p=0.01", "p=0.03"), ("p=0.02", "p=0.04"), ("p=0.04", "p=0.04"), ("—", "—"), ("—", "—")]
    assert rows[0][8] == "+0.050 … +0.150 · I² 50 %"
    assert rows[4][3:] == ["", "+0.100 (untested)", "—", "—", "1 of 1", "+0.100", "seeds only (untested: no variance)"]
    assert not found[4].tested and found[0].tested


# --- backbone × loss, when the grid crosses them ----------------------------------------------------------------


def crossed_rows(rng, cells, seeds: int = 3) -> list[dict]:
    """Rows of (backbone, loss, D) lines with a backbone × loss interaction planted (n1's losses swap their order)."""
    value = {("n0", "triplet"): 0.6, ("n0", "contrastive"): 0.5, ("n1", "triplet"): 0.4, ("n1", "contrastive"): 0.55, ("n0", "arcface"): 0.3}
    return [
        row("a0", "b0", s, value[bb, loss] + 0.05 * (d == "d1") + rng.normal(0, 0.01), loss=loss, config={"backbone": bb, "D": d})
        for bb, loss, d in cells
        for s in range(seeds)
    ]


def test_the_backbone_by_loss_cells_when_the_grid_crosses_them_and_nothing_otherwise():
    """A level run with only some of the other axis's levels (arcface) is left out; the cells hold the other option at
    the one setting every cell has (D = d0; d1 misses a cell); each cell's mean and interval are the seeds' mean and
    t interval computed here; the markdown gives the table and the interaction term's share from the model above."""
    from bench.report.effects import markdown

    rng = np.random.default_rng(21)
    cells = [(bb, loss, "d0") for bb in ("n0", "n1") for loss in ("triplet", "contrastive")]
    rows = crossed_rows(rng, cells + [("n0", "triplet", "d1"), ("n0", "contrastive", "d1"), ("n1", "triplet", "d1")])
    (group,) = effects(rows, FEW)
    c = group.interaction
    assert c.axes == ("backbone", "loss") and c.levels == [["n0", "n1"], ["triplet", "contrastive"]]
    assert c.left_out == [] and c.held == "D=d0"
    for bb, loss, _ in cells:
        seeds = np.array([r["metrics"][FEW] for r in rows if (r["config"]["backbone"], r["config"]["loss"], r["config"]["D"]) == (bb, loss, "d0")])
        half = stats.t.ppf(0.975, len(seeds) - 1) * seeds.std(ddof=1) / math.sqrt(len(seeds))
        cell = c.cell(bb, loss)
        assert (cell.mean, cell.low, cell.high) == pytest.approx((seeds.mean(), seeds.mean() - half, seeds.mean() + half), rel=1e-9)
    text = markdown([group], FEW)
    term = next(t for t in group.variance.terms if t.name == "backbone × loss")
    assert f"**backbone × loss**: the mean {FEW} of each cell, the other options held at D=d0" in text
    assert f"backbone × loss takes {term.share:.1%} of the variance (p<0.001)" in text and term.p < 0.001  # planted
    assert f"| n1 | {c.cell('n1', 'triplet').mean:.3f} [" in text

    # arcface ran with n0 alone: out of the cells (and, aliased, out of the model's terms)
    (group,) = effects(rows + crossed_rows(rng, [("n0", "arcface", "d0")]), FEW)
    assert group.interaction.left_out == ["arcface"] and group.interaction.levels == c.levels
    text = markdown([group], FEW)
    assert "as not run with every level of the other axis: arcface." in text
    assert "backbone × loss is not in the model above (its notes say why)" in text

    # no setting of D in every cell: each cell averages its own lines (configurations), weighted alike
    rows = crossed_rows(rng, cells[:3] + [("n1", "contrastive", "d1"), ("n0", "triplet", "d1")])
    c = effects(rows, FEW)[0].interaction
    assert c.held == "" and c.cell("n0", "triplet").configurations == 2
    assert c.cell("n0", "triplet").mean == pytest.approx(
        np.mean(
            [
                np.mean([r["metrics"][FEW] for r in rows if (r["config"]["backbone"], r["config"]["loss"], r["config"]["D"]) == ("n0", "triplet", d)])
                for d in ("d0", "d1")
            ]
        )
    )
    assert "each cell averaging the settings of the other options" in markdown(effects(rows, FEW), FEW)

    # not crossed (n1 ran one loss), or one backbone: no cells, and the markdown says nothing of them
    for cut in (cells[:3], [x for x in cells if x[0] == "n0"]):
        (group,) = effects(crossed_rows(rng, cut), FEW)
        assert group.interaction is None and "**backbone × loss**" not in markdown([group], FEW)

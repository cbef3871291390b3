"""Paired comparisons over shared test items (bench.report.paired): against scipy's t-tests, statsmodels' Holm,
and synthetic designs whose truth is known (what pairing buys when items are shared, nothing when they are not,
and intervals that cover the truth about 95 % of the time)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.items import ItemScores, item_metric
from bench.report.paired import ItemBootstrap, compare_seeds, contrast, holm, minimum_detectable, seeds_to_resolve

MATERIAL = "m" * 64


def line(values_per_seed: list[np.ndarray], material: str = MATERIAL) -> tuple[list[ItemScores], np.ndarray]:
    seeds = [ItemScores("mean", material, np.asarray(v, float)) for v in values_per_seed]
    return seeds, np.array([item_metric(s) for s in seeds])


def episodes(rng, n: int, difficulty: np.ndarray, skill: float, seed_shift: float) -> np.ndarray:
    """Per-episode accuracy of one seed: 20 queries, each right with probability difficulty + skill + seed shift."""
    p = np.clip(difficulty + skill + seed_shift, 0.01, 0.99)
    return rng.binomial(20, p) / 20


def two_lines(rng, shared: bool, n: int = 2000, seeds: int = 3, gap: float = 0.01, seed_sd: float = 0.002):
    """Lines A (skill + gap) and B, `seeds` seeds each, on `n` episodes whose difficulty both share (or, with
    shared=False, drawn independently for each line: no correlation between their per-item outcomes)."""
    difficulty = rng.uniform(0.1, 0.9, n)
    other = difficulty if shared else rng.uniform(0.1, 0.9, n)
    a = [episodes(rng, n, difficulty, gap, rng.normal(0, seed_sd)) for _ in range(seeds)]
    b = [episodes(rng, n, other, 0.0, rng.normal(0, seed_sd)) for _ in range(seeds)]
    return line(a), line(b)


def compare(a, b, paired: bool, boot: ItemBootstrap | None = None):
    return contrast([("a", *a, False), ("b", *b, False)], [1.0, -1.0], boot or ItemBootstrap(resamples=1000), paired=paired)


def test_pairing_narrows_the_interval_when_items_are_shared_and_changes_nothing_when_not():
    rng = np.random.default_rng(0)
    a, b = two_lines(rng, shared=True)
    paired, unpaired = compare(a, b, True), compare(a, b, False)
    assert paired.high - paired.low < 0.5 * (unpaired.high - unpaired.low)  # measured: about 0.2×
    assert paired.low > 0 and unpaired.low < 0  # 2,000 shared episodes separate a 0.01 gap; unpaired they cannot
    # the unpaired item variance is what a bootstrap of each line alone gives, summed
    boot = ItemBootstrap(resamples=1000)
    alone = sum(np.var(boot.line(k, s, independent=True), ddof=1) - boot.interaction(k, s) for k, s in (("a", a[0]), ("b", b[0])))
    assert compare(a, b, False, boot).item_var == pytest.approx(alone)  # less the seed × item part the seeds hold
    a, b = two_lines(rng, shared=False)
    paired, unpaired = compare(a, b, True), compare(a, b, False)
    assert paired.high - paired.low == pytest.approx(unpaired.high - unpaired.low, rel=0.15)


def test_paired_intervals_cover_the_truth_about_95_percent_of_the_time():
    """Each replicate draws a new test set from a population of episodes and new seeds; the truth is the difference
    of the two lines' population means (exactly `gap` before clipping; computed on a large draw)."""
    rng = np.random.default_rng(1)
    truth_difficulty = rng.uniform(0.1, 0.9, 200_000)
    truth = float(np.mean(np.clip(truth_difficulty + 0.02, 0.01, 0.99)) - np.mean(np.clip(truth_difficulty, 0.01, 0.99)))
    covered = 0
    runs = 120
    for _ in range(runs):
        difficulty = rng.uniform(0.1, 0.9, 400)
        a = line([episodes(rng, 400, difficulty, 0.02, rng.normal(0, 0.01)) for _ in range(3)])
        b = line([episodes(rng, 400, difficulty, 0.0, rng.normal(0, 0.01)) for _ in range(3)])
        c = compare(a, b, True, ItemBootstrap(resamples=400, seed=int(rng.integers(1 << 30))))
        covered += c.low <= truth <= c.high
    assert 0.88 <= covered / runs <= 0.995, covered / runs  # measured 0.94-0.98 over 300 runs at several seed spreads


def test_seeds_alone_is_welch_and_one_sample_as_scipy():
    a, b = np.array([0.81, 0.84, 0.79]), np.array([0.75, 0.78])
    c = compare_seeds(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert c.method == "Welch" and c.p == pytest.approx(ref.pvalue, rel=1e-9)
    low, high = ref.confidence_interval(0.95)
    assert (c.low, c.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    fixed = compare_seeds(np.array([0.7, 0.7, 0.7]), a, fixed_a=True)
    ref = stats.ttest_1samp(a, 0.7)
    assert fixed.method == "1-sample" and fixed.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert fixed.estimate == pytest.approx(0.7 - a.mean())
    # nothing varies: untested, never p = 0 (two lines of identical seeds 1e-4 apart are not "below" each other)
    for other in (0.5, 0.5001, 0.6):
        both = compare_seeds(np.array([0.5, 0.5]), np.array([other, other]), True, True)
        assert both.method.startswith("untested") and math.isnan(both.p) and not both.tested


def test_one_seed_is_untested_never_paired_with_infinite_df():
    rng = np.random.default_rng(5)
    a, b = two_lines(rng, shared=True, n=200, seeds=1)
    c = compare(a, b, True)
    assert c.method == "untested: 1 seed" and math.isnan(c.p) and math.isnan(c.low)
    assert math.isnan(compare_seeds(np.array([0.7]), np.array([0.6, 0.65])).p)


def test_the_df_bounds_each_seed_part_and_is_welch_without_items():
    from bench.report.paired import UPPER, interval, welch_df

    parts = [(0.0004, 2), (0.0001, 2)]
    assert welch_df(0.0, parts) == pytest.approx(0.0005**2 / (0.0004**2 / 2 + 0.0001**2 / 2))  # Welch–Satterthwaite
    bound = [(v * k / stats.chi2.ppf(UPPER, k), k) for v, k in parts]
    total = 0.0003 + sum(v for v, _ in bound)
    assert welch_df(0.0003, parts) == pytest.approx(total**2 / sum(v * v / k for v, k in bound))
    plain = (0.0003 + 0.0005) ** 2 / (0.0004**2 / 2 + 0.0001**2 / 2)
    assert 2 <= welch_df(0.0003, parts) < plain  # a known item part raises df, but less than when the s² are trusted
    c = interval(0.01, 0.0003, parts, "paired", 200, (0.0, 0.0))
    assert c.se == pytest.approx(math.sqrt(0.0008)) and c.df == pytest.approx(welch_df(0.0003, parts))  # se not inflated


def test_a_line_of_identical_seeds_has_no_seed_part_and_items_still_count():
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0.2, 0.8, 1000)
    one = episodes(rng, 1000, difficulty, 0.0, 0.0)
    fixed = line([one, one, one])
    trained = line([episodes(rng, 1000, difficulty, 0.03, rng.normal(0, 0.005)) for _ in range(3)])
    boot = ItemBootstrap(resamples=500)
    c = contrast([("t", *trained, False), ("f", *fixed, True)], [1.0, -1.0], boot)
    assert c.method == "paired" and c.items == 1000
    # the trained line's raw seed variance; the seed × item noise it holds is taken out of the item part instead
    assert c.seed_var == pytest.approx(np.var(trained[1], ddof=1) / 3) and c.seed_spread[1] == 0.0
    series = boot.line("t", trained[0]) - boot.line("f", fixed[0])
    assert c.item_var == pytest.approx(np.var(series, ddof=1) - boot.interaction("t", trained[0]))
    assert boot.interaction("f", fixed[0]) == 0.0
    assert c.item_var > 0 and c.low > 0


def test_the_auc_kind_is_paired_over_the_same_pairs():
    rng = np.random.default_rng(3)
    same = rng.random(3000) < 0.3
    base = rng.normal(0, 1, 3000) - 1.5 * same  # shared pair difficulty: same-class pairs are closer

    def seeds(shift):
        out = []
        for _ in range(3):
            d = base * (1 - shift) + rng.normal(0, 0.3, 3000)
            out.append(ItemScores("auc", MATERIAL, stats.rankdata(d, method="dense") - 1.0, same))
        return out, np.array([item_metric(s) for s in out])

    a, b = seeds(0.0), seeds(0.05)
    paired, unpaired = compare(a, b, True), compare(a, b, False)
    assert paired.item_var < 0.5 * unpaired.item_var


def test_power_and_seeds_to_resolve_follow_their_formulas():
    c = compare_seeds(np.array([0.80, 0.82, 0.81]), np.array([0.79, 0.80, 0.78]))
    t = stats.t
    assert c.detectable == pytest.approx((t.ppf(0.975, c.df) + t.ppf(0.8, c.df)) * c.se)
    wider = c.at(4.0, 0.5)  # a family's critical value: the power rule uses it
    assert wider.detectable == pytest.approx((4.0 + t.ppf(0.8, c.df)) * c.se) and wider.low == pytest.approx(c.estimate - 4 * c.se)
    target = 0.005
    spread = sum(c.seed_spread)
    z = lambda n, level=0.05: stats.t.ppf(1 - level / 2, 2 * n - 2) + stats.t.ppf(0.8, 2 * n - 2)
    n = seeds_to_resolve(target, c)
    assert z(n) * math.sqrt(spread / n) <= target < z(n - 1) * math.sqrt(spread / (n - 1))
    strict = seeds_to_resolve(target, c, level=0.01)  # a family's per-comparison level
    assert strict > n and z(strict, 0.01) * math.sqrt(spread / strict) <= target
    assert seeds_to_resolve(0.0, c) is None
    items_bound = compare(*two_lines(np.random.default_rng(4), shared=False, n=200, gap=0.0), True)
    assert seeds_to_resolve(1e-4, items_bound) is None  # a target inside the items' noise: no number of seeds resolves it
    assert math.isnan(minimum_detectable(math.nan, 3))  # no se, no power figure


def test_the_bootstrap_cache_keeps_two_metrics_of_one_line_apart():
    rng = np.random.default_rng(6)
    hits1 = [rng.random(300) < 0.5 for _ in range(2)]
    hits2 = [h | (rng.random(300) < 0.3) for h in hits1]  # recall@2 ≥ recall@1, the same material
    boot = ItemBootstrap(resamples=200)
    one = boot.line("line", line([h.astype(float) for h in hits1])[0])
    two = boot.line("line", line([h.astype(float) for h in hits2])[0])
    assert two.mean() > one.mean() + 0.1  # a cache keyed by the line alone would return recall@1's series again


@pytest.mark.parametrize("seed", range(5))
def test_holm_is_statsmodels_holm(seed):
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    ps = list(np.random.default_rng(seed).uniform(0, 0.2, 7)) + [math.nan]
    ours = holm(ps)
    theirs = multitest.multipletests(ps[:-1], method="holm")[1]
    assert np.allclose(ours[:-1], theirs) and math.isnan(ours[-1])

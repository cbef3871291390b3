"""Comparisons of configurations with an interval: paired over the test items they share, or over seeds alone.

Two sources of noise separate two configurations' scores: the training seed (another init, another batch order)
and the test material (another draw of test images or episodes would score differently). Cells of one comparison
group score *the same* test items, so the test-material part is shared: a hard episode is hard for every line.
A contrast of lines (a difference of two, or an effect averaged over matched pairs) is

    estimate = Σ_l c_l · mean over line l's seeds of its metric

and its variance has two parts, added (the usual crossed two-way components of variance):
- seeds: Σ_l c_l² s_l² / n_l from the per-seed metrics (s_l the sample std; 0 for a line whose seeds are
  bit-identical copies of one run), each with n_l − 1 degrees of freedom. This raw seed variance already holds the
  seed × item noise (a seed getting an item right by its own luck), σ²_resid / (n_l · N items) in the mean;
- items: a bootstrap of the shared test items, the *same* resample for every line and seed (that is the pairing),
  of the contrast recomputed from the per-item outcomes (bench.items), *less* the seed × item part the seeds
  already count: Σ_l c_l² (mean over seeds of each seed's own bootstrap variance − the bootstrap variance of
  their mean) / (n_l − 1). What is left is the items' own part, shared by every line and treated as known.
The interval is estimate ± t(df) · se with Welch–Satterthwaite's df, the item part counted as known and each seed
part taken at its upper 75 % bound for the df alone (`welch_df`: guarded against trusting a seed variance that came
out small by chance). A contrast that rests on a
line with one seed, or whose variance is zero (lines of identical seeds with no items), is *untested* (p NaN):
one draw of unknown spread, or no noise model at all, never gives a confident answer. Without per-item files
(older rows, or metrics with no per-item form) the item part is unknown and the comparison falls back to seeds
alone: Welch's t-test (one-sample against a line of identical seeds), labelled. Pairing on items only happens when
every seed of both lines stores the same items (`ItemScores.material`).

verification_roc_auc: the row's AUC is over every scored pair (up to 500,000), its items keep ITEM_PAIRS (5,000)
of them; the estimate compared is the row's, its item variance the bootstrap of the kept pairs (a smaller sample
than the row's, so if anything larger than the row AUC's own item variance).

Written here rather than taken from a library: scipy's `bootstrap` resamples one sample (or paired samples of
equal length) but not a resample shared by many lines with the seed variance beside it; the pieces it needs
(t quantiles, multinomial draws) are scipy's and numpy's. The verdicts over a whole group (the best picked from
the same data) are `bench.report.simultaneous`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bench.items import ItemScores, item_metric

RESAMPLES = 2000  # bootstrap resamples of the items: the se of a bootstrap variance is about √(2/B) ≈ 3 % of it
LEVEL = 0.95
POWER = 0.80
CHUNK = 250  # resamples per vectorised call: 250 × 5,000 pairs × 8 bytes = 10 MB
UNTESTED = "untested"


@dataclass(frozen=True)
class Comparison:
    """`a − b` in the metric's own units (not signed by its direction), with its interval and what it rests on.
    Untested (one seed, or no variance): p, se, df and the interval are NaN and `method` says why."""

    estimate: float
    low: float
    high: float
    se: float
    df: float
    p: float
    method: str  # "paired" (items + seeds), "Welch", "1-sample", "seeds", "untested: …"
    items: int = 0  # shared test items the pairing used (0: seeds alone)
    seed_var: float = 0.0  # the seed part of se², and the item part: what more seeds could and could not shrink
    item_var: float = 0.0
    seed_spread: tuple[float, float] = (0.0, 0.0)  # raw s² of a's and of b's per-seed metrics (0 for identical seeds)
    critical: float = math.nan  # the t value the interval uses (t_{0.975}(df) unless a family's adjusted one)

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p)

    @property
    def detectable(self) -> float:
        """The smallest |a − b| this design detects with POWER at the interval's own critical value."""
        return minimum_detectable(self.se, self.df, critical=self.critical)

    def at(self, critical: float, p: float) -> Comparison:
        """The same comparison with an interval at another critical t value (a family's) and that p."""
        half = critical * self.se
        return Comparison(
            self.estimate,
            self.estimate - half,
            self.estimate + half,
            self.se,
            self.df,
            p,
            self.method,
            self.items,
            self.seed_var,
            self.item_var,
            self.seed_spread,
            critical,
        )


def untested(estimate: float, why: str, items: int = 0) -> Comparison:
    return Comparison(estimate, math.nan, math.nan, math.nan, math.nan, math.nan, f"{UNTESTED}: {why}", items)


def minimum_detectable(se: float, df: float, alpha: float = 1 - LEVEL, power: float = POWER, critical: float = math.nan) -> float:
    """(c + t_{power}) · se: the usual normal-approximation power rule with t at the design's df, c the interval's
    critical value (t_{1−α/2}(df) unless given: a family's adjusted one)."""
    if not math.isfinite(se):
        return math.nan
    df = df if math.isfinite(df) and df > 0 else math.inf
    c = critical if math.isfinite(critical) else stats.t.ppf(1 - alpha / 2, df)
    return float((c + stats.t.ppf(power, df)) * se)


def seeds_to_resolve(target: float, c: Comparison, level: float = 1 - LEVEL, power: float = POWER, most: int = 1000) -> int | None:
    """About how many seeds per line would detect a true difference of `target` with POWER at a two-sided `level`
    (a family's adjusted per-comparison level, so the answer holds after the correction), keeping the measured raw
    seed spreads (which hold the seed × item noise: more seeds shrink it) and the items' own part (which more seeds
    of the same test set do not shrink): the smallest n with (t_{1−level/2} + t_{power}) at 2n − 2 degrees of
    freedom × √(item part + Σ s² / n) ≤ |target|. None when no number of seeds would (the target is inside the item
    noise, or is 0), when the comparison is untested, or when it takes more than `most`."""
    spread = sum(c.seed_spread)
    z = stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power)
    if not c.tested or target == 0 or spread == 0 or c.item_var >= (abs(target) / z) ** 2:
        return None
    n = np.arange(2, most + 1)
    df = 2 * n - 2
    enough = (stats.t.isf(level / 2, df) + stats.t.ppf(power, df)) * np.sqrt(c.item_var + spread / n) <= abs(target)
    return int(n[np.argmax(enough)]) if enough.any() else None


# --- seeds alone ---------------------------------------------------------------------------------------------


def compare_seeds(a: np.ndarray, b: np.ndarray, fixed_a: bool = False, fixed_b: bool = False) -> Comparison:
    """`a − b` from per-seed values: Welch (both vary), one-sample (one is a fixed value: identical seeds), or
    untested (neither varies, or a side has one seed)."""
    return contrast_seeds([(a, fixed_a), (b, fixed_b)], [1.0, -1.0])


def contrast_seeds(lines: list[tuple[np.ndarray, bool]], weights: list[float]) -> Comparison:
    """Σ_l c_l · mean(values_l) from per-seed values alone (no items: the test material's noise is not counted),
    with Σ_l c_l² s_l² / n_l and Satterthwaite's df; `fixed` lines (identical seeds) have no seed part. With two
    lines and weights (1, −1) this is Welch's test (one-sample when one line is fixed)."""
    values = [np.asarray(v, float) for v, _ in lines]
    fixed = [f or (len(v) > 1 and np.ptp(v) == 0) for v, (_, f) in zip(values, lines)]
    estimate = float(sum(c * v.mean() for c, v in zip(weights, values)))
    if any(c and len(v) < 2 and not f for c, v, f in zip(weights, values, fixed)):
        return untested(estimate, "1 seed")
    spreads = [0.0 if f else float(np.var(v, ddof=1)) for v, f in zip(values, fixed)]
    parts = [(c * c * s2 / len(v), len(v) - 1) for c, s2, v in zip(weights, spreads, values) if c and s2 > 0]
    used = [f for c, f in zip(weights, fixed) if c]
    method = "1-sample" if any(used) and len(used) == 2 else "Welch" if len(used) == 2 else "seeds"
    spread = (spreads[0], spreads[1]) if len(lines) == 2 else (sum(spreads), 0.0)
    return interval(estimate, 0.0, parts, method, 0, spread)


UPPER = 0.25  # the df is computed with each seed variance at its upper 75 % bound: s² (n − 1) / χ²_{n−1}(0.25)


def welch_df(item_var: float, seed_parts: list[tuple[float, int]]) -> float:
    """Welch–Satterthwaite's df of item_var (known) + Σ seed parts, each part taken at its upper 75 % confidence
    bound, part · k / χ²_k(UPPER), k = n − 1. Plain Satterthwaite with the raw parts is too liberal with 2–3 seeds:
    a seed variance that came out small by chance shrinks se *and* lets the known item part push df up at once
    (false-positive rate 6–9 % against a line of identical replicates, benchmarks/stats_calibration.py); the bound
    keeps the df from trusting a seed variance more than its few degrees of freedom allow (measured 2.6–4.7 % at 2, 3
    and 5 seeds). The se is not inflated; only the df is. Without an item part this is Welch's df exactly (scipy's);
    ∞ when nothing is estimated from seeds."""
    bounded = [(v * k / stats.chi2.ppf(UPPER, k) if item_var > 0 else v, k) for v, k in seed_parts if v > 0]
    if not bounded:
        return math.inf
    total = item_var + sum(v for v, _ in bounded)
    return total * total / sum(v * v / k for v, k in bounded)


def interval(estimate: float, item_var: float, seed_parts: list[tuple[float, int]], method: str, items: int, spread: tuple[float, float]) -> Comparison:
    """The t interval and two-sided p of `estimate` with variance item_var + Σ seed parts at `welch_df`'s df;
    untested when the variance is zero (identical seeds and no items to count)."""
    seed_var = sum(v for v, _ in seed_parts)
    var = item_var + seed_var
    if not var > 0:
        return untested(estimate, "no variance (identical seeds, no per-item files)", items)
    df = welch_df(item_var, seed_parts)
    se = math.sqrt(var)
    critical = float(stats.t.ppf((1 + LEVEL) / 2, df))
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    return Comparison(estimate, estimate - critical * se, estimate + critical * se, se, df, p, method, items, seed_var, item_var, spread, critical)


# --- paired over shared items ----------------------------------------------------------------------------------


class ItemBootstrap:
    """The item resamples of one test material, drawn once and shared by every line scored on it, and each line's
    metric under each resample (mean over its seeds), cached by the caller's key *and* the items themselves (two
    metrics of one line, recall@1 and recall@2, share a material but not their per-item values)."""

    def __init__(self, resamples: int = RESAMPLES, seed: int = 0):
        self.resamples, self.seed = resamples, seed
        self._weights: dict[str, np.ndarray] = {}
        self._lines: dict[tuple, tuple[np.ndarray, float]] = {}

    def weights(self, material: str, n: int) -> np.ndarray:
        """(B, n) multinomial counts: the same for every line with this material (the seed is derived from it)."""
        if material not in self._weights:
            digest = int.from_bytes(hashlib.sha256(f"{material}:{self.seed}".encode()).digest()[:8], "little")
            rng = np.random.default_rng(digest)
            self._weights[material] = rng.multinomial(n, np.full(n, 1.0 / n), size=self.resamples).astype(np.float64)
        return self._weights[material]

    @staticmethod
    def _cache(key, seeds: list[ItemScores], independent: bool) -> tuple:
        h = hashlib.sha1()
        for s in seeds:
            h.update(np.ascontiguousarray(s.values, dtype=np.float64).tobytes())
            h.update(b"|" if s.same is None else np.ascontiguousarray(s.same, dtype=bool).tobytes())
        return (key, independent, seeds[0].material, seeds[0].kind, h.hexdigest())

    def _entry(self, key, seeds: list[ItemScores], independent: bool) -> tuple[np.ndarray, float]:
        """(the line's (B,) series, the mean over its seeds of each seed's own bootstrap variance), computed once."""
        cache = self._cache(key, seeds, independent)
        if cache not in self._lines:
            material, n = seeds[0].material, len(seeds[0].values)
            w = self.weights(f"{material}:{key}" if independent else material, n)
            per_seed = [np.concatenate([item_metric(s, w[i : i + CHUNK]) for i in range(0, len(w), CHUNK)]) for s in seeds]
            self._lines[cache] = (np.mean(per_seed, axis=0), float(np.mean([np.var(x, ddof=1) for x in per_seed])))
        return self._lines[cache]

    def line(self, key, seeds: list[ItemScores], independent: bool = False) -> np.ndarray:
        """(B,) the line's metric, averaged over its seeds, under each resample of its items. `independent` draws
        resamples of its own (the unpaired reference: as if no other line shared its items)."""
        return self._entry(key, seeds, independent)[0]

    def interaction(self, key, seeds: list[ItemScores]) -> float:
        """σ²_resid / (seeds · items): the seed × item noise in the line's mean, counted by both the item bootstrap
        and the seeds' spread; 0 with one seed (nothing to tell it from the seed part then)."""
        if len(seeds) < 2:
            return 0.0
        mean, within = self._entry(key, seeds, False)
        return max(0.0, (within - float(np.var(mean, ddof=1))) / (len(seeds) - 1))


def shared_material(*lines: list[ItemScores] | None) -> str | None:
    """The material every seed of every line was scored on, or None when any lacks items or they differ."""
    found = {s.material for seeds in lines if seeds for s in seeds}
    if any(not seeds for seeds in lines) or len(found) != 1:
        return None
    return found.pop()


def contrast(lines: list[tuple[object, list[ItemScores], np.ndarray, bool]], weights: list[float], boot: ItemBootstrap, paired: bool = True) -> Comparison:
    """Σ_l c_l · (line l's mean over seeds) with the items' own part and the seeds' raw part (module docstring).

    `lines` holds (key, per-seed ItemScores, per-seed row values, fixed) per line; every line must share one
    material (see `shared_material`); `fixed` lines (identical seeds) have no seed part. The estimate is from the
    row values (the leaderboard's means). `paired=False` resamples each line's items independently: the interval
    one would get if the lines did not share their test items (for checking what pairing buys)."""
    estimate = float(sum(c * np.mean(v) for c, (_, _, v, _) in zip(weights, lines)))
    n = len(lines[0][1][0].values)
    if any(c and len(v) < 2 and not fixed for c, (_, _, v, fixed) in zip(weights, lines)):
        return untested(estimate, "1 seed", n)
    if paired:
        series = sum(c * boot.line(key, seeds) for c, (key, seeds, _, _) in zip(weights, lines) if c)
        boot_var = float(np.var(series, ddof=1))
    else:
        boot_var = float(sum(c * c * np.var(boot.line(key, seeds, independent=True), ddof=1) for c, (key, seeds, _, _) in zip(weights, lines) if c))
    shared = sum(c * c * boot.interaction(key, seeds) for c, (key, seeds, _, fixed) in zip(weights, lines) if c and not fixed)
    item_var = max(0.0, boot_var - shared)  # the seed × item part is in the raw seed variance below
    spreads = [0.0 if fixed else float(np.var(v, ddof=1)) for _, _, v, fixed in lines]
    parts = [(c * c * s2 / len(v), len(v) - 1) for c, s2, (_, _, v, _) in zip(weights, spreads, lines) if c and s2 > 0]
    spread = (spreads[0], spreads[1]) if len(lines) == 2 else (sum(spreads), 0.0)
    return interval(estimate, item_var, parts, "paired" if paired else "unpaired items", n, spread)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted): sorted p_(i) × (m − i + 1), made
    monotone, capped at 1. Five lines by hand rather than statsmodels' multipletests, which the leaderboard would
    otherwise need as a dependency; tests/test_paired.py checks the two agree."""
    finite = [i for i, p in enumerate(ps) if not math.isnan(p)]
    order = sorted(finite, key=lambda i: ps[i])
    out, running = [math.nan] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * ps[i]))
        out[i] = running
    return out

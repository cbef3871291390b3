"""Verdicts that hold when the best line is picked from the same data it is tested on: simultaneous intervals for
every pairwise difference of a comparison group's lines, with one max-type critical value.

The leaderboard names the line with the best mean and asks of every other whether it is *below* it. Testing each
against the observed best at 5 % (even Holm-corrected) does not bound the chance of a false "below": the best was
chosen because it came out on top, so its lead is biased upwards (with 25 equal lines, ~26 % of groups would call
some line below). What does bound it is a critical value for the whole family that *any* choice of the best could
draw from: the 95 % quantile q of

    max over every pair (i, j) of |(x̄_i − μ_i) − (x̄_j − μ_j)| / sd_ij

under the joint law of the lines' means (a Tukey-type studentized range for unequal, correlated lines). With
probability ≥ 95 % every pairwise interval covers its truth at once, so a claim "line i is below the best", made
when its interval excludes 0, is wrong for no line with probability ≥ 95 %, whichever line came out best, tied tops
included. (Dunnett's critical value with the observed best as control repeats the selection error; Hsu's MCB only
claims "i is not strictly the best", which a line tied at the top also satisfies.)

The joint law is normal with covariance Σ = items + seeds: the items' own covariance of the lines' means from the
shared bootstrap (bench.report.paired.ItemBootstrap: one resample for every line, less each line's seed × item part)
plus each line's raw seed variance s²/n on the diagonal; without per-item files for every line, the seeds alone.
q is its quantile from DRAWS draws (a fixed generator: the same rows give the same page). The seed variances are
estimates from few seeds, so each comparison then uses its own t: the per-comparison level α' = 2·(1 − Φ(q)) and
the critical value t_{1−α'/2}(df), df from bench.report.paired.welch_df — a line is below exactly when its
interval excludes 0, and its adjusted p (P(max ≥ the z of its own t)) is < 0.05 exactly then.
benchmarks/stats_calibration.py measures the familywise error, coverage and power of the whole procedure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bench.items import ItemScores
from bench.report.paired import LEVEL, Comparison, ItemBootstrap, contrast, contrast_seeds

DRAWS = 20_000  # Monte-Carlo sd of q at the 95 % quantile: ~0.013 (k = 2, q = 1.96); about ±0.3 % on the level
CHUNK = 2_000


@dataclass(frozen=True)
class Member:
    """A line of the family: its cache key, per-seed item scores (None: none), per-seed metric values, and whether
    its seeds are identical (one observation, no seed variance)."""

    key: object
    items: list[ItemScores] | None
    values: np.ndarray
    fixed: bool


class Family:
    """The tested lines of one comparison group and the joint law of their means."""

    def __init__(self, members: list[Member], boot: ItemBootstrap, draws: int = DRAWS, seed: int = 0):
        self.members = members
        k = len(members)
        self.means = np.array([float(np.mean(m.values)) for m in members])
        self.spread = np.array([0.0 if m.fixed else float(np.var(m.values, ddof=1)) for m in members])
        self.n = np.array([len(m.values) for m in members])
        self.paired = k > 0 and all(m.items for m in members) and len({s.material for m in members for s in m.items}) == 1
        self.item_cov = np.zeros((k, k))
        if self.paired:
            series = np.stack([boot.line(m.key, m.items) for m in members], axis=1)
            self.item_cov = np.atleast_2d(np.cov(series, rowvar=False, ddof=1))
            self.item_cov -= np.diag([0.0 if m.fixed else boot.interaction(m.key, m.items) for m in members])
        self.boot, self.draws, self.seed = boot, draws, seed
        self._law: np.ndarray | None = None

    def compare(self, i: int, j: int) -> Comparison:
        """Line i − line j with its own (unadjusted) 95 % interval: bench.report.paired's `contrast` over the shared
        items when the family is paired, else `contrast_seeds` — the same arithmetic as `law`'s Σ."""
        a, b = self.members[i], self.members[j]
        if self.paired:
            return contrast([(m.key, m.items, m.values, m.fixed) for m in (a, b)], [1.0, -1.0], self.boot)
        return contrast_seeds([(a.values, a.fixed), (b.values, b.fixed)], [1.0, -1.0])

    def law(self) -> np.ndarray:
        """The DRAWS sorted values of max over pairs |Z_i − Z_j| / sd_ij, Z ~ N(0, Σ) (Σ made positive semi-definite
        by clipping negative eigenvalues; pairs with sd 0 left out); [] when no pair varies."""
        if self._law is None:
            cov = self.item_cov + np.diag(self.spread / self.n)
            values, vectors = np.linalg.eigh((cov + cov.T) / 2)
            root = vectors * np.sqrt(np.clip(values, 0.0, None))
            psd = root @ root.T
            i, j = np.triu_indices(len(cov), 1)
            sd = np.sqrt(np.clip(psd[i, i] + psd[j, j] - 2 * psd[i, j], 0.0, None))
            keep = sd > 1e-12 * max(1.0, float(np.abs(psd).max()))
            i, j, sd = i[keep], j[keep], sd[keep]
            if not len(sd):
                self._law = np.array([])
                return self._law
            rng = np.random.default_rng(self.seed)
            out = []
            for start in range(0, self.draws, CHUNK):
                z = rng.standard_normal((min(CHUNK, self.draws - start), len(cov))) @ root.T
                out.append((np.abs(z[:, i] - z[:, j]) / sd).max(axis=1))
            self._law = np.sort(np.concatenate(out))
        return self._law

    def quantile(self, level: float = LEVEL) -> float:
        """q: the smallest z with P(max ≥ z) < 1 − level among the draws (inf when nothing varies)."""
        law = self.law()
        if not len(law):
            return math.inf
        allowed = math.ceil((1 - level) * len(law)) - 1  # draws at or above q tolerated
        return float(law[len(law) - allowed - 1])

    def per_comparison_level(self, level: float = LEVEL) -> float:
        """α' = 2(1 − Φ(q)): the two-sided level each comparison is held to."""
        return float(2 * stats.norm.sf(self.quantile(level)))

    def adjusted_p(self, c: Comparison) -> float:
        """P(max ≥ z), z the normal quantile of the comparison's own two-sided t p-value; at least 1/DRAWS."""
        law = self.law()
        if not c.tested or not len(law):
            return math.nan
        z = stats.norm.isf(c.p / 2) if c.p > 0 else math.inf
        above = len(law) - int(np.searchsorted(law, z, side="left"))
        return max(above, 1) / len(law)

    def simultaneous(self, c: Comparison, level: float = LEVEL) -> Comparison:
        """`c` with the family's interval (critical t_{1−α'/2}(df)) and its adjusted p: below exactly when the
        interval excludes 0."""
        if not c.tested:
            return c
        per = self.per_comparison_level(level)
        critical = float(stats.t.isf(per / 2, c.df)) if per > 0 else math.inf
        return c.at(critical, self.adjusted_p(c))

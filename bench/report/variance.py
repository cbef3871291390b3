"""How the variance of a metric splits. Over the seed rows of a comparison group: each axis's share, from a linear
model of the per-seed values on the axes and their two-way interactions (those the design allows, or those chosen),
fitted and tested by statsmodels (type-II ANOVA), the replicates' own share (seeds of one configuration around its
mean) and a plain statement of how complete and balanced the design is."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.report.paired import contrast_seeds

INSTALL = "pip install 'metric-bench[stats]'"
CONFIGURATION = "configuration"  # the column naming a row's configuration (its line): its seeds are replicates
RESIDUAL = "residual"
REPLICATES = "replicates (within configuration)"
BALANCED = "complete and balanced"


@dataclass(frozen=True)
class Term:
    name: str  # an axis, "a × b", "residual" or REPLICATES
    sum_sq: float
    share: float  # sum_sq / total sum of squares
    df: float
    F: float = math.nan
    p: float = math.nan


@dataclass(frozen=True)
class Variance:
    terms: list[Term]  # the shown terms in model order, the residual, the replicates; empty when nothing was fitted
    observations: int
    total: float  # Σ (y − ȳ)² over the observations
    design: str  # levels, the level combinations present, observations per combination
    notes: list[str] = field(default_factory=list)


def require_statsmodels() -> None:
    """A one-line UserError naming the extra when statsmodels is missing."""
    try:
        import statsmodels.formula.api
        import statsmodels.stats.anova  # noqa: F401
    except ImportError:
        raise UserError(f"the variance shares need statsmodels, which is not installed — {INSTALL}") from None


def variance(
    data: pd.DataFrame, axes: list[str], interactions: list[tuple[str, str]] | None = None, shown: list[str] | None = None, notes: list[str] = ()
) -> Variance:
    """`y ~ C(axis) + … + C(a):C(b) …` over `data` (one row per ok seed row: each axis's level as text, its
    CONFIGURATION and the value `y`): type-II sums of squares as shares of the total, F and p (statsmodels), then the
    replicates' row (`replicates`). A term the earlier ones already determine (aliased, wholly or partly: an option
    that follows from another, an interaction of an incomplete grid) is left out of the model and named in the notes.
    `interactions` None: every two-way interaction of the axes in order, each kept when it is not aliased and leaves
    ≥ 2 residual df. `shown` limits the axis terms shown (the model keeps every axis, so each is adjusted for the
    others). No seed term: seed 0 of one configuration has nothing to do with seed 0 of another."""
    require_statsmodels()
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    notes = list(notes)
    if len(data) < 3 or not axes:
        return Variance([], len(data), math.nan, "", notes + ["Too few seed rows or axes to fit a model."])
    safe = {a: f"x{i}" for i, a in enumerate(axes)}
    pairs = combinations(axes, 2) if interactions is None else interactions
    kept, rank, said = choose_terms(
        data.rename(columns=safe), {a: f"C({safe[a]})" for a in axes}, {(a, b): f"C({safe[a]}):C({safe[b]})" for a, b in pairs}, interactions is None
    )
    notes += said
    if len(data) - rank < 1:
        notes.append("No residual degrees of freedom (one seed row per cell): no model fitted.")
        return Variance([], len(data), math.nan, design(data, axes), notes)
    fit = ols("y ~ " + " + ".join(kept.values()), data.rename(columns=safe)).fit()
    with warnings.catch_warnings():  # an F of a term with no sum of squares: statsmodels warns, the NaN says it
        warnings.simplefilter("ignore", RuntimeWarning)
        table = anova_lm(fit, typ=2)
    total = float(((data["y"] - data["y"].mean()) ** 2).sum())
    terms = []
    for name, term in [*kept.items(), (RESIDUAL, "Residual")]:
        if name in axes and shown is not None and name not in shown:
            continue
        r = table.loc[term]
        terms.append(Term(name, float(r["sum_sq"]), float(r["sum_sq"]) / total if total > 0 else math.nan, float(r["df"]), float(r["F"]), float(r["PR(>F)"])))
    terms += replicates(data, total)
    hidden = [a for a in kept if a in axes and shown is not None and a not in shown]
    if hidden:
        notes.append(f"Also in the model (not shown): {', '.join(hidden)}.")
    return Variance(terms, len(data), total, design(data, [a for a in kept if a in axes]), notes)


def choose_terms(data: pd.DataFrame, mains: dict[str, str], pairs: dict[tuple[str, str], str], tried: bool) -> tuple[dict[str, str], int, list[str]]:
    """The terms to fit ({name: formula term}), the model's rank and notes on what was left out: each main effect,
    then each interaction in `pairs`, in order, kept unless the terms before it already determine it wholly or partly
    (aliased: the rank of the design matrix grows by less than its columns); when `tried` (by default, not named by
    the user) only those of two kept main effects and leaving ≥ 2 residual df."""
    from statsmodels.formula.api import ols

    kept: dict[str, str] = {}
    rank, columns, aliased, few, notes = 1, 1, [], [], []
    for name, term, of in [(a, t, ()) for a, t in mains.items()] + [(f"{a} × {b}", t, (a, b)) for (a, b), t in pairs.items()]:
        optional = tried and bool(of)
        if optional and not all(a in kept for a in of):
            continue  # by default, no interaction of a main effect that is itself aliased
        exog = ols("y ~ " + " + ".join([*kept.values(), term]), data).exog
        new_rank, new_columns = int(np.linalg.matrix_rank(exog)), exog.shape[1]
        if new_rank - rank < new_columns - columns:
            if optional:
                aliased.append(name)
            else:
                notes.append(
                    f"{name} is {'determined' if new_rank == rank else 'partly determined'} by the terms before "
                    "it in these cells (aliased) and left out of the model."
                )
        elif optional and len(data) - new_rank < 2:
            few.append(name)
        else:
            kept[name] = term
            rank, columns = new_rank, new_columns
    if tried and sum(name in mains for name in kept) > 1:
        notes.append(
            "Two-way interactions fitted by default: "
            + (", ".join(n for n in kept if n not in mains) or "none")
            + "".join(
                f"; left out, {why}: {', '.join(names)}"
                for why, names in (("aliased in these cells", aliased), ("too few seed rows (< 2 residual df)", few))
                if names
            )
            + ". --interaction A:B fits exactly those named."
        )
    return kept, rank, notes


def replicates(data: pd.DataFrame, total: float) -> list[Term]:
    """The replicates' row: Σ over seed rows of (y − its configuration's mean)², its share of `total` and its df
    (rows − configurations), no F (it is the pure error within the residual, not a term); [] without replicates."""
    df = len(data) - data[CONFIGURATION].nunique()
    if df < 1:
        return []
    sum_sq = float(((data["y"] - data.groupby(CONFIGURATION)["y"].transform("mean")) ** 2).sum())
    return [Term(REPLICATES, sum_sq, sum_sq / total if total > 0 else math.nan, float(df))]


def design(data: pd.DataFrame, axes: list[str]) -> str:
    """ "backbone (3) × loss (3): 9 of 9 level combinations present, 3 seed rows in each (complete and balanced)"."""
    if not axes:
        return ""
    levels = [data[a].nunique() for a in axes]
    counts = data.groupby(axes).size()
    possible = math.prod(levels)
    complete, equal = len(counts) == possible, counts.nunique() == 1
    per = f"{counts.iloc[0]} seed rows in each" if equal else f"{counts.min()}–{counts.max()} seed rows per combination"
    kind = BALANCED if complete and equal else " and ".join(w for w, bad in (("incomplete", not complete), ("unbalanced", not equal)) if bad)
    named = " × ".join(f"{a} ({n})" for a, n in zip(axes, levels))
    return f"{named}: {len(counts)} of {possible} level combinations present, {per} ({kind})"


# --- two axes crossed: the cell means an interaction plot draws -------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """The mean of `y` over one (a level, b level) cell's configurations (each its mean over seeds, weighted
    alike), with its 95 % interval from the seeds' spread (NaN when a configuration has one seed)."""

    a: str
    b: str
    mean: float
    low: float
    high: float
    configurations: int


@dataclass(frozen=True)
class Crossed:
    """Two axes crossed: the levels every level of the other was run with, the cells, and what the cells hold of
    the other axes (`held`: the one setting of them every cell has, or "" when none is shared: then each cell
    averages the settings it was run with)."""

    axes: tuple[str, str]
    levels: tuple[list[str], list[str]]
    cells: list[Cell]
    held: str
    left_out: list[str]  # levels not run with every level of the other axis

    def cell(self, a: str, b: str) -> Cell:
        return next(c for c in self.cells if (c.a, c.b) == (a, b))


def crossed(data: pd.DataFrame, a: str, b: str, others: list[str] = ()) -> Crossed | None:
    """The cells of `a` × `b` in `data` (observations: axes as text, CONFIGURATION, y), or None unless ≥ 2 levels of
    each are crossed. Levels are dropped, the one missing the largest share of its cells first (on a tie, one of the
    axis with more levels, the later one), until every remaining pair of levels has a cell; then, when one setting of
    `others` is in every cell, only it is kept (the lines differ in a and b alone), else each cell averages its own."""
    levels = [list(dict.fromkeys(data[a])), list(dict.fromkeys(data[b]))]
    present = set(zip(data[a], data[b]))
    left_out = []
    while min(map(len, levels)) >= 2:
        cells = [[(x, y) for y in levels[1]] for x in levels[0]], [[(x, y) for x in levels[0]] for y in levels[1]]
        missing = [
            (sum(c not in present for c in row) / len(row), len(levels[axis]), n, axis, levels[axis][n]) for axis in (0, 1) for n, row in enumerate(cells[axis])
        ]
        share, *_, axis, level = max(missing)
        if share == 0:
            break
        levels[axis].remove(level)
        left_out.append(level)
    if min(map(len, levels)) < 2:
        return None
    block = data[data[a].isin(levels[0]) & data[b].isin(levels[1])]
    held = ""
    if others:
        setting = [tuple(t) for t in block[list(others)].itertuples(index=False)]
        covers = {s: {(x, y) for s2, x, y in zip(setting, block[a], block[b]) if s2 == s} for s in dict.fromkeys(setting)}
        full = [s for s, cells in covers.items() if len(cells) == len(levels[0]) * len(levels[1])]
        if full:
            best = max(full, key=setting.count)  # the most seed rows; the first on a tie
            block = block[[s == best for s in setting]]
            held = ", ".join(f"{o}={v}" for o, v in zip(others, best))
    cells = []
    for x in levels[0]:
        for y in levels[1]:
            here = block[(block[a] == x) & (block[b] == y)]
            seeds = [g.to_numpy(float) for _, g in here.groupby(CONFIGURATION)["y"]]
            c = contrast_seeds([(v, False) for v in seeds], [1 / len(seeds)] * len(seeds))
            cells.append(Cell(x, y, c.estimate, c.low, c.high, len(seeds)))
    return Crossed((a, b), levels, cells, held, left_out)

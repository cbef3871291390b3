"""Each axis's share of the variance of a metric over the seed rows of a comparison group: a linear model of the
per-seed values on the axes, the seed and chosen interactions, fitted and tested by statsmodels (type-II ANOVA),
and a plain statement of how complete and balanced the design is."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.errors import UserError

INSTALL = "pip install 'metric-bench[stats]'"
SEED = "seed"
RESIDUAL = "residual"
BALANCED = "complete and balanced"


@dataclass(frozen=True)
class Term:
    name: str  # an axis, "seed", "a × b", or "residual"
    sum_sq: float
    share: float  # sum_sq / total sum of squares
    df: float
    F: float = math.nan
    p: float = math.nan


@dataclass(frozen=True)
class Variance:
    terms: list[Term]  # the shown terms in model order, then the residual; empty when nothing could be fitted
    observations: int
    total: float  # Σ (y − ȳ)² over the observations
    design: str  # levels, the level combinations present, observations per combination
    notes: list[str] = field(default_factory=list)


def require_statsmodels() -> None:
    """A one-line UserError naming the extra when statsmodels is missing."""
    try:
        import statsmodels.formula.api  # noqa: F401
        import statsmodels.stats.anova  # noqa: F401
    except ImportError:
        raise UserError(f"the variance shares need statsmodels, which is not installed — {INSTALL}") from None


def variance(data: pd.DataFrame, axes: list[str], interactions: list[tuple[str, str]] = (), shown: list[str] | None = None,
             notes: list[str] = ()) -> Variance:
    """`y ~ C(axis) + … + C(seed) + C(a):C(b) …` over `data` (one row per ok seed row: each axis's level as text,
    `seed` and the value `y`): type-II sums of squares as shares of the total, F and p (statsmodels). A term the
    earlier ones already determine (aliased, wholly or partly: an option that follows from another, an interaction
    of an incomplete grid) is left out of the model and named in the notes. `shown` limits the axis terms shown (the
    model keeps every axis, so each is adjusted for the others)."""
    require_statsmodels()
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    notes = list(notes)
    if len(data) < 3 or not axes:
        return Variance([], len(data), math.nan, "", notes + ["Too few seed rows or axes to fit a model."])
    safe = {a: f"x{i}" for i, a in enumerate(axes)}
    candidates = [(a, f"C({safe[a]})") for a in axes]
    candidates += [(SEED, "C(seed)")] if data[SEED].nunique() > 1 else []
    candidates += [(f"{a} × {b}", f"C({safe[a]}):C({safe[b]})") for a, b in interactions]
    kept, rank, columns = [], 1, 1
    for name, term in candidates:
        model = ols("y ~ " + " + ".join([t for _, t in kept] + [term]), data.rename(columns=safe))
        new_rank, new_columns = int(np.linalg.matrix_rank(model.exog)), model.exog.shape[1]
        if new_rank - rank < new_columns - columns:
            notes.append(f"{name} is {'determined' if new_rank == rank else 'partly determined'} by the terms before it "
                         "in these cells (aliased) and left out of the model.")
            continue
        kept.append((name, term))
        rank, columns = new_rank, new_columns
    if len(data) - rank < 1:
        notes.append("No residual degrees of freedom (one seed row per cell): no model fitted.")
        return Variance([], len(data), math.nan, design(data, axes), notes)
    fit = ols("y ~ " + " + ".join(t for _, t in kept), data.rename(columns=safe)).fit()
    with warnings.catch_warnings():  # an F of a term with no sum of squares: statsmodels warns, the NaN says it
        warnings.simplefilter("ignore", RuntimeWarning)
        table = anova_lm(fit, typ=2)
    total = float(((data["y"] - data["y"].mean()) ** 2).sum())
    terms = []
    for name, term in kept + [(RESIDUAL, "Residual")]:
        if name in axes and shown is not None and name not in shown:
            continue
        r = table.loc[term]
        terms.append(Term(name, float(r["sum_sq"]), float(r["sum_sq"]) / total if total > 0 else math.nan, float(r["df"]),
                          float(r["F"]), float(r["PR(>F)"])))
    hidden = [a for a, _ in kept if a in axes and shown is not None and a not in shown]
    if hidden:
        notes.append(f"Also in the model (not shown): {', '.join(hidden)}.")
    return Variance(terms, len(data), total, design(data, [a for a, _ in kept if a in axes]), notes)


def design(data: pd.DataFrame, axes: list[str]) -> str:
    """"backbone (3) × loss (3): 9 of 9 level combinations present, 3 seed rows in each (complete and balanced)"."""
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

"""The leaderboard's judgements of a line, on the sort metric in its own direction: significance against the best
of its comparison group, the gain over the untrained baseline, whether it was still improving, the selected
curve point and what a search chose. Pure functions of `bench.report.lines.Line`s; the rules are stated in
`bench.report.wording.RULES` and docs/trust.md."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
from scipy.stats import ttest_1samp

from bench.config import HEAD_ARGS, UNTRAINED
from bench.config.metrics import lower_is_better
from bench.report.lines import ABSENT, NOT_TEST_MATERIAL, Line, curve_of
from bench.report.paired import UNTESTED as UNTESTED_PAIR
from bench.report.paired import Comparison, ItemBootstrap, compare_seeds, contrast, seeds_to_resolve, shared_material
from bench.report.simultaneous import Family, Member
from bench.schema import Row

ALPHA = 0.05  # the family's error rate: P(any false "below") ≤ ALPHA; still improving needs p < ALPHA
UNTESTED = "1 seed: untested"  # a line with one ok seed: no spread to test, wherever its mean ranks
UNTESTED_COMPARISON = "untested"  # a comparison with no variance (identical seeds on both sides, no items)
NOT_SEPARATED = "not separated"
TARGET = 0.02  # the difference seeds_to_resolve is asked of, unless the grid's [report] target says another
NUMBERS = ("vs_best_delta", "vs_best_low", "vs_best_high", "vs_best_p", "vs_best_p_adj", "critical", "detectable", "seeds_to_resolve")


def values(line: Line, metric: str) -> np.ndarray:
    """The metric per ok seed, those without a finite value left out (they cannot be averaged or tested)."""
    out = np.array([float(r.metric(metric, math.nan)) for r in line.ok], dtype=float)
    return out[np.isfinite(out)]


def identical_seeds(line: Line) -> bool:
    """≥ 2 ok seeds whose metrics are all bit-identical: nothing in the cell depended on the seed (a pretrained
    trunk scored untrained), so the seeds are one observation, not several."""
    ok = line.ok
    return len(ok) >= 2 and len({json.dumps(r.metrics, sort_keys=True) for r in ok}) == 1


def better(metric: str) -> int:
    """+1 or −1: multiplies a difference so that positive is better in the metric's direction."""
    return -1 if lower_is_better(metric) else 1


def signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


# --- significance vs the best of the group -----------------------------------------------------------------


def line_items(line: Line, metric: str, load) -> list | None:
    """The per-item scores of `metric` of each ok seed with a finite value (in `values` order), or None when any
    seed has none (no items file, a metric with no per-item form). `load(row)` gives a row's items dict or None."""
    from bench.items import item_scores

    rows = [r for r in line.ok if math.isfinite(float(r.metric(metric, math.nan)))]
    found = [item_scores(items, metric) if (items := load(r)) is not None else None for r in rows] if load else [None]
    return found if found and all(f is not None for f in found) else None


def compare_lines(a: Line, b: Line, metric: str, load=None, boot=None) -> Comparison:
    """`a − b` on `metric` alone (no family): paired over the test items both lines' seeds share when every seed has
    them (bench.items), else from the seeds alone (Welch, or one-sample against a line of identical seeds);
    untested with one seed on a side or no variance."""
    va, vb = values(a, metric), values(b, metric)
    fa, fb = identical_seeds(a), identical_seeds(b)
    ia, ib = line_items(a, metric, load), line_items(b, metric, load)
    if shared_material(ia, ib) is not None:
        boot = boot or ItemBootstrap()
        return contrast([((id(a), metric), ia, va, fa), ((id(b), metric), ib, vb, fb)], [1.0, -1.0], boot)
    return compare_seeds(va, vb, fa, fb)


def family_of(group: list[Line], metric: str, tested: list[int], load=None, boot=None) -> Family:
    """The joint law of the tested lines' means (bench.report.simultaneous), paired when all share items."""
    members = [Member((id(group[i]), metric), line_items(group[i], metric, load), values(group[i], metric), identical_seeds(group[i])) for i in tested]
    return Family(members, boot or ItemBootstrap())


def versus_best(group: list[Line], metric: str, load=None, boot=None, equivalence: float | None = None, target: float = TARGET) -> dict[str, list]:
    """The columns comparing each line of one comparison group with the group's best line.

    Kinds of line: a sample (≥ 2 ok seeds), a fixed value (identical seeds: one distinct value, with no seed
    variance), a single seed (1 ok value: a draw of unknown spread, untested wherever it ranks) and none.
    The best is the best mean among samples and fixed values (first of ties, as the stable sort). Every other
    tested line is compared with it with a *simultaneous* interval (bench.report.simultaneous: one max-type
    critical value over every pair of the group's tested lines, so the verdicts hold although the best was picked
    from the same data): "below" when the interval excludes 0, "equivalent" when it lies inside ±`equivalence`
    (a margin the user set; two one-sided tests at the family's level), else "not separated"; "untested" when the
    comparison has no variance. Columns: `vs_best`, `vs_best_test` (how it was tested), `vs_best_delta`/`_low`/
    `_high` (line − best in the metric's units, simultaneous 95 %), `vs_best_p` (the comparison's own p),
    `vs_best_p_adj` (adjusted for the family and the selection), `detectable` (the smallest difference the design
    detects with 80 % power at the family's critical value) and `seeds_to_resolve` (for a line not separated, about
    how many seeds per line would detect a true difference of `target` at the family's level; NaN when none would:
    the items' own noise is larger)."""
    vals = [values(line, metric) for line in group]
    fixed = [identical_seeds(line) and len(v) >= 1 for line, v in zip(group, vals)]
    tested = [i for i, v in enumerate(vals) if fixed[i] or len(v) >= 2]
    best = max(tested, key=lambda i: better(metric) * vals[i].mean(), default=None)
    n = len(group)
    out: dict[str, list] = {"vs_best": [ABSENT] * n, "vs_best_test": [ABSENT] * n, **{c: [math.nan] * n for c in NUMBERS}}
    for i, v in enumerate(vals):
        if len(v) and i not in tested:
            out["vs_best"][i] = UNTESTED
    if best is None:
        return out
    out["vs_best"][best] = "best"
    family = family_of(group, metric, tested, load, boot)
    at = {i: k for k, i in enumerate(tested)}
    level = family.per_comparison_level()
    for i in tested:
        if i == best:
            continue
        own = family.compare(at[i], at[best])
        c = family.simultaneous(own)
        out["vs_best_delta"][i] = c.estimate
        if not c.tested:
            out["vs_best"][i], out["vs_best_test"][i] = UNTESTED_COMPARISON, c.method.removeprefix(f"{UNTESTED_PAIR}: ")
            continue
        below = better(metric) * c.estimate < 0 and (c.high < 0 or c.low > 0)
        equivalent = equivalence is not None and -equivalence < c.low and c.high < equivalence
        out["vs_best"][i] = "below" if below else f"equivalent (±{equivalence:g})" if equivalent else NOT_SEPARATED
        out["vs_best_test"][i] = f"paired, {c.items:,} items" if c.method == "paired" else c.method
        for column, value in (
            ("vs_best_low", c.low),
            ("vs_best_high", c.high),
            ("vs_best_p", own.p),
            ("vs_best_p_adj", c.p),
            ("detectable", c.detectable),
            ("critical", c.critical),
        ):
            out[column][i] = value
        if out["vs_best"][i] == NOT_SEPARATED and (need := seeds_to_resolve(target, c, level=level)) is not None:
            out["seeds_to_resolve"][i] = need
    return out


# --- gain over the untrained baseline --------------------------------------------------------------------


def untrained_key(config: dict, distance: str | None) -> str:
    """What an untrained baseline shares with the lines it is the baseline of.

    The backbone and its arguments except the head's, its preprocessing, the data, split, evaluation (but the
    distance option, and the curve and selection metric, which act only during training), the distance the
    line was actually scored with and the requested precision: what the backbone's own features and their
    score depend on. The loss, the rest of train, the budget and what is frozen only describe training, which
    the baseline has none of.
    """
    key = {k: v for k, v in config.items() if k in ("backbone", "dataset", "dataset_args", "split")}
    key["eval"] = {k: v for k, v in config.get("eval", {}).items() if k not in NOT_TEST_MATERIAL}
    key["distance"] = distance
    if "backbone_args" in config:
        key["backbone_args"] = {k: v for k, v in config["backbone_args"].items() if k not in HEAD_ARGS}
    key["model"] = {k: v for k, v in config.get("model", {}).items() if k == "preprocess"}
    key["train"] = {k: v for k, v in config.get("train", {}).items() if k == "precision"}
    return json.dumps(key, sort_keys=True)


def gain_vs_untrained(all_lines: list[Line], metric: str) -> dict[str, list]:
    """Columns `untrained_<metric>` (the matching baseline's mean over seeds) and `gain_vs_untrained`.

    The gain is this mean minus the baseline's, signed so that positive is better; NaN where no baseline
    matches (none scored with this line's distance counts: a gain against another distance is not a gain)
    and on the baselines themselves (loss "none"; the markdown shows "(baseline)"). When several untrained
    configurations match (they differ only in what the baseline ignores), their seeds are pooled.
    """
    pools: dict[str, list[float]] = {}
    for line in all_lines:
        if line.config.get("loss") == UNTRAINED:
            pools.setdefault(untrained_key(line.config, line.distance), []).extend(values(line, metric))
    base, gain = [], []
    for line in all_lines:
        pool = pools.get(untrained_key(line.config, line.distance), [])
        b = float(np.mean(pool)) if pool and line.config.get("loss") != UNTRAINED else math.nan
        v = values(line, metric)
        base.append(b)
        gain.append(better(metric) * (v.mean() - b) if len(v) and not math.isnan(b) else math.nan)
    return {f"untrained_{metric}": base, "gain_vs_untrained": gain}


# --- still improving, and the selected curve point --------------------------------------------------------


def curve_pair(row: Row, metric: str) -> tuple[float, float] | None:
    """The metric at fractions 0.5 and 1.0 of the budget, both from the row's one curve split
    (bench.report.lines.curve_of: validation first), or None."""
    at = curve_of(row, metric)[1]
    return (at[0.5], at[1.0]) if 0.5 in at and 1.0 in at else None


def still_improving(line: Line, metric: str) -> str:
    """Whether the last doubling of the budget still paid, from each seed's own gain (its metric at fraction 1.0
    minus at 0.5, positive = better; paired by seed, so the spread of levels across seeds does not hide it).

    ≥ 3 seeds: "yes" when the mean gain is > 0 by a one-sided one-sample t-test (p < 0.05; equal gains are
    decided by their sign, "no variance"); 2 seeds: "yes" only when both gain; 1 seed, or seeds that are copies
    of one run (identical seeds): "untested". "—" without both points.
    """
    pairs = [p for r in line.ok if (p := curve_pair(r, metric)) is not None]
    if not pairs:
        return ABSENT
    half, full = np.array(pairs).T
    gains = better(metric) * (full - half)
    mean = signed(float(gains.mean()))
    if len(gains) == 1:
        return f"untested ({mean}, 1 seed)"
    if identical_seeds(line):  # copies of one run are one gain, however many seeds repeat it
        return f"untested ({mean}, 1 distinct value)"
    if len(gains) == 2:
        gaining = int((gains > 0).sum())
        return f"{'yes' if gaining == 2 else 'no'} ({mean}, {gaining} of 2 seeds gain)"
    if np.ptp(gains) == 0:
        return f"{'yes' if gains[0] > 0 else 'no'} ({mean}, no variance)"
    with warnings.catch_warnings():  # gains equal but for rounding: scipy warns, the test is still right
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        p = float(ttest_1samp(gains, 0.0, alternative="greater").pvalue)
    return f"{'yes' if p < ALPHA else 'no'} ({mean}, {_p(p)})"


def selected(line: Line) -> str:
    """ "best@<fraction>" when train.select = "best" chose a curve point; one fraction per seed when they differ."""
    chosen = [str(float(r.train.selected.fraction)) for r in sorted(line.ok, key=_seed) if r.train.selected]
    if not chosen:
        return ABSENT
    return "best@" + (chosen[0] if len(set(chosen)) == 1 else ", ".join(chosen))


def tuned(line: Line, show) -> str:
    """ "train.lr=0.000687, loss.margin=0.606 (trial 4 of 20, 3 pruned; val verification_roc_auc 0.718)" for a
    configuration a search chose; "—" for one at the grid's own values. `show` formats a value."""
    search = line.rows[0].search
    if search is None or search.role != "final":
        return ABSENT
    params = ", ".join(f"{k}={show(v)}" for k, v in search.params.items())
    extra = "".join(f", {n} {k}" for k, n in (("pruned", search.pruned), ("failed", search.failed)) if n)
    return f"{params} (trial {search.trial} of {search.trials}{extra}; val {search.metric} {search.objective:.4g})"


def _seed(row: Row):
    return row.seed

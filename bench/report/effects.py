"""The effect of each choice of a grid (each axis: a level against a reference level) with a 95 % interval, from the
pairs of lines that differ in that option alone, what those pairs cover and how much they disagree, and each axis's
share of the variance. Pure functions of rows and their per-item files; the lines and comparison groups are the
leaderboard's (bench.report.lines)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from bench.config import UNTRAINED
from bench.config.metrics import lower_is_better
from bench.errors import UserError
from bench.report.lines import ABSENT, Line, comparison_groups, configuration, current, flatten, lines_of
from bench.report.paired import Comparison, ItemBootstrap, contrast, contrast_seeds, holm, interval, shared_material
from bench.report.variance import BALANCED, CONFIGURATION, Crossed, Variance, crossed, variance
from bench.report.verdicts import better, identical_seeds, line_items, signed, untrained_key, values
from bench.schema import Row, as_rows

PLUGIN_ARGS = {"backbone": "backbone_args.", "loss": "loss_args.", "dataset": "dataset_args."}
SEEDS_ONLY = "seeds only"
RANDOM = "random over pairs"
UNTRAINED_NOTE = "Untrained baselines are not in the model (they reset what acts in training, so they have no level of those axes)."
CROSSED = ("backbone", "loss")  # the two axes whose interaction is shown (cell means) when the grid crosses them


@dataclass(frozen=True)
class Effect:
    """One level of one axis against the reference level: the mean over matched pairs of (line − reference line),
    signed so that positive is better, with its 95 % interval, what it rests on and what it averages."""

    axis: str
    level: str
    reference: str
    pairs: int
    estimate: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    method: str = ""  # "paired, 200 items", "seeds only (…)", either after "random over pairs · "; "" without a pair
    agree: int = 0  # pairs whose own difference has the estimate's sign
    one_seed: int = 0  # lines with a match that were left out: one ok seed (no spread to test)
    why: str = ""  # without a pair: why none exists
    contexts: str = ""  # the other axes' levels the pairs' trained lines cover: "backbone: koch, conv4; loss: triplet"
    smallest: float = math.nan  # the smallest and the largest pair's own difference (signed)
    largest: float = math.nan
    tau2: float = math.nan  # between-pair variance beyond the pairs' own noise (heterogeneity); NaN with 1 pair
    i2: float = math.nan  # τ² / (τ² + mean own variance of a pair's difference); NaN with 1 pair

    @property
    def tested(self) -> bool:
        """Has a p (not untested: a pair, and a variance to test against)."""
        return self.pairs > 0 and not math.isnan(self.p)


@dataclass(frozen=True)
class GroupEffects:
    label: str  # the comparison group ("all" with one group)
    axes: dict[str, list[str]]  # every axis of the group and its levels, in grid order
    effects: list[Effect]
    variance: Variance
    interaction: Crossed | None = None  # CROSSED's cell means, when the trained lines cross ≥ 2 levels of each


def options(line: Line) -> dict:
    """A line's flattened options: its configuration's identity (bench.report.lines.configuration: the config
    without the seed and what only changes what is kept)."""
    return flatten(json.loads(configuration(line.rows[0])))


def level_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def is_baseline(line: Line) -> bool:
    return line.config.get("loss") == UNTRAINED


def group_axes(lines: list[Line], flat: list[dict]) -> dict[str, list[str]]:
    """The options that vary among the trained lines (a baseline resets what acts only in training, so variation
    it alone brings is no choice of the grid), and the loss when only the baselines' "none" makes it vary. Each
    with its levels in order of first appearance."""
    trained = [i for i, line in enumerate(lines) if not is_baseline(line)] or list(range(len(lines)))
    columns = list(dict.fromkeys(c for f in flat for c in f))
    out = {}
    for c in columns:
        among = range(len(lines)) if c == "loss" else trained
        levels = list(dict.fromkeys(level_text(flat[i].get(c, ABSENT)) for i in among))
        if len(levels) > 1:
            out[c] = levels
    return out


def following(axis: str, axes: dict[str, list[str]], lines: list[Line], flat: list[dict]) -> set[str]:
    """A plugin's own arguments that go with its level (backbone_args.* with the backbone, …): those with one value
    per level among the trained lines (Koch's CNN at 65 px, conv4 at 28 px). Arguments that vary within a level
    are a choice of their own and are matched like any other option."""
    prefix = PLUGIN_ARGS.get(axis)
    if prefix is None:
        return set()
    trained = [f for line, f in zip(lines, flat) if not is_baseline(line)] or flat
    out = set()
    for c in (c for c in dict.fromkeys(k for f in flat for k in f) if c.startswith(prefix)):
        per_level: dict[str, set] = {}
        for f in trained:
            per_level.setdefault(level_text(f.get(axis, ABSENT)), set()).add(level_text(f.get(c, ABSENT)))
        if all(len(v) == 1 for v in per_level.values()):
            out.add(c)
    return out


def _keys(lines: list[Line], flat: list[dict], drop: set[str]) -> tuple[list[str], list[str]]:
    """Per line, what a pair must share: every option but the dropped ones and the speed environment (a trained
    line's key), and what an untrained baseline shares with trained lines less the dropped ones (its key; a
    trained line's too, for pairing it with a baseline)."""
    full, untrained = [], []
    for line, f in zip(lines, flat):
        full.append(json.dumps({**{k: v for k, v in f.items() if k not in drop}, " speed env": line.speed_env}, sort_keys=True))
        u = flatten(json.loads(untrained_key(line.config, line.distance)))
        untrained.append(json.dumps({k: v for k, v in u.items() if k not in drop}, sort_keys=True))
    return full, untrained


def matched_pairs(axis: str, level: str, reference: str, lines: list[Line], flat: list[dict], keys: tuple[list[str], list[str]]) -> list[tuple[int, int]]:
    """(level line, reference line) index pairs identical in every other option (`keys`: `_keys` less the axis and
    what goes with it). An untrained baseline pairs only on the loss axis, with a trained line (loss = "none" against
    a loss), matched on what it shares with trained lines: two baselines differ in no choice of training, so their
    difference is no effect of one (it would mix an untrained comparison into a trained effect). Only in a group of
    baselines alone do they pair with each other, on that shared key."""
    full, untrained = keys
    alone = all(is_baseline(line) for line in lines)
    at = [[i for i, f in enumerate(flat) if level_text(f.get(axis, ABSENT)) == v] for v in (level, reference)]
    pairs = []
    for i in at[0]:
        for j in at[1]:
            base = is_baseline(lines[i]) + is_baseline(lines[j])
            if base == 0:
                match = full[i] == full[j]
            else:
                match = (axis == "loss" if base == 1 else alone) and untrained[i] == untrained[j]
            if match:
                pairs.append((i, j))
    return pairs


def testable(line: Line, metric: str) -> bool:
    """≥ 2 ok seeds with a value, or seeds that are copies of one run (a fixed value with no seed variance)."""
    n = len(values(line, metric))
    return n >= 2 or (n >= 1 and identical_seeds(line))


def contrast_of(weights: dict[int, float], lines: list[Line], metric: str, load, boot: ItemBootstrap):
    """The contrast Σ c_l · line l with its method text: paired over the test items when every line has per-item
    scores of one material, else from the seeds alone."""
    involved = list(weights)
    vals = {i: values(lines[i], metric) for i in involved}
    fixed = {i: identical_seeds(lines[i]) for i in involved}
    items = {i: line_items(lines[i], metric, load) for i in involved} if load else {}
    if items and shared_material(*items.values()) is not None:
        c = contrast([(id(lines[i]), items[i], vals[i], fixed[i]) for i in involved], [weights[i] for i in involved], boot)
        return c, f"paired, {c.items:,} items" + ("" if c.tested else f" ({c.method})")
    c = contrast_seeds([(vals[i], fixed[i]) for i in involved], [weights[i] for i in involved])
    return c, SEEDS_ONLY + ("" if c.method == "seeds" else f" ({c.method})")


def estimate(
    axis: str, level: str, reference: str, pairs: list[tuple[int, int]], lines: list[Line], metric: str, load=None, boot: ItemBootstrap | None = None
) -> Effect:
    """The contrast Σ_pairs (level line − reference line) / k with its interval (`contrast_of`), signed so that
    positive is better; each pair's own difference and variance, their heterogeneity, and when the pairs disagree
    beyond their own noise (τ² > 0) the interval random over pairs (`random_over_pairs`)."""
    boot = boot or ItemBootstrap()
    k = len(pairs)
    weights: dict[int, float] = {}
    for i, j in pairs:
        weights[i] = weights.get(i, 0.0) + 1.0 / k
        weights[j] = weights.get(j, 0.0) - 1.0 / k
    c, method = contrast_of(weights, lines, metric, load, boot)
    own = [c] if k == 1 else [contrast_of({i: 1.0, j: -1.0}, lines, metric, load, boot)[0] for i, j in pairs]
    sign = better(metric)
    diffs = [sign * pair.estimate for pair in own]
    tau2, i2 = heterogeneity(diffs, [pair.se**2 for pair in own])
    low, high, p = c.low, c.high, c.p
    if c.tested and k >= 2 and tau2 > 0:
        r = random_over_pairs(c, tau2, k)
        low, high, p = r.low, r.high, r.p
        method = f"{RANDOM} · {method}"
    est, (low, high) = sign * c.estimate, sorted((sign * low, sign * high))
    agree = sum(1 for d in diffs if np.sign(d) == np.sign(est))
    return Effect(axis, level, reference, k, est, low, high, p, method, agree, smallest=min(diffs), largest=max(diffs), tau2=tau2, i2=i2)


# --- between matched pairs: how much an effect's pairs disagree -------------------------------------------------


def heterogeneity(differences: list[float], own: list[float]) -> tuple[float, float]:
    """(τ², I²) of k pair differences d_i with their own variances v_i (moment estimates): τ² = max(0, s²(d) − v̄),
    the spread of the pairs' true differences beyond their own noise, and I² = τ² / (τ² + v̄), the share of the
    pairs' spread it makes (0 when both are 0); (NaN, NaN) with one pair or a v_i unknown."""
    d, v = np.asarray(differences, float), np.asarray(own, float)
    if len(d) < 2 or not np.isfinite(v).all():
        return math.nan, math.nan
    within = float(v.mean())
    tau2 = max(0.0, float(np.var(d, ddof=1)) - within)
    return tau2, tau2 / (tau2 + within) if tau2 + within > 0 else 0.0


def random_over_pairs(c: Comparison, tau2: float, k: int) -> Comparison:
    """The mean over k pairs `c` with its interval counting that their true differences vary with τ² (the pairs'
    contexts as a sample of contexts): variance se² + τ²/k, Welch–Satterthwaite's df over the two parts (the
    contrast's own df for se², k − 1 for τ²/k) — bench.report.paired.interval with those two parts."""
    return interval(c.estimate, 0.0, [(c.se**2, c.df), (tau2 / k, k - 1)], c.method, c.items, c.seed_spread)


def contexts(pairs: list[tuple[int, int]], lines: list[Line], flat: list[dict], axes: dict[str, list[str]], skip: set[str]) -> str:
    """What an effect averages over: each axis of the group but those in `skip` (the effect's own and the plugin
    arguments that go with a plugin) with the levels its pairs' trained lines take, in grid order — an axis with one
    level says the effect is only known there."""
    used = {x for pair in pairs for x in pair if not is_baseline(lines[x])} or {x for pair in pairs for x in pair}
    out = []
    for a, levels in axes.items():
        if a not in skip:
            seen = {level_text(flat[x].get(a, ABSENT)) for x in used}
            out.append(f"{a}: {', '.join(v for v in levels if v in seen)}")
    return "; ".join(out)


def axis_effects(
    axis: str, levels: list[str], reference: str, axes: dict[str, list[str]], lines: list[Line], flat: list[dict], metric: str, load=None, boot=None
) -> list[Effect]:
    """Each level of `axis` but the reference, against it."""
    drop = {axis} | following(axis, axes, lines, flat) | ({"distance"} if axis == "eval.distance" else set())
    skip = drop | {c for a in axes if a != axis for c in following(a, axes, lines, flat)}
    ok = [testable(line, metric) for line in lines]
    single = [len(values(line, metric)) == 1 and not ok[i] for i, line in enumerate(lines)]
    keys = _keys(lines, flat, drop)
    out = []
    for level in (v for v in levels if v != reference):
        every = matched_pairs(axis, level, reference, lines, flat, keys)
        pairs = [(i, j) for i, j in every if ok[i] and ok[j]]
        one_seed = len({x for pair in every for x in pair if single[x]})
        if pairs:
            out.append(
                replace(
                    estimate(axis, level, reference, pairs, lines, metric, load, boot), one_seed=one_seed, contexts=contexts(pairs, lines, flat, axes, skip)
                )
            )
        else:
            out.append(Effect(axis, level, reference, 0, one_seed=one_seed, why=_why(axis, level, reference, axes, flat, drop, every)))
    return out


def _why(axis: str, level: str, reference: str, axes: dict[str, list[str]], flat: list[dict], drop: set[str], every: list) -> str:
    """Why a level has no matched pair: only lines with one seed match, or other axes whose values never overlap
    between the level's lines and the reference's, or (neither) no line differs from a reference line in this alone."""
    if every:
        return "no pair with ≥ 2 seeds on both sides"
    at = [[f for f in flat if level_text(f.get(axis, ABSENT)) == v] for v in (level, reference)]
    also = [a for a in axes if a not in drop and not ({level_text(f.get(a, ABSENT)) for f in at[0]} & {level_text(f.get(a, ABSENT)) for f in at[1]})]
    if also:
        return f"never varied alone: also differs in {', '.join(also)}"
    return "no line differs from a reference line in this option alone"


def effects(
    rows: list[Row],
    metric: str,
    axes: list[str] | None = None,
    references: dict[str, str] | None = None,
    interactions: list[tuple[str, str]] | None = None,
    load=None,
) -> list[GroupEffects]:
    """Per comparison group of the rows' (current) lines: the effect of each level of each axis against its
    reference (the first level in grid order, or `references[axis]`), and the variance table (with `interactions`,
    or None: every two-way interaction the design allows). `axes` restricts the effects to those named; `load(row)`
    gives a row's items dict (bench.items.read_items), or None.
    Unknown or non-varying axes, unknown levels and interactions of non-axes are one-line UserErrors."""
    found = lines_of(current(as_rows(rows)))
    groups = [(label, [found[i] for i in members]) for label, members in comparison_groups(found)]
    flats = {label: [options(line) for line in lines] for label, lines in groups}
    all_axes = {label: group_axes(lines, flats[label]) for label, lines in groups}
    varying = list(dict.fromkeys(a for g in all_axes.values() for a in g))
    levels = {a: list(dict.fromkeys(v for g in all_axes.values() for v in g.get(a, ()))) for a in varying}
    named = _check(axes, references or {}, interactions or [], varying, levels, flats)
    boot = ItemBootstrap()
    out = []
    for label, lines in groups:
        group = all_axes[label]
        found_effects = []
        for axis in (a for a in named if a in group):
            reference = (references or {}).get(axis)
            reference = reference if reference in group[axis] else group[axis][0]
            found_effects += axis_effects(axis, group[axis], reference, group, lines, flats[label], metric, load, boot)
        trained = [line for line in lines if not is_baseline(line)] or lines
        data = observations(trained, list(group), metric)
        model = [a for a in group if data[a].nunique() > 1]
        notes = [UNTRAINED_NOTE] if len(trained) < len(lines) else []
        pairs = None if interactions is None else [(a, b) for a, b in interactions if a in model and b in model]
        notes += [
            f"{a} × {b} is not in this group's model: {', '.join(x for x in (a, b) if x not in model)} does not vary among its trained lines."
            for a, b in interactions or []
            if (a, b) not in pairs
        ]
        out.append(
            GroupEffects(
                label, group, found_effects, variance(data, model, pairs, shown=named, notes=notes), interaction(data, model, named, group, lines, flats[label])
            )
        )
    return out


def interaction(data: pd.DataFrame, model: list[str], named: list[str], group: dict[str, list[str]], lines: list[Line], flat: list[dict]) -> Crossed | None:
    """CROSSED's cells (bench.report.variance.crossed) when both axes are in the model and asked for, the other
    options held at a setting every cell shares when there is one (a plugin's own arguments go with it)."""
    if not set(CROSSED) <= set(model) & set(named):
        return None
    goes_with = set().union(*(following(a, group, lines, flat) for a in CROSSED))
    return crossed(data, *CROSSED, [a for a in model if a not in CROSSED and a not in goes_with])


def observations(lines: list[Line], axes: list[str], metric: str) -> pd.DataFrame:
    """One row per ok seed row with a finite value: each axis's level (as text), its configuration (the line's
    index: its seeds are replicates of one configuration) and the value `y`."""
    out = []
    for n, line in enumerate(lines):
        f = options(line)
        for r in line.ok:
            y = float(r.metric(metric, math.nan))
            if math.isfinite(y):
                out.append({**{a: level_text(f.get(a, ABSENT)) for a in axes}, CONFIGURATION: n, "y": y})
    return pd.DataFrame(out, columns=[*axes, CONFIGURATION, "y"])


def _check(axes, references: dict[str, str], interactions, varying: list[str], levels: dict, flats: dict) -> list[str]:
    """The axes to report (all that vary, or those named), after checking every name the user gave."""
    options_seen = {c for flat in flats.values() for f in flat for c in f}
    listing = ", ".join(varying) or "(none: every line has the same options)"

    def axis(name: str, flag: str) -> None:
        if name not in varying:
            why = "does not vary among these lines" if name in options_seen else "is not an option of these rows"
            raise UserError(f"{flag} {name!r} {why} — axes that vary: {listing}")

    for name in axes or []:
        axis(name, "--axes")
    for name, level in references.items():
        axis(name, "--reference")
        if level not in levels[name]:
            raise UserError(f"--reference {name}={level}: no line has {name} = {level!r} — its levels: {', '.join(levels[name])}")
    for a, b in interactions:
        axis(a, "--interaction")
        axis(b, "--interaction")
    return list(dict.fromkeys(axes)) if axes else varying


# --- markdown and the forest plot ------------------------------------------------------------------------------


def markdown(groups: list[GroupEffects], metric: str, title: str = "") -> str:
    """The legend, then per comparison group the effects table and the variance table."""
    direction = "lower" if lower_is_better(metric) else "higher"
    out = [f"# Effects: {_escape(title)}" if title else "# Effects", "", f"On **{metric}** ({direction} is better; an effect > 0 is better). " + LEGEND, ""]
    for g in groups:
        if len(groups) > 1:
            out += [f"### {_escape(g.label)}", ""]
        out += _effects_table(g.effects) + [""]
        if any(SEEDS_ONLY in e.method for e in g.effects):
            out += [
                "seeds only: these rows have no per-item files (of this metric, for every line involved), so the "
                "interval counts the seeds' spread, not the test items' noise.",
                "",
            ]
        out += _variance_table(g.variance, metric) + [""]
        out += _interaction_table(g, metric)
    return "\n".join(out).rstrip("\n") + "\n"


LEGEND = (
    "*effect*: the mean over matched pairs (lines identical in every other option; a plugin's own arguments go "
    "with it) of line − reference line; the reference is the first level in grid order unless --reference names "
    "one. An untrained baseline pairs only on the loss axis (loss none against a trained loss, matched on what it "
    "shares with trained lines): two baselines differ in no choice of training. *contexts*: the levels of the "
    "other axes those pairs cover — the effect is an average over these and says nothing of the rest. "
    "*[95 %]* and *p*: that contrast paired over the test items every line scored (per-item files: a bootstrap "
    "of the items plus the seeds' variance), else from the seeds alone; *random over pairs* when the pairs "
    "disagree beyond their own noise (τ² > 0): the interval then also counts the spread of the pairs' true "
    "differences, τ²/k with k − 1 degrees of freedom, as if the contexts were a sample of contexts. *p (Holm)* "
    "corrects p for the number of effects in the table (read that one when you scan the table for anything "
    "significant); *untested*: no variance to test against. Lines with one ok seed are left out. *sign agrees*: "
    "pairs whose own difference has the effect's sign. *pairs range · I²*: the smallest and largest pair's own "
    "difference, and I² = τ² / (τ² + mean variance of a pair's own difference), τ² = max(0, variance of the "
    "pairs' differences − that mean): the share of their spread that is real disagreement, not noise."
)


def _effects_table(found: list[Effect]) -> list[str]:
    if not found:
        return ["No axis varies among these lines."]
    out = [
        "| axis | level vs reference | matched pairs | contexts | effect [95 %] | p | p (Holm) | sign agrees | pairs range · I² | method |",
        "|---|---|---:|---|---|---:|---:|---|---|---|",
    ]
    corrected = holm([e.p if e.pairs else math.nan for e in found])
    for e, p_holm in zip(found, corrected):
        left = f" ({e.one_seed} line{'s' * (e.one_seed != 1)} left out: 1 seed)" if e.one_seed else ""
        if e.tested:
            cells = [
                e.contexts,
                f"{signed(e.estimate)} [{signed(e.low)}, {signed(e.high)}]",
                _p(e.p),
                _p(p_holm),
                f"{e.agree} of {e.pairs}",
                _spread(e),
                e.method + left,
            ]
        elif e.pairs:
            cells = [e.contexts, f"{signed(e.estimate)} (untested)", ABSENT, ABSENT, f"{e.agree} of {e.pairs}", _spread(e), e.method + left]
        else:
            cells = [ABSENT] * 6 + [e.why + left]
        out.append("| " + " | ".join(_escape(c) for c in [e.axis, f"{e.level} vs {e.reference}", str(e.pairs), *cells]) + " |")
    return out


def _interaction_table(g: GroupEffects, metric: str) -> list[str]:
    """The crossed axes' cell means with their intervals, and the interaction term's share of the variance."""
    c = g.interaction
    if c is None:
        return []
    (a, b), name = c.axes, " × ".join(c.axes)
    term = next((t for t in g.variance.terms if t.name == name), None)
    share = (
        f"In the model above, {name} takes {term.share:.1%} of the variance" + ("" if math.isnan(term.p) else f" ({_p(term.p)})")
        if term
        else f"{name} is not in the model above (its notes say why)"
    )
    held = (
        f"the other options held at {c.held}" if c.held else "each cell averaging the settings of the other options it ran with (no setting is in every cell)"
    )
    out = [
        f"**{name}**: the mean {metric} of each cell, {held}, with its 95 % interval from the seeds' spread; the "
        f"interaction is a difference between {b} levels that changes with the {a}. {share}.",
        "",
        f"| {a} | " + " | ".join(_escape(f"{b} {y}") for y in c.levels[1]) + " |",
        "|---|" + "---:|" * len(c.levels[1]),
    ]
    for x in c.levels[0]:
        cells = [c.cell(x, y) for y in c.levels[1]]
        out.append(
            f"| {_escape(x)} | "
            + " | ".join(f"{_n(k.mean)} [{_n(k.low)}, {_n(k.high)}]" if math.isfinite(k.low) else f"{_n(k.mean)} (untested)" for k in cells)
            + " |"
        )
    if c.left_out:
        out += ["", f"Left out of these cells, as not run with every level of the other axis: {_escape(', '.join(c.left_out))}."]
    return out + [""]


def _spread(e: Effect) -> str:
    """ "−0.016 … +0.230 · I² 87 %"; one pair's own difference alone."""
    if e.pairs == 1:
        return signed(e.smallest)
    return f"{signed(e.smallest)} … {signed(e.largest)} · I² " + (ABSENT if math.isnan(e.i2) else f"{100 * e.i2:.0f} %")


def _variance_table(v: Variance, metric: str) -> list[str]:
    out = [
        f"Share of the variance of {metric} over {v.observations} seed rows (statsmodels OLS on the axes and the "
        "interactions the notes name; type-II ANOVA). *replicates*: the seeds' spread around their own "
        "configuration's mean, Σ (y − configuration mean)² (part of the residual; no F):",
        "",
    ]
    if v.terms:
        out += ["| term | share of SS | sum of squares | df | F | p |", "|---|---:|---:|---:|---:|---:|"]
        for t in v.terms:
            out.append(
                "| "
                + " | ".join(
                    [
                        _escape(t.name),
                        f"{t.share:.1%}",
                        f"{t.sum_sq:.4g}",
                        f"{t.df:g}",
                        ABSENT if math.isnan(t.F) else f"{t.F:.3g}",
                        ABSENT if math.isnan(t.p) else _p(t.p),
                    ]
                )
                + " |"
            )
        out.append("")
    said = [f"Design: {v.design}." if v.design else "", *v.notes]
    if v.terms and not v.design.endswith(BALANCED):
        said.append(
            "The design is not complete and balanced: each type-II sum of squares is adjusted for every term "
            "that does not contain it, so the shares depend on that adjustment and do not add up to 1."
        )
    return out + [_escape(" ".join(s for s in said if s))]


def forest(groups: list[GroupEffects], metric: str):
    """A matplotlib Figure (Agg canvas, no pyplot): per comparison group a panel with one row per (axis, level), the
    effect and its 95 % interval (coloured by how it was computed), and a vertical line at 0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [(g, [e for e in g.effects if e.pairs]) for g in groups]
    shown = [(g, found) for g, found in shown if found]
    if not shown:
        raise UserError("no effect has a matched pair: nothing to plot — drop --plot")
    labels = [_label(e) for _, found in shown for e in found]
    width = 5.5 + 0.075 * max(map(len, labels))
    figure = Figure(figsize=(width, 1.2 + 0.32 * len(labels) + 0.6 * len(shown)), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(len(shown), 1, squeeze=False, height_ratios=[len(found) + 1 for _, found in shown])[:, 0]
    direction = "lower" if lower_is_better(metric) else "higher"
    figure.suptitle(f"Effect on {metric} ({direction} is better; > 0 is better): mean over matched pairs, 95 % interval", fontsize="medium")
    for axes, (g, found) in zip(panels, shown):
        y = np.arange(len(found))
        colours = ["C2" if e.method.startswith(RANDOM) else "C0" if e.method.startswith("paired") else "C1" for e in found]
        tested = [n for n, e in enumerate(found) if e.tested]  # an untested effect: its point, no interval
        axes.hlines(y[tested], [found[n].low for n in tested], [found[n].high for n in tested], colors=[colours[n] for n in tested], linewidth=2)
        axes.scatter([e.estimate for e in found], y, c=colours, zorder=3)
        axes.axvline(0.0, color="grey", linewidth=0.8)
        axes.set_yticks(y, [_label(e) for e in found], fontsize="small")
        axes.invert_yaxis()
        axes.grid(axis="x", alpha=0.3)
        if len(shown) > 1:
            axes.set_title(g.label, fontsize="small")
    panels[-1].set_xlabel(f"effect on {metric} (blue: paired over test items; orange: seeds only; green: random over pairs, which disagree)")
    return figure


def _label(e: Effect) -> str:
    return f"{e.axis}: {e.level} vs {e.reference} ({e.pairs} pair{'s' * (e.pairs != 1)})"


def _n(x: float) -> str:
    return f"{x:.3f}".replace("-", "−")


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _escape(value) -> str:
    return str(value).replace("|", "\\|")

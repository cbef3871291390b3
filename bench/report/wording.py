"""The sentences every view of a leaderboard shares (the markdown table, the HTML page, MLflow): the rules
above the tables, the verdict line, the notes under a group, the verdict columns as cells. Pure functions of
the table model (bench.report.table)."""

from __future__ import annotations

import json
import math

import pandas as pd

from bench.config import UNTRAINED
from bench.config.metrics import lower_is_better
from bench.report.budget import budget_sentence
from bench.report.lines import ABSENT
from bench.report.table import FIRST_KEYS, STARVED, VERDICTS, metric_columns, shown_value
from bench.report.verdicts import (
    ALPHA,
    NOT_SEPARATED,
    TARGET,
    UNTESTED_COMPARISON,
    signed,
)
from bench.report.verdicts import UNTESTED as UNTESTED_TEXT
from bench.results import CONTENDED

CONTENDED_RULE = (
    f" *contended*: a seed whose max_seconds clock ran while its threads waited for a core at least {CONTENDED:.0%} of "
    "the time they were runnable (another process held the cores): it bought fewer steps than its share of "
    "the machine would have; `bench run --rerun contended` runs such cells again."
)


def rules(frame: pd.DataFrame, metric: str) -> str:
    """The paragraph above the tables: how to read them, with the RULES that act in `frame` (one per column or mark)."""
    verdicts = mark_columns(frame)
    groups = list(dict.fromkeys(frame["group"])) if "group" in frame else ["all"]
    better = "lower" if lower_is_better(metric) else "higher"
    shown_rules = [c for c in ("groups", "distance", "speed_env", "identical", *verdicts, "se") if _applies(c, frame, verdicts, groups)]
    return (
        f"Sorted by **{metric}** ({better} is better); mean ± std over the ok seeds. {ABSENT}: the configuration "
        "has no such option. Seeds that failed or diverged are counted in *ok / seeds* and named in *not ok*; *steps* "
        "is the least–most over the ok seeds, and *stopped by* names a seed the max_seconds clock stopped at under "
        f"{STARVED:.0%} of its line's most steps (a loaded or slower machine, not the method)."
        + (CONTENDED_RULE if frame["stopped_by"].str.contains(": contended)", regex=False).any() else "")
        + "".join(RULES[c].format(metric=metric, absent=ABSENT, alpha=ALPHA, target=_target(frame)) for c in shown_rules)
        + (AUC_ITEMS if metric == "verification_roc_auc" and "vs_best" in verdicts else "")
    )


def group_notes(part: pd.DataFrame, metric: str) -> list[str]:
    """What every view says under one comparison group's table, as markdown lines: the ranking along the budget, the
    metrics NaN on every line and why, and the arithmetic environments when its rows ran in more than one."""
    notes = [said] if (said := budget_text(part, metric)) else []
    notes += [f"*{m} is NaN on every line of this table*: {escape_md(why)}" for m, why in nan_metrics(part)]
    return notes + ([said] if (said := numerics_note(part)) else [])


RULES = {  # one sentence per rule that acts in the tables, for the paragraph above them
    "groups": " Lines are ranked and tested only within a *comparison group*: the lines that score the same test material "
    "the same way (dataset and its arguments, split, evaluation options but the distance, which is part of the "
    "method); one table per group, headed by the options that differ between groups.",
    "distance": " *distance*: what the line was scored with (metrics.distance).",
    "speed_env": " *speed env*: device, torch threads, CPU model and precision. Seeds stopped by max_seconds on different "
    "ones are separate lines (a second buys different training on each), and so are seeds that ran in different "
    "precisions (bf16 and fp32 are different arithmetic); other seeds bound by steps or samples pool.",
    "identical": " *(1 distinct value)*: every metric of every ok seed is bit-identical (nothing depended on the seed): one observation, not n.",
    "vs_best": " *vs best*: the best is the best mean of the group among lines with ≥ 2 ok seeds (or identical seeds); "
    "every other such line is compared with it, *paired* over the test items both scored (the same images, "
    "episodes and verification pairs: a bootstrap of the items plus the seeds' variance) when every line kept "
    "per-item files, else from the seeds alone (*Welch*; *1-sample* against a line of identical seeds). The best "
    "was picked from the same data, so each interval is *simultaneous*: one max-type critical value over every "
    "pair of the group's tested lines (a studentized range of their joint law), and P(any line wrongly called "
    "below) ≤ {alpha} whichever line came out best. *below*: its interval excludes 0; *not separated*: these "
    "data cannot tell it from the best (not *equal*: read its detectable Δ); *equivalent (±δ)*: its interval "
    "lies inside ±δ, the margin the grid's [report] equivalence set; *untested*: one seed, or no variance "
    "(identical seeds without per-item files). p_adj is the family's adjusted p (< {alpha} exactly when below). "
    "The family is one metric: the other metrics' columns are not tested.",
    "vs_best_delta": " *Δ vs best*: line − best in {metric}'s units with its simultaneous 95% interval (the verdict's own critical value).",
    "detectable": " *detectable Δ*: the smallest true difference that comparison would call below with 80% power at "
    "the family's critical value; for a line not separated, about how many seeds per line would detect a "
    "true difference of {target} (the grid's [report] target) at that level, or that the test items' own "
    "noise is larger than it (more seeds cannot).",
    "gain_vs_untrained": " *gain vs untrained*: {metric} minus that of the untrained backbone (loss none) with the same "
    "backbone, input, data, split, evaluation and precision, scored with the same distance ({absent} where "
    "there is none); positive is better.",
    "still_improving": " *still improving*: each seed's {metric} at the full budget minus at half of it, paired by seed: with "
    "≥ 3 seeds yes when the mean gain is > 0 by a one-sided one-sample t-test (p < {alpha}), with 2 only "
    "when both gain, untested with 1 (or with identical seeds: one run).",
    "selected": ' *selected*: the fraction of the budget whose checkpoint train.select = "best" scored.',
    "tuned": " *tuned*: the options a [search] chose, its best trial's validation score (trials never saw the test split), "
    "then run on every seed and scored on test; {absent}: the grid's own values.",
    "se": " (se …): the standard error over episodes of one seed's score, averaged over the seeds (not a score itself).",
}


AUC_ITEMS = (
    " *verification_roc_auc*: the Δ tested is the rows' own (every scored pair); its item part is a bootstrap of "
    "the 5,000 pairs each cell keeps in its per-item file, a subsample of those pairs (so if anything a larger "
    "item variance than the full AUC's)."
)


def _applies(rule: str, frame: pd.DataFrame, verdicts: dict, groups: list) -> bool:
    if rule == "groups":
        return len(groups) > 1
    if rule in ("distance", "speed_env"):
        return rule in frame
    if rule == "identical":
        return bool(frame.get("identical_seeds", pd.Series(dtype=bool)).any())
    if rule == "se":
        return any(c.endswith("_se") for c in frame.columns)
    return rule in verdicts


def mark_columns(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The verdict columns as markdown cells, leaving out those that say nothing (all "—", or no best to compare to)."""
    cells = {c: [str(v) for v in frame[c]] for c in ("still_improving", "selected", "tuned") if c in frame}
    if "vs_best" in frame:
        cells["vs_best"] = [_versus(r) for _, r in frame.iterrows()]
        cells["vs_best_delta"] = [
            ABSENT if math.isnan(r["vs_best_delta"]) else f"{signed(r['vs_best_delta'])} [{signed(r['vs_best_low'])}, {signed(r['vs_best_high'])}]"
            for _, r in frame.iterrows()
        ]
        cells["detectable"] = [_detectable(r) for _, r in frame.iterrows()]
    if "gain_vs_untrained" in frame:
        cells["gain_vs_untrained"] = [
            "(baseline)" if loss == shown_value(UNTRAINED) else ABSENT if math.isnan(g) else signed(g)
            for loss, g in zip(frame["loss"], frame["gain_vs_untrained"])
        ]
    shown = {c: v for c, v in cells.items() if any(x != ABSENT for x in v)}
    if "best" not in shown.get("vs_best", []):  # nothing had 2 seeds: a column of "untested" alone is noise
        for c in ("vs_best", "vs_best_delta", "detectable"):
            shown.pop(c, None)
    if "gain_vs_untrained" in shown and not any(x not in (ABSENT, "(baseline)") for x in shown["gain_vs_untrained"]):
        shown.pop("gain_vs_untrained")  # baselines with nothing trained beside them
    return {c: shown[c] for c in VERDICTS if c in shown}


def _p(p: float, name: str = "p") -> str:
    return f"{name}<0.001" if p < 0.001 else f"{name}={p:.2g}"


def _target(frame: pd.DataFrame) -> str:
    return f"{frame['resolve_target'].iloc[0]:g}" if "resolve_target" in frame and len(frame) else f"{TARGET:g}"


def _versus(r) -> str:
    """ "not separated (paired, 3,120 items, p_adj=0.41)", "below (Welch, p_adj<0.001)", "best", "untested (1 seed)"."""
    if math.isnan(r.get("vs_best_p_adj", math.nan)):
        return str(r["vs_best"]) + (f" ({r['vs_best_test']})" if r["vs_best"] == UNTESTED_COMPARISON else "")
    return f"{r['vs_best']} ({r['vs_best_test']}, {_p(r['vs_best_p_adj'], 'p_adj')})"


def _detectable(r) -> str:
    """ "0.025": the smallest difference the comparison detects (80 % power at the family's level); for a line not
    separated, what more seeds would do for the target difference: "≈ 8 seeds detect 0.02", or "0.02 is within the
    item noise" when no number of seeds would."""
    if math.isnan(r["detectable"]):
        return ABSENT
    text = f"{r['detectable']:.3f}"
    if r["vs_best"] == NOT_SEPARATED:
        need, target = r["seeds_to_resolve"], f"{r.get('resolve_target', TARGET):g}"
        if not math.isnan(need):
            text += f" (≈ {int(need)} seeds detect {target})"
        elif str(r["vs_best_test"]).startswith("paired"):
            text += f" ({target} is within the item noise: not by seeds)"
    return text


NOTE_OF = (
    ("few_shot_", "_within_", "few_shot_within_note"),
    ("few_shot_", "", "few_shot_note"),
    ("verification_", "", "verification_note"),
    ("", "", "retrieval_note"),
)  # (prefix, infix, the note that says why)


def nan_metrics(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, why) for each shown metric that is NaN on every line of `frame` with ok seeds, the why taken from
    the rows' own note (the evaluator's one line, which names the grid option to change)."""
    out = []
    ok = frame[frame["ok"] > 0] if "ok" in frame else frame
    for m in metric_columns(ok):
        if len(ok) and ok[f"{m}_mean"].isna().all():
            key = next(note for prefix, infix, note in NOTE_OF if m.startswith(prefix) and infix in m)
            notes = {json.loads(n).get(key) for n in ok.get("notes", [])} - {None}
            out.append((m, "; ".join(sorted(notes)) or "no row says why"))
    return out


def numerics_note(frame: pd.DataFrame) -> str:
    """A line under a group's table when its ok rows ran in more than one arithmetic environment (device, torch
    threads, CPU model, precision), with how many rows ran in each: a result moves with these (docs/speed.md: *Results
    that move with the thread count*), so a difference between lines run apart is not only the method's."""
    found: dict[str, int] = {}
    for text in frame.get("numerics", []):
        for label, n in json.loads(text).items():
            found[label] = found.get(label, 0) + n
    if len(found) < 2:
        return ""
    where = "; ".join(f"{escape_md(label)}: {n} row{'s' if n > 1 else ''}" for label, n in sorted(found.items()))
    return (
        f"*numerics*: these rows ran in {len(found)} arithmetic environments ({where}). The same cell and seed give "
        "different numbers at another thread count, CPU or precision (docs/speed.md: *Results that move with the thread "
        "count*): a difference between lines that ran apart is partly the environment's."
    )


def line_names(frame: pd.DataFrame) -> list[str]:
    """ "#3 conv4 · triplet": each line of one group's table (its index reset) by its rank — the table's # — and the
    first keys that tell the group's lines apart; the verdict and the budget sentence name lines alike."""
    differ = [k for k in FIRST_KEYS if frame[k].nunique() > 1] or list(FIRST_KEYS[:2])
    return [f"#{i + 1} " + " · ".join(str(r[k]) for k in differ) for i, (_, r) in enumerate(frame.iterrows())]


def budget_text(frame: pd.DataFrame, metric: str) -> str:
    """The group's ranking along its learning curves (bench.report.budget), lines named by their rank."""
    if "curve_means" not in frame:
        return ""
    frame = frame.reset_index(drop=True)
    names = line_names(frame)
    means = [{float(f): v for f, v in json.loads(c).items()} for c in frame["curve_means"]]
    return budget_sentence(means, names, metric)


def verdict(frame: pd.DataFrame, metric: str) -> str:
    """One line above a group's table: the best, the lines these data cannot separate from it (not the same as
    equal: with what the design could have detected), those equivalent within the grid's margin, and what more
    seeds would do; "" when nothing was compared."""
    if "vs_best" not in frame or "best" not in list(frame["vs_best"]):
        return ""
    frame = frame.reset_index(drop=True)
    names = line_names(frame)
    name = lambda r: names[r.name]
    best = frame[frame["vs_best"] == "best"].iloc[0]
    close = frame[frame["vs_best"] == NOT_SEPARATED]
    equivalent = frame[frame["vs_best"].astype(str).str.startswith("equivalent")]
    below = int((frame["vs_best"] == "below").sum())
    compared = below + len(close) + len(equivalent)
    untested = int(frame["vs_best"].isin([UNTESTED_TEXT, UNTESTED_COMPARISON]).sum())
    seeds = sorted({int(n) for n in frame["ok"]})
    seeds_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    text = f"**Verdict** ({metric}, {seeds_text} ok seeds per line): best **{escape_md(name(best))}** ({best[f'{metric}_mean']:.4f})"
    if close.empty and equivalent.empty:
        text += f"; every other tested line is below it (simultaneous 95 % intervals, {below} of {compared})."
    else:
        text += f"; {below} of {compared} tested lines below it (simultaneous 95 % intervals)"
        if not equivalent.empty:
            margin = equivalent["vs_best"].iloc[0].removeprefix("equivalent (").rstrip(")")
            text += f"; equivalent to it within {margin}: " + ", ".join(
                f"{escape_md(name(r))} ({signed(r['vs_best_delta'])})" for _, r in equivalent.iterrows()
            )
        if not close.empty:
            text += "; not separated from it (these data cannot tell them apart — not the same as equal): " + ", ".join(
                f"{escape_md(name(r))} ({signed(r['vs_best_delta'])}, detectable {r['detectable']:.3f})" for _, r in close.iterrows()
            )
        text += "."
        target = _target(frame)
        resolvable = [int(n) for n in close["seeds_to_resolve"] if not math.isnan(n)]
        paired_stuck = sum(1 for _, r in close.iterrows() if math.isnan(r["seeds_to_resolve"]) and str(r["vs_best_test"]).startswith("paired"))
        if resolvable:
            span = f"{min(resolvable)}" if min(resolvable) == max(resolvable) else f"{min(resolvable)}–{max(resolvable)}"
            text += f" About {span} seeds per line would detect a true difference of {target} for {len(resolvable)} of them"
            text += "." if not paired_stuck else f"; for {paired_stuck}, {target} is within what the test items resolve."
        elif paired_stuck:
            text += f" A difference of {target} is within what the test items resolve: more seeds alone would not separate them."
    if untested:
        text += f" {untested} line{'s' * (untested != 1)} untested (1 seed, or no variance)."
    return text


def mean_std(mean: float, std: float, se: float = math.nan) -> str:
    if math.isnan(mean):
        return ABSENT
    return (f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}") + ("" if math.isnan(se) else f" (se {se:.4f})")


def escape_md(value) -> str:
    return str(value).replace("|", "\\|")

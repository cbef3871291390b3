"""Result rows → a leaderboard: one line per configuration, mean ± std over its ok seeds, ranked and tested only
within its comparison group. Pure functions of rows; which rows make a line and which lines compare is
`bench.report.lines`, the judgements of a line are `bench.report.verdicts`.

Failed and diverged seeds stay visible: each line counts the seeds that ran and the ok ones, and names the
others. Beside the means, each line says (all on the sort metric, in its own direction): `vs_best` (a test
against the best line of its group, paired over shared test items when the rows kept them, with simultaneous intervals over the
group, with the difference's interval and the smallest difference the design detects), `gain_vs_untrained` (against the untrained backbone scored with the same
distance), `still_improving` (from each seed's gain over the last doubling of the budget), `selected` (the
curve point train.select = "best" scored) and `tuned` (what a [search] chose); above each group's table a verdict
line, below it the ranking along the learning curves (bench.report.budget). Trial rows (scored on
validation) are never lines, and a study's final rows are those of its latest choice.
"""
from __future__ import annotations

import json
import math
from pathlib import PurePosixPath
from urllib.parse import quote

import pandas as pd

from bench.config import UNTRAINED
from bench.errors import UserError
from bench.eval.definitions import definition, lower_is_better
from bench.run.clock import CONTENDED, contended, core_wait
from bench.report.budget import budget_sentence, curve_means
from bench.report.lines import ABSENT, comparison_groups, current, flatten, line_env, lines_of, numerics
from bench.report.verdicts import (ALPHA, NOT_SEPARATED, TARGET, UNTESTED as UNTESTED_TEXT, UNTESTED_COMPARISON, gain_vs_untrained, identical_seeds, selected, signed,
                                   still_improving, tuned, versus_best)
from bench.report.paired import ItemBootstrap

DEFAULT_METRIC = "verification_roc_auc"
SHOWN = ("verification_roc_auc", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8")
FIRST_KEYS = ("backbone", "loss", "dataset")
HEADERS = {"distance": "distance", "speed_env": "speed env"}  # key columns that are not config options → header
STARVED = 0.8  # a seed stopped by max_seconds below this share of its line's most steps is marked
CONTENDED_RULE = (f" *contended*: a seed whose max_seconds clock ran while its threads waited for a core at least {CONTENDED:.0%} of "
                  "the time they were runnable (another process held the cores): it bought fewer steps than its share of "
                  "the machine would have; `bench run --rerun contended` runs such cells again.")
TEXT_VERDICTS = ("vs_best", "vs_best_test")  # versus_best's text columns; the others are numbers (NaN where untested)
STATS = ("vs_best_test", "vs_best_delta", "vs_best_low", "vs_best_high", "vs_best_p", "vs_best_p_adj", "critical", "detectable", "seeds_to_resolve")
# the columns after the keys and metrics, in markdown order: frame column → markdown header
VERDICTS = {"vs_best": "vs best", "vs_best_delta": "Δ vs best [simultaneous 95%]", "detectable": "detectable Δ",
            "gain_vs_untrained": "gain vs untrained",
            "still_improving": "still improving", "selected": "selected", "tuned": "tuned (search)"}


def check_metric(rows: list[dict], metric: str) -> None:
    """A one-line UserError unless `metric` is a score (it has a direction) that some ok row carries."""
    carried = sorted({k for r in rows if r.get("status") == "ok" for k in r.get("metrics", {})})
    scores = [k for k in carried if (d := definition(k)) is not None and d.direction != "none"]
    if metric not in scores:
        why = "is not a score (it has no better direction)" if definition(metric) else "is not a metric of these rows"
        raise UserError(f"--metric {metric!r} {why} — use one of: {', '.join(scores) or '(no finished cells)'}")


def default_metric(rows: list[dict]) -> str:
    """The metric the rows' grid declared in [report] metric, else the metric a search in these rows optimised
    (its trial and final rows record it), else DEFAULT_METRIC; rows that disagree are a UserError asking for --metric."""
    declared = {r["report"]["metric"] for r in rows if isinstance(r.get("report"), dict) and r["report"].get("metric")}
    if len(declared) > 1:
        raise UserError(f"these rows come from grids that declare different [report] metrics ({', '.join(sorted(declared))}) — choose one with --metric")
    if declared:
        return declared.pop()
    found = {r["search"]["metric"] for r in rows if r.get("search", {}).get("metric")}
    found |= {r["config"]["trial"]["metric"] for r in rows if isinstance(r.get("config", {}).get("trial"), dict) and "metric" in r["config"]["trial"]}
    if len(found) > 1:
        raise UserError(f"these rows come from searches with different metrics ({', '.join(sorted(found))}) — choose the sort metric with --metric")
    return found.pop() if found else DEFAULT_METRIC


def table(rows: list[dict], metric: str = DEFAULT_METRIC, items=None, equivalence: float | None = None,
          target: float | None = None) -> pd.DataFrame:
    """One line per configuration: mean and std over ok seeds per shown metric, seed counts, failures, verdicts.
    `items(row)` gives a row's per-item outcomes (bench.items.reader); without it comparisons use seeds alone.
    `equivalence` and `target` default to the rows' own [report] options (`report_options`)."""
    return ranked(rows, metric, items, equivalence, target)[0]


def report_options(rows: list[dict], equivalence: float | None = None, target: float | None = None) -> tuple[float | None, float]:
    """(equivalence margin, target difference): the arguments when given, else what the rows' grid set in [report]
    (the newest row that says), else (None, TARGET). Rows of grids that disagree are a UserError naming the flags."""
    said = {json.dumps({k: v for k, v in r["report"].items() if k in ("equivalence", "target")}, sort_keys=True)
            for r in rows if isinstance(r.get("report"), dict)}
    if len(said) > 1 and (equivalence is None or target is None):
        raise UserError(f"these rows come from grids with different [report] options ({'; '.join(sorted(said))}) — "
                        "choose with --equivalence and --target")
    grid = json.loads(said.pop()) if said else {}
    equivalence = equivalence if equivalence is not None else grid.get("equivalence")
    return equivalence, target if target is not None else grid.get("target", TARGET)


def ranked(rows: list[dict], metric: str = DEFAULT_METRIC, items=None, equivalence: float | None = None,
           target: float | None = None) -> tuple[pd.DataFrame, list[list[dict]]]:
    """`table`'s frame and, line for line in its order (by comparison group, then best first), the newest rows of
    each line: what the plots draw, so they rank and group exactly as the leaderboard does."""
    latest = current(rows)
    if not any(r.get("status") == "ok" for r in latest):
        return pd.DataFrame(), []
    check_metric(latest, metric)
    found = lines_of(latest)
    carried = {k for r in latest if r.get("status") == "ok" for k in r.get("metrics", {})}
    shown = [metric] + [m for m in SHOWN if m != metric and m in carried]
    equivalence, target = report_options(latest, equivalence, target)
    group, order, vs_best = _versus_best_by_group(found, metric, items, equivalence, target)
    frame = _keys_and_means(found, shown, carried).assign(
        identical_seeds=[identical_seeds(line) for line in found], group=group, **vs_best, **gain_vs_untrained(found, metric),
        still_improving=[still_improving(line, metric) for line in found], selected=[selected(line) for line in found],
        curve_means=[json.dumps(curve_means(line, metric)) for line in found],
        tuned=[tuned(line, _show) for line in found], resolve_target=target, _group=order)
    frame = frame.sort_values(f"{metric}_mean", ascending=lower_is_better(metric), na_position="last", kind="stable")
    frame = frame.sort_values("_group", kind="stable")  # groups in order of first appearance, each best first
    return frame.drop(columns="_group").reset_index(drop=True), [list(found[i].rows) for i in frame.index]


def _keys_and_means(found: list, shown: list[str], carried: set[str]) -> pd.DataFrame:
    """A frame of the lines' keys (the first keys, the options that vary, then the scored distance when lines differ
    in it and the speed environment when it split some configuration's seeds) and metrics, in `found`'s order."""
    flat = [flatten({k: v for k, v in line.config.items() if k != "seed"}) for line in found]
    columns = list(dict.fromkeys(c for f in flat for c in f))
    keys = list(FIRST_KEYS) + [c for c in columns if len({json.dumps(f.get(c, ABSENT)) for f in flat}) > 1 and c not in FIRST_KEYS]
    frame = pd.DataFrame([_line(f, line, keys, shown, carried) for f, line in zip(flat, found)])
    extra = {"distance": [line.distance or ABSENT for line in found], "speed_env": [line_env(line) for line in found]}
    extra = {k: v for k, v in extra.items() if (len(set(v) - {ABSENT}) > 1 if k == "distance" else any(line.speed_env for line in found))}
    for i, (name, cells) in enumerate(extra.items()):
        frame.insert(len(keys) + i, name, cells)
    return frame


def _versus_best_by_group(found: list, metric: str, items=None, equivalence: float | None = None,
                          target: float = TARGET) -> tuple[list[str], list[int], dict[str, list]]:
    """Each line's comparison group (its label and its order of first appearance) and the `versus_best` columns,
    tested against the best of its own group only (the family is the group's lines on this one metric)."""
    group, order = [""] * len(found), [0] * len(found)
    verdicts: dict[str, list] = {}
    boot = ItemBootstrap()
    for g, (label, members) in enumerate(comparison_groups(found)):
        for column, cells in versus_best([found[i] for i in members], metric, items, boot, equivalence, target).items():
            column_cells = verdicts.setdefault(column, [ABSENT if column in TEXT_VERDICTS else math.nan] * len(found))
            for i, value in zip(members, cells):
                column_cells[i] = value
        for i in members:
            group[i], order[i] = label, g
    return group, order, verdicts


def _line(flat: dict, line, keys: list[str], shown: list[str], carried: set[str]) -> dict:
    ok = line.ok
    out = {k: _show(flat.get(k, ABSENT)) for k in keys}
    for m in shown:
        values = pd.Series([float(r["metrics"].get(m, math.nan)) for r in ok], dtype=float)
        out[f"{m}_mean"], out[f"{m}_std"] = (values.mean(), values.std()) if len(values) else (math.nan, math.nan)
        if f"{m}_stderr" in carried:  # a standard error is shown beside its score, never as one
            out[f"{m}_se"] = pd.Series([float(r["metrics"].get(f"{m}_stderr", math.nan)) for r in ok], dtype=float).mean()
    out["seeds"] = len(line.rows)
    out["ok"] = len(ok)
    out["others"] = ", ".join(f"seed {r['config'].get('seed')}: {r.get('status')}"
                              for r in sorted(line.rows, key=_seed) if r.get("status") != "ok")
    out["numerics"] = json.dumps(numerics(line.rows), sort_keys=True)
    out["notes"] = json.dumps({k: v for r in ok for k, v in r.get("metrics", {}).items() if k.endswith("_note") and v}, sort_keys=True)
    steps = [int(r["train"]["steps"]) for r in ok]
    out["steps"] = round(sum(steps) / len(steps)) if ok else 0
    out["steps_range"] = "" if not ok else str(min(steps)) if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"
    out["stopped_by"] = ",".join(sorted({r["train"]["stopped_by"] for r in ok}))
    starved = [r for r in ok if r["train"]["stopped_by"] == "max_seconds" and r["train"]["steps"] < STARVED * max(steps)]
    if starved:  # the clock stopped a seed far short of the others: another machine's load, not the method
        out["stopped_by"] += " (" + ", ".join(f"seed {r['config'].get('seed')} at {r['train']['steps']} of {max(steps)} steps"
                                               for r in sorted(starved, key=_seed)) + ": short by the clock)"
    if busy := [r for r in ok if contended(r)]:  # the clock ran while a neighbour held the cores, even with one seed
        out["stopped_by"] += " (" + ", ".join(f"seed {r['config'].get('seed')} waited {core_wait(r):.0%}"
                                               for r in sorted(busy, key=_seed)) + " of its time for a core: contended)"
    return out


def _seed(row: dict):
    return row["config"].get("seed", 0)


def _show(value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.4g}")  # a searched value, 0.0006874266729, reads as 0.0006874
    return value if isinstance(value, str) else json.dumps(value)


# --- markdown ----------------------------------------------------------------------------------------------

def markdown(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, title: str = "") -> str:
    """The RULES above one table per comparison group (one table, unheaded, when there is one group)."""
    # Written by hand rather than DataFrame.to_markdown: that needs `tabulate`, and does not escape `|`.
    if frame.empty:
        return f"# {title}\n\nNo finished cells yet.\n"
    verdicts = mark_columns(frame)
    groups = list(dict.fromkeys(frame["group"])) if "group" in frame else ["all"]
    lines = [f"# {title}" if title else "", "", rules(frame, metric), ""]
    for group in groups:
        at = [i for i, g in enumerate(frame["group"]) if g == group] if "group" in frame else list(range(len(frame)))
        if len(groups) > 1:
            lines += [f"### {_escape(group)}", ""]
        if said := verdict(frame.iloc[at], metric):
            lines += [said, ""]
        lines += _table(frame.iloc[at], {c: [v[i] for i in at] for c, v in verdicts.items()}) + [""]
        for said in group_notes(frame.iloc[at], metric):
            lines += [said, ""]
    return "\n".join(lines).strip("\n") + "\n"


def rules(frame: pd.DataFrame, metric: str) -> str:
    """The paragraph above the tables: how to read them, with the RULES that act in `frame` (one per column or mark)."""
    verdicts = mark_columns(frame)
    groups = list(dict.fromkeys(frame["group"])) if "group" in frame else ["all"]
    better = "lower" if lower_is_better(metric) else "higher"
    shown_rules = [c for c in ("groups", "distance", "speed_env", "identical", *verdicts, "se") if _applies(c, frame, verdicts, groups)]
    return (f"Sorted by **{metric}** ({better} is better); mean ± std over the ok seeds. {ABSENT}: the configuration "
            "has no such option. Seeds that failed or diverged are counted in *ok / seeds* and named in *not ok*; *steps* "
            "is the least–most over the ok seeds, and *stopped by* names a seed the max_seconds clock stopped at under "
            f"{STARVED:.0%} of its line's most steps (a loaded or slower machine, not the method)."
            + (CONTENDED_RULE if frame["stopped_by"].str.contains(": contended)", regex=False).any() else "")
            + "".join(RULES[c].format(metric=metric, absent=ABSENT, alpha=ALPHA, target=_target(frame)) for c in shown_rules)
            + (AUC_ITEMS if metric == "verification_roc_auc" and "vs_best" in verdicts else ""))


def group_notes(part: pd.DataFrame, metric: str) -> list[str]:
    """What every view says under one comparison group's table, as markdown lines: the ranking along the budget, the
    metrics NaN on every line and why, and the arithmetic environments when its rows ran in more than one."""
    notes = [said] if (said := budget_text(part, metric)) else []
    notes += [f"*{m} is NaN on every line of this table*: {_escape(why)}" for m, why in nan_metrics(part)]
    return notes + ([said] if (said := numerics_note(part)) else [])


def _table(frame: pd.DataFrame, verdicts: dict[str, list[str]]) -> list[str]:
    """The markdown lines of one group's table; its key columns are those that vary within it."""
    metrics = metric_columns(frame)
    keys = [k for k in key_columns(frame) if k in FIRST_KEYS or varies(frame, k)]
    header = ["#", *(HEADERS.get(k, k) for k in keys), *metrics, *(VERDICTS[c] for c in verdicts), "ok / seeds", "not ok", "steps", "stopped by"]
    align = ["---:"] + ["---"] * len(keys) + ["---:"] * len(metrics) + ["---"] * len(verdicts) + ["---:", "---", "---:", "---"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for rank, (_, r) in enumerate(frame.iterrows(), 1):
        one = bool(r.get("identical_seeds", False))
        cells = [str(rank), *(_escape(r[k]) for k in keys)]
        cells += [mean_std(r[f"{m}_mean"], math.nan if one else r[f"{m}_std"], r.get(f"{m}_se", math.nan)) for m in metrics]
        cells += [_escape(verdicts[c][rank - 1]) for c in verdicts]
        cells += [f"{r['ok']} / {r['seeds']}" + (" (1 distinct value)" if one else ""), _escape(r["others"]) or "",
                  str(r.get("steps_range") or r["steps"]), _escape(r["stopped_by"])]
        out.append("| " + " | ".join(cells) + " |")
    return out


def varies(frame: pd.DataFrame, column: str) -> bool:
    """Whether a key column tells the trained lines apart: an option that differs only on untrained baselines (which
    reset what acts in training: eval.curve, train.select, model.freeze, the head) tells nothing there."""
    trained = frame[frame["loss"] != _show(UNTRAINED)] if "loss" in frame else frame
    return (trained if len(trained) else frame)[column].nunique() > 1


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metrics the frame shows (the sort metric first): those with a `<metric>_mean` column."""
    return [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean") and definition(c[: -len("_mean")]) is not None]


def key_columns(frame: pd.DataFrame) -> list[str]:
    """The frame's line columns (backbone, loss, dataset, the options that vary, the scored distance and the speed
    environment when they vary), in order."""
    tail = {"seeds", "ok", "others", "steps", "steps_range", "stopped_by", "notes", "numerics", "identical_seeds", "group", "curve_means",
            "resolve_target", *VERDICTS, *STATS}
    tail |= {f"{m}_{s}" for m in metric_columns(frame) for s in ("mean", "std", "se")}
    return [c for c in frame.columns if c not in tail and not c.startswith("untrained_")]


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the CSV holds it: a missing value is an empty cell, not the markdown's "—" or an empty list."""
    return frame.map(lambda v: "" if isinstance(v, str) and v in (ABSENT, "[]", "{}") else v)


def failures(rows: list[dict]) -> str:
    """A markdown list of the cells whose newest row is not ok: config, seed, status and the error's first
    line (a traceback's last lines say more, but one line keeps the list scannable); "" when none failed."""
    failed = [r for r in current(rows) if r.get("status") != "ok"]
    if not failed:
        return ""
    lines = [f"**Not ok** ({len(failed)} cell{'s' * (len(failed) != 1)}; newest row of each):", ""]
    for r in failed:
        c = r.get("config", {})
        error = (str(r.get("error") or "").strip().splitlines() or [""])[0]
        error = error if len(error) <= 200 else error[:199] + "…"
        what = " · ".join(str(c.get(k, ABSENT)) for k in FIRST_KEYS)
        lines.append(_escape(f"- `{r['cell_id']}` {what}, seed {c.get('seed', ABSENT)}: **{r.get('status')}**"
                             + (f" — {error}" if error else "")))
    return "\n".join(lines) + "\n"


def plot_links(paths: list[str]) -> str:
    """One markdown line linking each plot, given as paths relative to the markdown file; "" for none."""
    if not paths:
        return ""
    return "Plots: " + " · ".join(f"[{PurePosixPath(p).stem}]({quote(p)})" for p in paths) + "\n"


RULES = {  # one sentence per rule that acts in the tables, for the paragraph above them
    "groups": " Lines are ranked and tested only within a *comparison group*: the lines that score the same test material "
              "the same way (dataset and its arguments, split, evaluation options but the distance, which is part of the "
              "method); one table per group, headed by the options that differ between groups.",
    "distance": " *distance*: what the line was scored with (metrics.distance).",
    "speed_env": " *speed env*: device, torch threads, CPU model and precision. Seeds stopped by max_seconds on different "
                 "ones are separate lines (a second buys different training on each), and so are seeds that ran in different "
                 "precisions (bf16 and fp32 are different arithmetic); other seeds bound by steps or samples pool.",
    "identical": " *(1 distinct value)*: every metric of every ok seed is bit-identical (nothing depended on the seed): "
                 "one observation, not n.",
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
    "vs_best_delta": " *Δ vs best*: line − best in {metric}'s units with its simultaneous 95% interval (the verdict's own "
                     "critical value).",
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
    "selected": " *selected*: the fraction of the budget whose checkpoint train.select = \"best\" scored.",
    "tuned": " *tuned*: the options a [search] chose, its best trial's validation score (trials never saw the test split), "
             "then run on every seed and scored on test; {absent}: the grid's own values.",
    "se": " (se …): the standard error over episodes of one seed's score, averaged over the seeds (not a score itself).",
}


AUC_ITEMS = (" *verification_roc_auc*: the Δ tested is the rows' own (every scored pair); its item part is a bootstrap of "
             "the 5,000 pairs each cell keeps in its per-item file, a subsample of those pairs (so if anything a larger "
             "item variance than the full AUC's).")


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
        cells["vs_best_delta"] = [ABSENT if math.isnan(r["vs_best_delta"]) else
                                  f"{signed(r['vs_best_delta'])} [{signed(r['vs_best_low'])}, {signed(r['vs_best_high'])}]"
                                  for _, r in frame.iterrows()]
        cells["detectable"] = [_detectable(r) for _, r in frame.iterrows()]
    if "gain_vs_untrained" in frame:
        cells["gain_vs_untrained"] = ["(baseline)" if loss == _show(UNTRAINED) else ABSENT if math.isnan(g) else signed(g)
                                      for loss, g in zip(frame["loss"], frame["gain_vs_untrained"])]
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
    """"not separated (paired, 3,120 items, p_adj=0.41)", "below (Welch, p_adj<0.001)", "best", "untested (1 seed)"."""
    if math.isnan(r.get("vs_best_p_adj", math.nan)):
        return str(r["vs_best"]) + (f" ({r['vs_best_test']})" if r["vs_best"] == UNTESTED_COMPARISON else "")
    return f"{r['vs_best']} ({r['vs_best_test']}, {_p(r['vs_best_p_adj'], 'p_adj')})"


def _detectable(r) -> str:
    """"0.025": the smallest difference the comparison detects (80 % power at the family's level); for a line not
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


NOTE_OF = (("few_shot_", "_within_", "few_shot_within_note"), ("few_shot_", "", "few_shot_note"),
           ("verification_", "", "verification_note"), ("", "", "retrieval_note"))  # (prefix, infix, the note that says why)


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
    threads, CPU model, precision), with how many rows ran in each: a result moves with these (README: *Results
    that move with the thread count*), so a difference between lines run apart is not only the method's."""
    found: dict[str, int] = {}
    for text in frame.get("numerics", []):
        for label, n in json.loads(text).items():
            found[label] = found.get(label, 0) + n
    if len(found) < 2:
        return ""
    where = "; ".join(f"{_escape(label)}: {n} row{'s' if n > 1 else ''}" for label, n in sorted(found.items()))
    return (f"*numerics*: these rows ran in {len(found)} arithmetic environments ({where}). The same cell and seed give "
            "different numbers at another thread count, CPU or precision (README: *Results that move with the thread "
            "count*): a difference between lines that ran apart is partly the environment's.")


def line_names(frame: pd.DataFrame) -> list[str]:
    """"#3 conv4 · triplet": each line of one group's table (its index reset) by its rank — the table's # — and the
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
    name = lambda r: names[r.name]  # noqa: E731
    best = frame[frame["vs_best"] == "best"].iloc[0]
    close = frame[frame["vs_best"] == NOT_SEPARATED]
    equivalent = frame[frame["vs_best"].astype(str).str.startswith("equivalent")]
    below = int((frame["vs_best"] == "below").sum())
    compared = below + len(close) + len(equivalent)
    untested = int(frame["vs_best"].isin([UNTESTED_TEXT, UNTESTED_COMPARISON]).sum())
    seeds = sorted({int(n) for n in frame["ok"]})
    seeds_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    text = f"**Verdict** ({metric}, {seeds_text} ok seeds per line): best **{_escape(name(best))}** ({best[f'{metric}_mean']:.4f})"
    if close.empty and equivalent.empty:
        text += f"; every other tested line is below it (simultaneous 95 % intervals, {below} of {compared})."
    else:
        text += f"; {below} of {compared} tested lines below it (simultaneous 95 % intervals)"
        if not equivalent.empty:
            margin = equivalent["vs_best"].iloc[0].removeprefix("equivalent (").rstrip(")")
            text += (f"; equivalent to it within {margin}: "
                     + ", ".join(f"{_escape(name(r))} ({signed(r['vs_best_delta'])})" for _, r in equivalent.iterrows()))
        if not close.empty:
            text += ("; not separated from it (these data cannot tell them apart — not the same as equal): "
                     + ", ".join(f"{_escape(name(r))} ({signed(r['vs_best_delta'])}, detectable {r['detectable']:.3f})"
                                 for _, r in close.iterrows()))
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


def _escape(value) -> str:
    return str(value).replace("|", "\\|")

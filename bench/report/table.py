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

import pandas as pd

from bench.config import UNTRAINED
from bench.config.metrics import definition, lower_is_better
from bench.errors import UserError
from bench.report.budget import curve_means
from bench.report.lines import ABSENT, comparison_groups, current, flatten, line_env, lines_of, numerics
from bench.report.paired import ItemBootstrap
from bench.report.verdicts import (
    TARGET,
    gain_vs_untrained,
    identical_seeds,
    selected,
    still_improving,
    tuned,
    versus_best,
)
from bench.results import contended, core_wait
from bench.schema import Row, as_rows

DEFAULT_METRIC = "verification_roc_auc"


SHOWN = ("verification_roc_auc", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8")


FIRST_KEYS = ("backbone", "loss", "dataset")


HEADERS = {"distance": "distance", "speed_env": "speed env"}  # key columns that are not config options → header


STARVED = 0.8  # a seed stopped by max_seconds below this share of its line's most steps is marked


TEXT_VERDICTS = ("vs_best", "vs_best_test")  # versus_best's text columns; the others are numbers (NaN where untested)


STATS = ("vs_best_test", "vs_best_delta", "vs_best_low", "vs_best_high", "vs_best_p", "vs_best_p_adj", "critical", "detectable", "seeds_to_resolve")


# the columns after the keys and metrics, in markdown order: frame column → markdown header
VERDICTS = {
    "vs_best": "vs best",
    "vs_best_delta": "Δ vs best [simultaneous 95%]",
    "detectable": "detectable Δ",
    "gain_vs_untrained": "gain vs untrained",
    "still_improving": "still improving",
    "selected": "selected",
    "tuned": "tuned (search)",
}


def check_metric(rows: list[Row], metric: str) -> None:
    """A one-line UserError unless `metric` is a score (it has a direction) that some ok row carries."""
    carried = sorted({k for r in as_rows(rows) if r.ok for k in r.metrics})
    scores = [k for k in carried if (d := definition(k)) is not None and d.direction != "none"]
    if metric not in scores:
        why = "is not a score (it has no better direction)" if definition(metric) else "is not a metric of these rows"
        raise UserError(f"--metric {metric!r} {why} — use one of: {', '.join(scores) or '(no finished cells)'}")


def default_metric(rows: list[Row]) -> str:
    """The metric the rows' grid declared in [report] metric, else the metric a search in these rows optimised
    (its trial and final rows record it), else DEFAULT_METRIC; rows that disagree are a UserError asking for --metric."""
    rows = as_rows(rows)
    declared = {r.report["metric"] for r in rows if r.report and r.report.get("metric")}
    if len(declared) > 1:
        raise UserError(f"these rows come from grids that declare different [report] metrics ({', '.join(sorted(declared))}) — choose one with --metric")
    if declared:
        return declared.pop()
    found = {r.search.metric for r in rows if r.search and r.search.metric}
    found |= {r.config["trial"]["metric"] for r in rows if isinstance(r.config.get("trial"), dict) and "metric" in r.config["trial"]}
    if len(found) > 1:
        raise UserError(f"these rows come from searches with different metrics ({', '.join(sorted(found))}) — choose the sort metric with --metric")
    return found.pop() if found else DEFAULT_METRIC


def table(rows: list[Row], metric: str = DEFAULT_METRIC, items=None, equivalence: float | None = None, target: float | None = None) -> pd.DataFrame:
    """One line per configuration: mean and std over ok seeds per shown metric, seed counts, failures, verdicts.
    `items(row)` gives a row's per-item outcomes (bench.items.reader); without it comparisons use seeds alone.
    `equivalence` and `target` default to the rows' own [report] options (`report_options`)."""
    return ranked(rows, metric, items, equivalence, target)[0]


def report_options(rows: list[Row], equivalence: float | None = None, target: float | None = None) -> tuple[float | None, float]:
    """(equivalence margin, target difference): the arguments when given, else what the rows' grid set in [report]
    (the newest row that says), else (None, TARGET). Rows of grids that disagree are a UserError naming the flags."""
    said = {json.dumps({k: v for k, v in r.report.items() if k in ("equivalence", "target")}, sort_keys=True) for r in as_rows(rows) if r.report is not None}
    if len(said) > 1 and (equivalence is None or target is None):
        raise UserError(f"these rows come from grids with different [report] options ({'; '.join(sorted(said))}) — choose with --equivalence and --target")
    grid = json.loads(said.pop()) if said else {}
    equivalence = equivalence if equivalence is not None else grid.get("equivalence")
    return equivalence, target if target is not None else grid.get("target", TARGET)


def ranked(
    rows: list[Row], metric: str = DEFAULT_METRIC, items=None, equivalence: float | None = None, target: float | None = None
) -> tuple[pd.DataFrame, list[list[Row]]]:
    """`table`'s frame and, line for line in its order (by comparison group, then best first), the newest rows of
    each line: what the plots draw, so they rank and group exactly as the leaderboard does."""
    latest = current(as_rows(rows))
    if not any(r.ok for r in latest):
        return pd.DataFrame(), []
    check_metric(latest, metric)
    found = lines_of(latest)
    carried = {k for r in latest if r.ok for k in r.metrics}
    shown = [metric] + [m for m in SHOWN if m != metric and m in carried]
    equivalence, target = report_options(latest, equivalence, target)
    group, order, vs_best = _versus_best_by_group(found, metric, items, equivalence, target)
    frame = _keys_and_means(found, shown, carried).assign(
        identical_seeds=[identical_seeds(line) for line in found],
        group=group,
        **vs_best,
        **gain_vs_untrained(found, metric),
        still_improving=[still_improving(line, metric) for line in found],
        selected=[selected(line) for line in found],
        curve_means=[json.dumps(curve_means(line, metric)) for line in found],
        tuned=[tuned(line, shown_value) for line in found],
        resolve_target=target,
        _group=order,
    )
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


def _versus_best_by_group(
    found: list, metric: str, items=None, equivalence: float | None = None, target: float = TARGET
) -> tuple[list[str], list[int], dict[str, list]]:
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
    out = {k: shown_value(flat.get(k, ABSENT)) for k in keys}
    for m in shown:
        values = pd.Series([float(r.metric(m, math.nan)) for r in ok], dtype=float)
        out[f"{m}_mean"], out[f"{m}_std"] = (values.mean(), values.std()) if len(values) else (math.nan, math.nan)
        if f"{m}_stderr" in carried:  # a standard error is shown beside its score, never as one
            out[f"{m}_se"] = pd.Series([float(r.metric(f"{m}_stderr", math.nan)) for r in ok], dtype=float).mean()
    out["seeds"] = len(line.rows)
    out["ok"] = len(ok)
    out["others"] = ", ".join(f"seed {r.config.get('seed')}: {r.status}" for r in sorted(line.rows, key=_seed) if not r.ok)
    out["numerics"] = json.dumps(numerics(line.rows), sort_keys=True)
    out["notes"] = json.dumps({k: v for r in ok for k, v in r.metrics.items() if k.endswith("_note") and v}, sort_keys=True)
    steps = [int(r.train.steps) for r in ok]
    out["steps"] = round(sum(steps) / len(steps)) if ok else 0
    out["steps_range"] = "" if not ok else str(min(steps)) if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"
    out["stopped_by"] = ",".join(sorted({r.train.stopped_by for r in ok}))
    starved = [r for r in ok if r.train.stopped_by == "max_seconds" and r.train.steps < STARVED * max(steps)]
    if starved:  # the clock stopped a seed far short of the others: another machine's load, not the method
        out["stopped_by"] += (
            " ("
            + ", ".join(f"seed {r.config.get('seed')} at {r.train.steps} of {max(steps)} steps" for r in sorted(starved, key=_seed))
            + ": short by the clock)"
        )
    if busy := [r for r in ok if contended(r)]:  # the clock ran while a neighbour held the cores, even with one seed
        out["stopped_by"] += (
            " (" + ", ".join(f"seed {r.config.get('seed')} waited {core_wait(r):.0%}" for r in sorted(busy, key=_seed)) + " of its time for a core: contended)"
        )
    return out


def _seed(row: Row):
    return row.seed


def shown_value(value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.4g}")  # a searched value, 0.0006874266729, reads as 0.0006874
    return value if isinstance(value, str) else json.dumps(value)


def varies(frame: pd.DataFrame, column: str) -> bool:
    """Whether a key column tells the trained lines apart: an option that differs only on untrained baselines (which
    reset what acts in training: eval.curve, train.select, model.freeze, the head) tells nothing there."""
    trained = frame[frame["loss"] != shown_value(UNTRAINED)] if "loss" in frame else frame
    return (trained if len(trained) else frame)[column].nunique() > 1


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metrics the frame shows (the sort metric first): those with a `<metric>_mean` column."""
    return [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean") and definition(c[: -len("_mean")]) is not None]


def key_columns(frame: pd.DataFrame) -> list[str]:
    """The frame's line columns (backbone, loss, dataset, the options that vary, the scored distance and the speed
    environment when they vary), in order."""
    tail = {
        "seeds",
        "ok",
        "others",
        "steps",
        "steps_range",
        "stopped_by",
        "notes",
        "numerics",
        "identical_seeds",
        "group",
        "curve_means",
        "resolve_target",
        *VERDICTS,
        *STATS,
    }
    tail |= {f"{m}_{s}" for m in metric_columns(frame) for s in ("mean", "std", "se")}
    return [c for c in frame.columns if c not in tail and not c.startswith("untrained_")]


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the CSV holds it: a missing value is an empty cell, not the markdown's "—" or an empty list."""
    return frame.map(lambda v: "" if isinstance(v, str) and v in (ABSENT, "[]", "{}") else v)

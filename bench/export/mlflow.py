"""Result rows → what an MLflow store should hold: one parent run per leaderboard line (mean ± std over its seeds, and
the leaderboard's marks) or per search study (its trials), and one nested child run per cell. Pure functions of rows;
bench.export.mlflow_store writes them. Numbers a reader ranks or filters on are metrics (a yes/no as 0/1), the
evaluation's sizes and settings are params, nothing that is not a finite number is logged as a metric, and the rest
of a row goes into its run's artifacts (config.json, row.json), so the runs table stays narrow."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import NOT_IDENTITY
from bench.config.metrics import definition as _definition
from bench.config.metrics import lower_is_better
from bench.report.budget import curve_means
from bench.report.lines import ABSENT, as_text, configuration, current, curve_of, env_label, flatten, is_final, line_env, lines_of, speed_env
from bench.report.names import line_names as run_names  # the plots' legends' rule: short, unique names per line
from bench.report.table import FIRST_KEYS, default_metric, key_columns, ranked
from bench.results import contended, core_wait, latest_rows
from bench.schema import Env, Row, as_rows

FORMAT = "2"  # what a child run holds; a store's runs of another format are logged again (part of a cell's content key)
RUN_STATUS = {"ok": "FINISHED", "pruned": "KILLED"}  # every other status (error, oom, timeout, diverged) is FAILED
SIZE = re.compile(r"_(episodes|pairs|classes|groups|queries)\Z")  # counts of the evaluation protocol: params, not metrics
DERIVED = ("verification_different_pairs", "knn_backend")  # pairs − same pairs; which exact kNN ran: in row.json only
TRAIN = ("steps", "samples", "seconds")  # the training figures a budget is spent in; the rest stays in row.json
FIGURES = ("vs_best_delta", "vs_best_p_adj", "detectable", "gain_vs_untrained")  # <metric>/<figure>; all of them in line.json
MARKS = {
    "group": "comparison_group",
    "vs_best": "vs_best",
    "tuned": "tuned",
    "others": "other_seeds",
    "stopped_by": "stopped_by",
}  # the leaderboard's text marks a parent keeps as tags (when they say something)
definition = functools.cache(_definition)  # each row asks for the same few dozen names, and a lookup compiles regexes
VERSIONS = ("torch", "torchvision", "timm", "pytorch-metric-learning", "scikit-learn", "numpy", "pandas", "metric-bench")


@dataclass
class Parent:
    """A parent run: a leaderboard line ("line") or a search study ("study"), and the cells nested under it. `options`
    are the config options its cells are told apart by (their params besides the seed and the evaluation's sizes)."""

    kind: str
    key: str
    name: str
    cells: list[str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    start_ms: int | None = None  # its first cell's start and its last cell's end (None: when it is logged)
    end_ms: int | None = None
    options: tuple[str, ...] = FIRST_KEYS
    curve: list[tuple[str, float, int, int]] = field(default_factory=list)  # its sort metric's mean curve: key, value, step, ms
    files: dict[str, str] = field(default_factory=dict)  # artifact path → text (line.json)
    group: int = 0  # its comparison group's number (from 1, the plots' `_group<n>`); 0: one group
    figures: bool = False  # the best line of its group: its run holds the group's `bench plot` PNGs (once, not on every line)


@dataclass
class CellRun:
    """What a child run holds for one row."""

    name: str
    status: str
    start_ms: int
    end_ms: int
    params: dict[str, str]
    metrics: list[tuple[str, float, int, int]]  # key, value, step, timestamp (ms)
    tags: dict[str, str]
    checkpoint: Path | None


# --- parents -------------------------------------------------------------------------------------------------


def line_key(row: Row, speed_env: str = "") -> str:
    return hashlib.sha256(f"{configuration(row)}\n{speed_env}".encode()).hexdigest()[:16]


def study_of(row: Row) -> str:
    trial = row.config.get("trial")
    return str((row.search and row.search.study) or (trial.get("study") if isinstance(trial, dict) else "") or "unknown")


def plan(rows: list[Row], metric: str, items=None) -> list[Parent]:
    """The parent runs of these rows: one per leaderboard line (its rows grouped, ranked and marked by `ranked`, as
    `bench leaderboard` does), then one per search study holding the rows no line holds (its trials, and the finals of
    an earlier choice). Every cell's newest row is under exactly one parent; a bad `metric` is a UserError. `items`
    (bench.report.rows.items_loader) as the leaderboard's: comparisons paired over test items where rows kept them."""
    rows = as_rows(rows)
    frame, line_rows = ranked(rows, metric, items)
    ids = [frozenset(r.cell_id for r in rs) for rs in line_rows]
    marks = dict(zip(ids, (mark for _, mark in frame.iterrows())))
    labels = dict(zip(ids, run_names(frame)))
    options = option_columns(frame)
    groups = {g: n for n, g in enumerate(dict.fromkeys(frame["group"]) if len(frame) else (), 1)}
    best = {ids[i] for i in (frame.drop_duplicates("group").index if len(frame) else ())}  # each group's first line: its best
    parents = []
    for line in lines_of(current(rows)):
        cells = frozenset(r.cell_id for r in line.rows)
        parent = line_parent(line, metric, marks.get(cells), labels.get(cells), options)
        parent.group = groups.get(parent.tags.get("comparison_group"), 0) if len(groups) > 1 else 0
        parent.figures = cells in best
        if len(groups) < 2:  # one group: "all" tells no line apart
            parent.tags.pop("comparison_group", None)
        parents.append(parent)
    placed = {c for p in parents for c in p.cells}
    studies: dict[str, list[Row]] = {}
    for cell_id, row in latest_rows(rows).items():
        if cell_id not in placed:
            studies.setdefault(study_of(row), []).append(row)
    chosen = {r.search.study: r.search.trial for r in rows if is_final(r)}
    return parents + [study_parent(study, found, chosen.get(study)) for study, found in studies.items()]


def option_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The config options the leaderboard names its lines by: the first keys and every option that varies among them
    (its key columns, less the scored distance and the speed environment, which are no config options)."""
    return tuple(c for c in key_columns(frame) if c not in ("distance", "speed_env")) if len(frame) else FIRST_KEYS


def provisional(row: Row) -> Parent:
    """The parent a row goes under while a grid runs, before `plan` can see every row: its configuration's (or its
    study's) parent, with no statistics yet."""
    config = row.config
    if config.get("trial"):
        return study_parent(study_of(row), [row], None, counts=False)
    return Parent("line", line_key(row), " · ".join(str(config.get(k)) for k in FIRST_KEYS[:2]), [row.cell_id], _options(config, FIRST_KEYS))


def line_parent(line, metric: str, mark: pd.Series | None, label: str | None, options: tuple[str, ...] = FIRST_KEYS) -> Parent:
    """A line's parent run: its seeds' mean of each of their metrics under the children's own keys (the leaderboard's
    own mean where it shows one, and the sort metric's `_std` beside it), so that one column of MLflow's table ranks
    parents and children alike; the sort metric's mean learning curve under the children's curve key; the
    leaderboard's figures about the sort metric as <metric>/<figure> (still improving as 0/1), its steps range as
    train/steps_min and _max, its text marks as tags and the whole line as line.json; and the time from its first
    cell's start to its last cell's end."""
    config, ok = line.config, line.ok
    parent = Parent(
        "line",
        line_key(line.rows[0], line.speed_env),
        label or " · ".join(str(config.get(k)) for k in FIRST_KEYS[:2]),
        [r.cell_id for r in line.rows],
        _options(config, options) | _shared_protocol(ok),
        options=options,
    )
    by_key: dict[str, list[float]] = {}
    for row in ok:
        for key, value in cell_metrics(row, metric):
            by_key.setdefault(key, []).append(value)
    parent.metrics = {k: mark[f"{k}_mean"] if mark is not None and f"{k}_mean" in mark else float(np.mean(v)) for k, v in by_key.items()}
    if mark is not None:
        for column, tag in MARKS.items():
            if str(mark.get(column, ABSENT)) not in (ABSENT, ""):
                parent.tags[tag] = str(mark[column])
        parent.metrics[f"{metric}_std"] = mark.get(f"{metric}_std")
        parent.metrics |= {f"{metric}/{f}": mark[f] for f in FIGURES if f in mark}
        improving = str(mark.get("still_improving", ""))
        if improving.startswith(("yes", "no")):
            parent.metrics[f"{metric}/still_improving"] = float(improving.startswith("yes"))
        parent.metrics["identical_seeds"] = float(bool(mark.get("identical_seeds")))
        parent.files["line.json"] = json.dumps({k: _plain(v) for k, v in mark.items()}, indent=1, ensure_ascii=False)
    if ok:
        steps = [float(r.train.steps) for r in ok if _number(r.train.steps)]
        parent.metrics.update({"train/steps_min": min(steps), "train/steps_max": max(steps)} if steps else {})
        parent.curve = mean_curve(line, metric)
    parent.metrics.update(seeds=float(len(line.rows)), seeds_ok=float(len(ok)))
    parent.metrics = {k: float(v) for k, v in parent.metrics.items() if _finite(v)}
    parent.tags["speed_env"] = line_env(line)
    parent.tags |= _source(line.rows)
    spans = [_span(r) for r in line.rows]
    parent.start_ms, parent.end_ms = min(start for start, _ in spans), max(end for _, end in spans)
    return parent


def mean_curve(line, metric: str) -> list[tuple[str, float, int, int]]:
    """The line's mean learning curve of `metric` as the leaderboard averages it (`curve_means`), each point at its
    seeds' mean training step, under the key its children's curves have."""
    split, steps = None, {}
    for row in line.ok:
        on, values = curve_of(row, metric)
        split = split or on
        for point in row.curve or []:
            if (point.on or "val") == on and point.fraction in values:
                steps.setdefault(float(point.fraction), []).append(float(point.steps or 0))
    end = max(_span(r)[1] for r in line.rows)
    return [
        (f"curve/{split}/{metric}", mean, round(np.mean(steps[f])), end) for f, (mean, _) in curve_means(line, metric).items() if f in steps and _finite(mean)
    ]


def study_parent(study: str, rows: list[Row], chosen, counts: bool = True) -> Parent:
    config = rows[0].config
    trials = [r for r in rows if r.config.get("trial")]
    search_metric = next((r.search.metric for r in rows if r.search and r.search.metric), None)
    searched = tuple(dict.fromkeys(k for r in trials for k in r.config["trial"].get("params", {})))
    options = FIRST_KEYS + tuple(k for k in searched if k not in FIRST_KEYS)
    parent = Parent(
        "study",
        study,
        f"study {study} · " + " · ".join(str(config.get(k)) for k in FIRST_KEYS[:2]),
        [r.cell_id for r in rows],
        _options(config, FIRST_KEYS),
        tags={"study": study} | _source(rows),
        options=options,
    )
    if search_metric:
        parent.tags["search_metric"] = search_metric
    if chosen is not None:
        parent.tags["chosen_trial"] = str(chosen)
    if counts:
        status = Counter(r.status for r in trials)
        parent.metrics.update(
            trials=len(trials),
            trials_ok=status["ok"],
            trials_pruned=status["pruned"],
            trials_failed=len(trials) - status["ok"] - status["pruned"],
            final_rows=len(rows) - len(trials),
        )
        objectives = [float(o) for r in trials if _number(o := r.search and r.search.objective) and math.isfinite(o)]
        if objectives and search_metric and definition(search_metric) is not None:
            parent.metrics[f"best_{search_metric}"] = (min if lower_is_better(search_metric) else max)(objectives)
    spans = [_span(r) for r in rows]
    parent.start_ms, parent.end_ms = min(start for start, _ in spans), max(end for _, end in spans)
    return parent


def _options(config: dict, options: tuple[str, ...]) -> dict[str, str]:
    """The named options of a config, flattened (`train.lr`), as the views show them; absent ones left out."""
    skip = {f"{section}.{option}" for section, option in NOT_IDENTITY}  # not part of the configuration: may differ among its seeds
    flat = flatten(config)
    return {k: as_text(flat[k]) for k in options if k in flat and k not in skip}


def _shared_protocol(rows: list[Row]) -> dict[str, str]:
    """The evaluation's sizes and settings that all these rows share."""
    found = [protocol(r) for r in rows]
    return {k: v for k, v in found[0].items() if all(f.get(k) == v for f in found)} if found else {}


def _source(rows: list[Row]) -> dict[str, str]:
    """MLflow's source tags for these rows: their grid, and the git commit they were made at when they all record one
    (bench.run.rows.source_state); never the commit checked out now."""
    tags = {}
    grids = {r.grid for r in rows}
    if len(grids) == 1 and (grid := grids.pop()):
        tags["mlflow.source.name"] = f"grid {grid}"
    commits = {r.env and r.env.git_commit for r in rows}
    if len(commits) == 1 and (commit := commits.pop()):
        tags["mlflow.source.git.commit"] = str(commit)
    return tags


# --- children ------------------------------------------------------------------------------------------------


def cell_run(row: Row, folders: list[Path], metric: str | None = None, options: tuple[str, ...] = FIRST_KEYS, line_name: str | None = None) -> CellRun:
    """A row as a child run named after its line (`line_name`, else backbone · loss) and its seed: params its seed, the
    `options` that tell the runs apart and the evaluation's sizes and settings (`protocol`); metrics its scores and
    their standard errors (`cell_metrics`), its budget figures as train/<name> and the learning curve of the sort
    `metric` (default: the row's own) as curve/<split>/<metric> at each point's training step; tags its status,
    environment and source. Its artifacts are `cell_files`."""
    config, train = row.config, _train(row)
    metric = metric or default_metric([row])
    start, end = _span(row)
    metrics = [(k, v, 0, end) for k, v in cell_metrics(row, metric)]
    if _finite(objective := row.search and row.search.objective):
        metrics.append(("search/objective", float(objective), 0, end))
    for point in row.curve or []:
        prefix = f"curve/{point.on or 'val'}" + (f"/fold{point.fold}" if point.fold is not None else "")
        if _finite(value := point.metrics.get(metric)):
            metrics.append((f"{prefix}/{metric}", float(value), int(point.steps or 0), start + int(1000 * (point.seconds or 0))))
    params = {"seed": as_text(config.get("seed"))} | _options(config, options) | protocol(row)
    tags = {"speed_env": env_label(speed_env(row)), "env.versions": versions(row)} | _source([row])
    if row.env and row.env.git_commit and row.env.git_dirty is not None:
        tags["env.git_dirty"] = str(bool(row.env.git_dirty)).lower()
    for name, value in (
        ("status", row.status if not row.ok else None),
        ("stopped_by", train.get("stopped_by")),
        ("error", row.error),
        ("notes", notes(row)),
    ):
        if value:
            tags[name] = str(value)
    tags |= {f"search.{k}": as_text(v) for k, v in (row.search.to_dict() if row.search else {}).items() if k in ("study", "trial", "role", "metric")}
    checkpoint = None
    if row.checkpoint and row.checkpoint.get("path"):
        found = [f / row.checkpoint["path"] for f in folders]
        checkpoint = next((p for p in found if p.is_dir()), found[0]).resolve()
    return CellRun(child_name(row, line_name), RUN_STATUS.get(row.status, "FAILED"), start, end, params, metrics, tags, checkpoint)


def cell_files(row: Row) -> dict[str, str]:
    """A child run's artifacts (path → text): its config, and the whole row (every figure, the full curves; the ROC of
    a newer row is in its items file, `cell_items`)."""
    return {"config.json": _json(row.config), "row.json": _json(row.to_dict())}


def cell_items(row: Row, folders: list[Path]) -> Path | None:
    """The row's per-item file (its test items' outcomes and its ROC) in the first results folder that has it."""
    if row.items is None:
        return None
    return next((f / row.items.file for f in folders if (f / row.items.file).is_file()), None)


def cell_metrics(row: Row, metric: str) -> list[tuple[str, float]]:
    """(key, value) of a row's finite figures that are metrics: its scores (a metric with a better direction), the sort
    `metric`'s standard error, any number the definitions do not know (a plugin's), and its training figures in TRAIN.
    Counts are params (`protocol`); thresholds and the other standard errors stay in row.json."""
    out = [
        (k, float(v))
        for k, v in (row.metrics or {}).items()
        if _finite(v) and ((d := definition(k)) is None or d.direction != "none" or k == f"{metric}_stderr")
    ]
    out += [(f"train/{k}", float(v)) for k, v in _train(row).items() if k in TRAIN and _finite(v)]
    if (wait := core_wait(row)) is not None:  # what the clock got from the machine, and the leaderboard's mark (bench.run.clock)
        out += [("train/core_wait_share", float(wait)), ("train/contended", float(contended(row)))]
    return out


def protocol(row: Row) -> dict[str, str]:
    """The evaluation's sizes (episodes, pairs, classes, groups, queries) and settings (distance, gallery, pair rule) a
    row reports among its metrics: constants of its protocol, params rather than metric charts."""
    out = {}
    for k, v in (row.metrics or {}).items():
        d = definition(k)
        if k in DERIVED:
            continue
        if (_number(v) and SIZE.search(k)) or (isinstance(v, str) and d is not None and d.direction == "none" and not k.endswith("_note")):
            out[k] = as_text(v)
    return out


def notes(row: Row) -> str:
    """The row's notes on figures it could not compute, and any text metric with no definition, in one line."""
    texts = {k: v for k, v in (row.metrics or {}).items() if isinstance(v, str) and v and (k.endswith("_note") or definition(k) is None)}
    return "; ".join(f"{k}: {v}" for k, v in texts.items())


def versions(row: Row) -> str:
    """ "python 3.11.7 · torch 2.4.1 · … · Linux-…": the software a row ran with, in one tag."""
    env = row.env or Env()
    found = env.versions or {}
    parts = [f"python {env.python}"] if env.python else []
    parts += [f"{p} {found[p]}" for p in VERSIONS if found.get(p)] + [f"{p} {v}" for p, v in found.items() if p not in VERSIONS and v]
    return " · ".join(parts + ([str(env.platform)] if env.platform else [])) or "unknown"


def child_name(row: Row, line_name: str | None = None) -> str:
    """A cell's run name: its line's name, its trial (a search's) and its seed."""
    config = row.config
    trial = config.get("trial")
    return (
        (line_name or " · ".join(str(config.get(k)) for k in FIRST_KEYS[:2]))
        + (f" · trial {trial.get('number')}" if isinstance(trial, dict) else "")
        + f" · seed {config.get('seed')}"
    )


def content_key(row: Row, artifacts: str) -> str:
    """What a child run was logged from: the row, FORMAT and the artifacts asked for. A run with another key is logged
    again (a rerun, a row changed in place, an earlier format); one with the same key is kept."""
    text = f"{FORMAT}\n{artifacts}\n{json.dumps(row.to_dict(), sort_keys=True, default=str)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _train(row: Row) -> dict:
    """The row's training figures by name (empty for a row that did not train)."""
    return row.train.to_dict() if row.train else {}


def _span(row: Row) -> tuple[int, int]:
    """(start, end) of a row in ms: it finished at finished_at after its training and evaluation seconds."""
    end = _ms(row.finished_at)
    return end - int(1000 * sum(float(v) for v in (row.train and row.train.seconds, row.eval_seconds) if _finite(v))), end


def _json(value) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False, default=str)


def _plain(value):
    """A leaderboard cell as JSON takes it: numpy scalars as Python's, NaN as null."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _finite(value) -> bool:
    return _number(value) and math.isfinite(value)


def _ms(iso) -> int:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except ValueError:
        return int(time.time() * 1000)

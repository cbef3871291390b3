"""Which result rows are the lines of a leaderboard, and which lines may be compared: the one grouping that the
leaderboard, its CSV and the plots share, so every view ranks and tests the same lines. Pure functions of rows.

A line is a configuration (the canonical cell config minus the seed; a key one row lacks makes another
configuration) over its seeds; its seeds are split into one line per speed environment when they ran on
different ones and any was stopped by `max_seconds` (a second buys different training on each). A comparison
group is the lines that score the same test material the same way: the same dataset and its arguments, split
and evaluation options, except the distance, which is part of the method.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from bench.config import NOT_IDENTITY, UNWRITTEN_DEFAULTS
from bench.results import SPEED_FIELDS, latest_rows, speed_env
from bench.schema import Row

ABSENT = "—"  # shown for a key a configuration does not have
TRAINING_ONLY_EVAL = ("curve", "select_metric")  # eval options that only act while training (a baseline has neither)
NOT_TEST_MATERIAL = ("distance", *TRAINING_ONLY_EVAL)  # eval options that do not change what a group scores
SECONDS = "max_seconds"


@dataclass(frozen=True)
class Line:
    """One line of the leaderboard: the newest row of each seed of one configuration (in one speed environment
    when its seeds had to be split), and that environment's label ("" when the seeds were not split)."""

    rows: tuple[Row, ...]
    speed_env: str = ""

    @property
    def config(self) -> dict:
        return self.rows[0].config

    @property
    def ok(self) -> list[Row]:
        return [r for r in self.rows if r.ok]

    @property
    def distance(self) -> str | None:
        """The distance the ok seeds were scored with (`metrics.distance`; the config's `eval.distance` for rows
        written before the evaluator recorded it), several joined by ", ", None when unknown."""
        found = sorted({str(d) for r in self.ok if (d := r.metrics.get("distance", r.config.get("eval", {}).get("distance")))})
        return ", ".join(found) or None


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):  # an empty dict adds no key
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def configuration(row: Row) -> str:
    """The identity of a row's configuration: its canonical config without the seed."""
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in row.config.items() if k != "seed"}
    for section, option in NOT_IDENTITY:  # whether a checkpoint was kept does not make another configuration
        config.get(section, {}).pop(option, None)
    return json.dumps(config, sort_keys=True)


def current(rows: list[Row]) -> list[Row]:
    """The newest row of each cell, less a search's trial rows (scored on validation, not test) and the final rows
    of a study's earlier choices: a study's current choice is that of its last final row in file order."""
    latest = [r for r in latest_rows(rows).values() if not r.config.get("trial")]
    chosen = {r.search.study: r.search.trial for r in rows if is_final(r)}
    return [r for r in latest if not is_final(r) or chosen[r.search.study] == r.search.trial]


def is_final(row: Row) -> bool:
    """A search's final row: its study's chosen options on one seed, scored on test."""
    return row.search is not None and row.search.role == "final"


def lines_of(rows: list[Row]) -> list[Line]:
    """The lines of these (current) rows, in order of first appearance."""
    by_config: dict[str, list[Row]] = {}
    for r in rows:
        by_config.setdefault(configuration(r), []).append(r)
    return [line for seeds in by_config.values() for line in by_speed_env(seeds)]


# --- the speed environment ----------------------------------------------------------------------------------


def by_speed_env(seeds: list[Row]) -> list[Line]:
    """One line for a configuration's seeds, or several when its ok seeds ran in different environments that change
    what the line measures: one per speed environment when any was stopped by max_seconds (a second buys different
    training on each), else one per precision when they ran in different ones (`precision = "auto"` resolves per
    machine, and bf16 is different arithmetic: benchmarks/thread_ops.py). Environments are compared on the fields
    every ok seed records (rows written before `cpu_model` existed are compared on the others). A seed that is not
    ok joins the first line whose environment agrees with every field it records, else a line of its own."""
    ok = [r for r in seeds if r.ok]
    fields = [f for f in SPEED_FIELDS if ok and all(speed_env(r)[f] is not None for r in ok)]
    if not any(r.train.stopped_by == SECONDS for r in ok):
        fields = [f for f in fields if f == "precision"]
    envs = {json.dumps([speed_env(r)[f] for f in fields]) for r in ok}
    if len(envs) < 2:
        return [Line(tuple(seeds))]
    split: dict[str, list[Row]] = {}
    for r in ok:
        split.setdefault(json.dumps([speed_env(r)[f] for f in fields]), []).append(r)
    for r in (r for r in seeds if not r.ok):
        env = speed_env(r)
        agrees = [k for k in split if all(env[f] in (None, v) for f, v in zip(fields, json.loads(k)))]
        split.setdefault(agrees[0] if agrees else json.dumps([env[f] for f in fields]), []).append(r)
    return [Line(tuple(rs), env_label(dict(zip(fields, json.loads(k))))) for k, rs in split.items()]


def numerics(rows: list[Row]) -> dict[str, int]:
    """The arithmetic environments (device, torch threads, CPU model, precision) of `rows` that are ok, with how
    many rows ran in each; one key when they all agree."""
    found: dict[str, int] = {}
    for r in rows:
        if r.ok:
            label = env_label(speed_env(r))
            found[label] = found.get(label, 0) + 1
    return found


def env_label(env: dict) -> str:
    """ "cpu 2 threads Intel Xeon Platinum 8375C @ 2.90GHz bf16": the fields given, in that order."""
    parts = [
        env.get("device"),
        f"{env['torch_threads']} threads" if env.get("torch_threads") is not None else None,
        re.sub(r"\s+", " ", re.sub(r"\((R|TM|tm)\)", "", str(env["cpu_model"]))).strip() if env.get("cpu_model") else None,
        env.get("precision"),
    ]
    return " ".join(str(p) for p in parts if p) or "unknown"


def line_env(line: Line) -> str:
    """The speed environment a line's ok seeds share, its label when its seeds were split, or "mixed" when they
    differ but none was stopped by max_seconds and they share a precision (then what bound was steps or samples,
    which any machine buys alike)."""
    if line.speed_env:
        return line.speed_env
    labels = {env_label(speed_env(r)) for r in line.ok}
    return ABSENT if not labels else labels.pop() if len(labels) == 1 else "mixed (not seconds-bound)"


# --- comparison groups --------------------------------------------------------------------------------------


def comparison_key(config: dict) -> dict:
    """What decides the test material and how it is scored: dataset, its arguments, the split and the evaluation
    options but the distance (part of the method) and those that act only during training."""
    return {
        "dataset": config.get("dataset"),
        "dataset_args": config.get("dataset_args", {}),
        "split": config.get("split", {}),
        "eval": {k: v for k, v in {**unwritten("eval"), **config.get("eval", {})}.items() if k not in NOT_TEST_MATERIAL},
    }


def unwritten(section: str) -> dict:
    """The options of `section` a config leaves out at their default (bench.config.UNWRITTEN_DEFAULTS), with it."""
    return {option: default for (s, option), default in UNWRITTEN_DEFAULTS.items() if s == section}


def comparison_groups(all_lines: list[Line]) -> list[tuple[str, list[int]]]:
    """(label, indices of its lines) per comparison group, in order of first appearance. The label names the
    options that differ between groups ("dataset = omniglot, split.seed = 1"); "all" when there is one group."""
    keys = [json.dumps(comparison_key(line.config), sort_keys=True) for line in all_lines]
    members: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    if len(members) == 1:
        return [("all", members[keys[0]])]
    flat = {k: flatten(json.loads(k)) for k in members}
    columns = list(dict.fromkeys(c for f in flat.values() for c in f))
    differ = [c for c in columns if len({json.dumps(f.get(c, ABSENT)) for f in flat.values()}) > 1]
    return [(", ".join(f"{c} = {as_text(flat[k].get(c, ABSENT))}" for c in differ), idx) for k, idx in members.items()]


def as_text(value) -> str:
    """A config value as the views show it: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def curve_of(row: Row, metric: str) -> tuple[str | None, dict[float, float]]:
    """A row's learning curve of `metric`: (the split, {fraction: value}) from one split, validation first, then
    the first by name that has finite values; (None, {}) without one. Every view of curves reads them here
    (the leaderboard's `still improving` and budget ranking, the plots)."""
    by_split: dict[str, dict[float, float]] = {}
    for p in row.curve or []:
        value = p.metrics.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            by_split.setdefault(str(p.on), {})[round(float(p.fraction), 6)] = float(value)
    for on in sorted(by_split, key=lambda on: (on != "val", on)):
        return on, dict(sorted(by_split[on].items()))
    return None, {}

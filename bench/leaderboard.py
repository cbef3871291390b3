"""Result rows → a leaderboard: one line per configuration, mean ± std over its ok seeds. Pure functions of rows.

A configuration is the full canonical cell config minus the seed: rows group only when every key and value
agrees, and a key that one row lacks is a different configuration from any value of it (an argument a
plugin does not take is absent, not "whatever the others had"). Failed and diverged seeds stay visible:
each line counts the seeds that ran and the ok ones, and names the others.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from bench.errors import UserError
from bench.eval.definitions import definition, lower_is_better
from bench.results import latest_rows

DEFAULT_METRIC = "verification_roc_auc"
SHOWN = ("verification_roc_auc", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8")
ABSENT = "—"  # shown for a key a configuration does not have
FIRST_KEYS = ("backbone", "loss", "dataset")


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):  # an empty dict adds no key
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def configuration(row: dict) -> str:
    """The identity of a row's configuration: its canonical config without the seed."""
    return json.dumps({k: v for k, v in row["config"].items() if k != "seed"}, sort_keys=True)


def check_metric(rows: list[dict], metric: str) -> None:
    """A one-line UserError unless `metric` is a score (it has a direction) that some ok row carries."""
    carried = sorted({k for r in rows if r.get("status") == "ok" for k in r.get("metrics", {})})
    scores = [k for k in carried if (d := definition(k)) is not None and d.direction != "none"]
    if metric not in scores:
        why = "is not a score (it has no better direction)" if definition(metric) else "is not a metric of these rows"
        raise UserError(f"--metric {metric!r} {why} — use one of: {', '.join(scores) or '(no finished cells)'}")


def table(rows: list[dict], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """One line per configuration: mean and std over ok seeds per shown metric, seed counts, failures."""
    latest = list(latest_rows(rows).values())
    if not any(r.get("status") == "ok" for r in latest):
        return pd.DataFrame()
    check_metric(latest, metric)
    groups: dict[str, list[dict]] = {}
    for r in latest:
        groups.setdefault(configuration(r), []).append(r)
    flat = [flatten({k: v for k, v in g[0]["config"].items() if k != "seed"}) for g in groups.values()]
    columns = list(dict.fromkeys(c for f in flat for c in f))
    varying = [c for c in columns if len({json.dumps(f.get(c, ABSENT)) for f in flat}) > 1 and c not in FIRST_KEYS]
    keys = list(FIRST_KEYS) + varying
    carried = {k for r in latest if r.get("status") == "ok" for k in r.get("metrics", {})}
    shown = [metric] + [m for m in SHOWN if m != metric and m in carried]
    lines = []
    for f, group in zip(flat, groups.values()):
        ok = [r for r in group if r.get("status") == "ok"]
        line = {k: _show(f.get(k, ABSENT)) for k in keys}
        for m in shown:
            values = pd.Series([float(r["metrics"].get(m, math.nan)) for r in ok], dtype=float)
            line[f"{m}_mean"], line[f"{m}_std"] = (values.mean(), values.std()) if len(values) else (math.nan, math.nan)
        line["seeds"] = len(group)
        line["ok"] = len(ok)
        line["n"] = len(ok)
        line["others"] = ", ".join(f"seed {r['config'].get('seed')}: {r.get('status')}"
                                   for r in sorted(group, key=lambda r: r["config"].get("seed", 0)) if r.get("status") != "ok")
        line["steps"] = round(sum(r["train"]["steps"] for r in ok) / len(ok)) if ok else 0
        line["stopped_by"] = ",".join(sorted({r["train"]["stopped_by"] for r in ok}))
        lines.append(line)
    frame = pd.DataFrame(lines)
    return frame.sort_values(f"{metric}_mean", ascending=lower_is_better(metric), na_position="last", kind="stable").reset_index(drop=True)


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def markdown(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, title: str = "") -> str:
    # Written by hand rather than DataFrame.to_markdown: that needs `tabulate`, and does not escape `|`.
    if frame.empty:
        return f"# {title}\n\nNo finished cells yet.\n"
    metrics = [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean")]
    tail = ("seeds", "ok", "n", "others", "steps", "stopped_by")
    keys = [c for c in frame.columns if not c.endswith(("_mean", "_std")) and c not in tail]
    header = ["#", *keys, *metrics, "ok / seeds", "not ok", "steps", "stopped by"]
    better = "lower" if lower_is_better(metric) else "higher"
    lines = [f"# {title}" if title else "", "",
             f"Sorted by **{metric}** ({better} is better); mean ± std over the ok seeds. {ABSENT}: the configuration "
             "has no such option. Seeds that failed or diverged are counted in *ok / seeds* and named in *not ok*.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---:"] + ["---"] * len(keys) + ["---:"] * (len(metrics) + 1) + ["---", "---:", "---"]) + "|"]
    for rank, (_, r) in enumerate(frame.iterrows(), 1):
        cells = [str(rank), *(_escape(r[k]) for k in keys)]
        cells += [_mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
        cells += [f"{r['ok']} / {r['seeds']}", _escape(r["others"]) or "", str(r["steps"]), _escape(r["stopped_by"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ABSENT
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _escape(value) -> str:
    return str(value).replace("|", "\\|")

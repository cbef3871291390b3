"""Result rows → a leaderboard: one line per configuration, mean ± std over seeds. Pure functions of rows."""
from __future__ import annotations

import math

import pandas as pd

from bench.results import latest_rows

LOWER_IS_BETTER = {"eer"}
DEFAULT_METRIC = "verification_roc_auc"
SHOWN = ("verification_roc_auc", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8")


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def table(rows: list[dict], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """One row per configuration (the cell config without its seed) with mean, std and n per metric."""
    ok = [r for r in latest_rows(rows).values() if r.get("status", "ok") == "ok"]
    if not ok:
        return pd.DataFrame()
    configs = pd.DataFrame([flatten(r["config"]) for r in ok]).drop(columns=["seed"])
    varying = [c for c in configs.columns if configs[c].astype(str).nunique() > 1]
    keys = ["backbone", "loss", "dataset"] + [c for c in varying if c not in ("backbone", "loss", "dataset")]
    metrics = pd.DataFrame([r["metrics"] for r in ok])
    shown = [metric] + [m for m in SHOWN if m != metric and m in metrics.columns]
    if metric not in metrics.columns:
        raise KeyError(metric)
    frame = pd.concat([configs[keys].astype(str), metrics[shown].astype(float)], axis=1)
    frame["stopped_by"] = [r["train"]["stopped_by"] for r in ok]
    frame["steps"] = [r["train"]["steps"] for r in ok]
    grouped = frame.groupby(keys, sort=False)
    out = grouped[shown].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n"] = grouped.size()
    out["steps"] = grouped["steps"].mean().round().astype(int)
    out["stopped_by"] = grouped["stopped_by"].agg(lambda s: ",".join(sorted(set(s))))
    out = out.reset_index()
    return out.sort_values(f"{metric}_mean", ascending=metric in LOWER_IS_BETTER, na_position="last", kind="stable")


def markdown(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, title: str = "") -> str:
    # Written by hand rather than DataFrame.to_markdown: that needs `tabulate`, and does not escape `|`.
    if frame.empty:
        return f"# {title}\n\nNo finished cells yet.\n"
    metrics = [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean")]
    keys = [c for c in frame.columns if not c.endswith(("_mean", "_std")) and c not in ("n", "steps", "stopped_by")]
    header = ["#", *keys, *metrics, "n", "steps", "stopped by"]
    lines = [f"# {title}" if title else "", "", f"Sorted by **{metric}** ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better); mean ± std over seeds.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---:"] + ["---"] * len(keys) + ["---:"] * (len(metrics) + 2) + ["---"]) + "|"]
    for rank, (_, r) in enumerate(frame.iterrows(), 1):
        cells = [str(rank), *(_escape(r[k]) for k in keys)]
        cells += [_mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
        cells += [str(r["n"]), str(r["steps"]), _escape(r["stopped_by"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _escape(value) -> str:
    return str(value).replace("|", "\\|")

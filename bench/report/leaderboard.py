"""The leaderboard as markdown: the rules, then one table per comparison group with its verdict above and its
notes below, the cells that did not finish, and links to the plots. The table is bench.report.table's model;
its sentences are bench.report.wording's."""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from urllib.parse import quote

import pandas as pd

from bench.report.lines import ABSENT, current
from bench.report.table import DEFAULT_METRIC, FIRST_KEYS, HEADERS, VERDICTS, key_columns, metric_columns, varies
from bench.report.wording import escape_md, group_notes, mark_columns, mean_std, rules, verdict
from bench.schema import Row, as_rows


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
            lines += [f"### {escape_md(group)}", ""]
        if said := verdict(frame.iloc[at], metric):
            lines += [said, ""]
        lines += _table(frame.iloc[at], {c: [v[i] for i in at] for c, v in verdicts.items()}) + [""]
        for said in group_notes(frame.iloc[at], metric):
            lines += [said, ""]
    return "\n".join(lines).strip("\n") + "\n"


def _table(frame: pd.DataFrame, verdicts: dict[str, list[str]]) -> list[str]:
    """The markdown lines of one group's table; its key columns are those that vary within it."""
    metrics = metric_columns(frame)
    keys = [k for k in key_columns(frame) if k in FIRST_KEYS or varies(frame, k)]
    header = ["#", *(HEADERS.get(k, k) for k in keys), *metrics, *(VERDICTS[c] for c in verdicts), "ok / seeds", "not ok", "steps", "stopped by"]
    align = ["---:"] + ["---"] * len(keys) + ["---:"] * len(metrics) + ["---"] * len(verdicts) + ["---:", "---", "---:", "---"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for rank, (_, r) in enumerate(frame.iterrows(), 1):
        one = bool(r.get("identical_seeds", False))
        cells = [str(rank), *(escape_md(r[k]) for k in keys)]
        cells += [mean_std(r[f"{m}_mean"], math.nan if one else r[f"{m}_std"], r.get(f"{m}_se", math.nan)) for m in metrics]
        cells += [escape_md(verdicts[c][rank - 1]) for c in verdicts]
        cells += [
            f"{r['ok']} / {r['seeds']}" + (" (1 distinct value)" if one else ""),
            escape_md(r["others"]) or "",
            str(r.get("steps_range") or r["steps"]),
            escape_md(r["stopped_by"]),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def failures(rows: list[Row]) -> str:
    """A markdown list of the cells whose newest row is not ok: config, seed, status and the error's first
    line (a traceback's last lines say more, but one line keeps the list scannable); "" when none failed."""
    failed = [r for r in current(as_rows(rows)) if not r.ok]
    if not failed:
        return ""
    lines = [f"**Not ok** ({len(failed)} cell{'s' * (len(failed) != 1)}; newest row of each):", ""]
    for r in failed:
        c = r.config
        error = (str(r.error or "").strip().splitlines() or [""])[0]
        error = error if len(error) <= 200 else error[:199] + "…"
        what = " · ".join(str(c.get(k, ABSENT)) for k in FIRST_KEYS)
        lines.append(escape_md(f"- `{r.cell_id}` {what}, seed {c.get('seed', ABSENT)}: **{r.status}**" + (f" — {error}" if error else "")))
    return "\n".join(lines) + "\n"


def plot_links(paths: list[str]) -> str:
    """One markdown line linking each plot, given as paths relative to the markdown file; "" for none."""
    if not paths:
        return ""
    return "Plots: " + " · ".join(f"[{PurePosixPath(p).stem}]({quote(p)})" for p in paths) + "\n"

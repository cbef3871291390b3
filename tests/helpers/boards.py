"""Rows and leaderboards built by hand for the report tests: a row per (backbone, loss, seed), a leaderboard run, its tables read back."""

from __future__ import annotations

import json
import math
import re

from scipy import stats

from bench.results import read_rows
from bench.schema import Row


def as_row(raw: dict) -> Row:
    """A hand-made row with what the schema requires filled in: an id, a config and a status (ok); an ok row's
    metrics, and a training record's steps and stopping rule."""
    raw = {"cell_id": "c", "config": {}, "status": "ok", **raw}
    if raw["status"] == "ok":
        raw = {"metrics": {}, "train": {}, **raw}
    if "train" in raw:
        raw["train"] = {"steps": 1, "stopped_by": "max_steps", **raw["train"]}
    return Row.from_dict(raw)


def raw_rows(path) -> list[dict]:
    """A results file's rows as the plain dicts they are written as, read through the schema (to check what landed,
    or to edit rows the way a file is edited)."""
    return [r.to_dict() for r in read_rows(path)]


def row(backbone, loss, seed, auc, r1=0.5, *, dataset="toy", status="ok", steps=100, stopped_by="budget", loss_args=None, **extra):
    metrics = {"verification_roc_auc": auc, "recall_at_1": r1, "recall_at_2": min(1.0, r1 + 0.1), **extra}
    return {
        "schema": 1,
        "cell_id": f"{backbone}-{loss}-{seed}-{json.dumps(loss_args, sort_keys=True)}-{status}",
        "status": status,
        "config": {
            "backbone": backbone,
            "loss": loss,
            "dataset": dataset,
            "seed": seed,
            "loss_args": loss_args or {},
            "train": {"batch_size": 32, "lr": 0.001},
            "split": {"seed": 0},
            "eval": {"recall_k": [1, 2]},
        },
        "metrics": metrics,
        "train": {"stopped_by": stopped_by, "steps": steps},
    }


def _cells(line: str) -> list[str]:
    # Split a markdown table line on unescaped pipes.
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def cell(backbone, loss, seed, value, *, metric="verification_roc_auc", curve=None, selected=None, **config):
    """A row whose sort-metric value is `value`, with `config` sections merged into the default config."""
    r = row(backbone, loss, seed, 0.5, **{metric: value})
    for section, v in config.items():
        r["config"][section] = {**r["config"][section], **v} if isinstance(r["config"].get(section), dict) else v
    r["cell_id"] = f"{json.dumps(r['config'], sort_keys=True)}"  # unique per cell: rows differ beyond row()'s id
    if curve is not None:
        r["curve"] = curve
    if selected is not None:
        r["train"]["selected"] = {"fraction": selected, "steps": int(100 * selected), "metric": metric, "value": value}
    return r


def by_backbone(frame):
    return {r["backbone"]: r for _, r in frame.iterrows()}


def welch_by_hand(a, b):
    # Welch's t with the Welch–Satterthwaite degrees of freedom, two-sided p from the t distribution.
    n1, n2 = len(a), len(b)
    m1, m2 = sum(a) / n1, sum(b) / n2
    v1, v2 = sum((x - m1) ** 2 for x in a) / (n1 - 1), sum((x - m2) ** 2 for x in b) / (n2 - 1)
    t = (m1 - m2) / math.sqrt(v1 / n1 + v2 / n2)
    df = (v1 / n1 + v2 / n2) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    return 2 * stats.t.sf(abs(t), df)


def board(tmp_path, monkeypatch, capsys, *args) -> tuple[int, str]:
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main(["leaderboard", *map(str, args)])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err.strip()


def write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def tables(text: str) -> dict[str, list[dict]]:
    """Each markdown table of `text` as {heading: [row as {header: cell}]}; "" for a table without a heading."""
    out, heading, header = {}, "", None
    for ln in text.splitlines():
        if ln.startswith("### "):
            heading, header = ln[4:], None
        elif ln.startswith("| #"):
            header = _cells(ln)
            out[heading] = []
        elif ln.startswith("| ") and header:
            out[heading].append(dict(zip(header, _cells(ln))))
    return out

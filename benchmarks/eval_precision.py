"""Evaluation in bf16 against fp32, side by side on the same trained weights: what it saves, what it moves.

Each of the seed question's kinds of cell (benchmarks/eval_profile.py's KINDS: seed 0, native preprocessing, no
augmentation) is run twice with `bench run`, each time in a fresh process, as examples/seed_question.toml runs it
(Omniglot's small sets, 3,120 test and 480 validation images, a four-point curve on validation, train.select =
"best", training in fp32) but for the number of steps its committed seed-0 row took in its 32 s — so both runs train
the same weights, on the grid's equal compute — once with `eval.precision = "fp32"` and once with "bf16".

Per kind: the curve's and the test score's seconds in each precision, and every metric's bf16 − fp32 difference
(the test metrics, and the curve point train.select picked), beside the spread of the committed line's seeds on the
grid's metric. Then the seed question's committed rows (results/seed_question.jsonl) are projected: each row's curve
and test seconds times its kind's bf16/fp32 ratio, over the rows' clocks (training, warm-up, curve, test) — the
evaluation share the grid would have had with `eval.precision = "bf16"`; and the share measured on this run's cells.

bf16 is fast only where the CPU has AMX or AVX512-BF16 (or on a GPU); elsewhere it is emulated and slower than
fp32, which this benchmark would show as a ratio above 1.

    .venv/bin/python benchmarks/eval_precision.py [--cells koch conv4 ...] [--repeats 1] [--threads 2]

Figures go to results/benchmarks/eval_precision.json (--out); `--render FILE` prints its tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import record
import tables
from eval_profile import KINDS, seed_question_clocks, seed_question_rows

from bench.config.metrics import direction
from bench.grid import tomllib
from bench.results import read_rows
from bench.schema import Row

PRECISIONS = ("fp32", "bf16")
GRID = record.ROOT / "examples" / "seed_question.toml"
ROWS = record.ROOT / "results" / "seed_question.jsonl"


def committed(kind: str, rows: list[Row]) -> list[Row]:
    """The committed ok rows of `kind`'s configuration (every seed): backbone, loss, freeze, native, no augmentation."""
    backbone, loss, freeze = KINDS[kind]
    return [
        r
        for r in rows
        if r.ok
        and (r.config["backbone"], r.config["loss"], r.config["model"]["freeze"]) == (backbone, loss, freeze)
        and r.config["model"]["preprocess"] == "native"
        and r.config["train"]["augment"] == "none"
    ]


def grid_toml(kind: str, steps: int, precision: str, omniglot: str) -> str:
    """The seed question's grid narrowed to one seed-0 cell of `kind`, `steps` steps, scored in `precision`."""
    grid = tomllib.loads(GRID.read_text())
    backbone, loss, freeze = KINDS[kind]
    lines = [
        f'name = "eval_precision_{kind}_{precision}"',
        "[budget]",
        f"max_steps = {max(steps, 1)}",
        "[train]",
        *(f"{k} = {json.dumps(v)}" for k, v in grid["train"].items()),
        "[split]",
        *(f"{k} = {json.dumps(v)}" for k, v in grid["split"].items()),
        "[eval]",
        *(f"{k} = {json.dumps(v)}" for k, v in grid["eval"].items()),
        f'precision = "{precision}"',
        "[axes]",
        f'backbone = ["{backbone}"]',
        f'loss = ["{loss}"]',
        'dataset = ["omniglot"]',
        "seed = [0]",
        f'"model.freeze" = ["{freeze}"]',
        "[dataset.omniglot]",
        f'root = "{omniglot}"',
        *(f"{k} = {json.dumps(v)}" for k, v in grid["dataset"]["omniglot"].items() if k != "root"),
        f'[backbone."{backbone}"]',
        *(f"{k} = {json.dumps(v)}" for k, v in grid["backbone"][backbone].items()),
    ]
    return "\n".join(lines) + "\n"


def run_one(kind: str, steps: int, precision: str, args) -> dict:
    """One `bench run` of the kind's cell in a fresh process; what its row says about evaluation."""
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "grid.toml"
        grid.write_text(grid_toml(kind, steps, precision, str(args.omniglot.resolve())))
        results = Path(tmp) / "rows.jsonl"
        record.bench_run(record.ROOT, "--grid", str(grid), "--results", str(results), "--threads", str(args.threads), "--no-disk-cache")
        (row,) = read_rows(results)
    if not row.ok:
        raise SystemExit(f"{kind} ({precision}): the cell's status is {row.status}: {(row.error or '')[:500]}")
    t = row.train
    return {
        "kind": kind,
        "precision": precision,
        "steps": t.steps,
        "final_loss": t.final_loss,
        "train_seconds": t.seconds,  # the budget's clock: the loop (curve points excluded) and a frozen trunk's extraction
        "warmup_seconds": t.warmup_seconds or 0.0,
        "curve_seconds": t.curve_seconds or 0.0,
        "eval_seconds": row.eval_seconds,
        "selected": t.selected.to_dict() if t.selected else None,
        "metrics": row.metrics,
        "curve": [{"fraction": p.fraction, "metrics": p.metrics} for p in row.curve or []],
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--repeats", type=int, default=1, help="runs of each (kind, precision), taking turns")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the seed question ran with 2)")
    p.add_argument("--omniglot", type=Path, default=record.ROOT / "data" / "omniglot", help="the Omniglot zips")
    p.add_argument("--rows", type=Path, default=ROWS, help="the seed question's rows to take steps from and project")
    p.add_argument("--render", type=Path, help="print the tables of an existing figures file and stop")
    record.add_out_argument(p, "eval_precision")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    rows = seed_question_rows(args.rows)
    runs = []
    for kind in args.cells:
        seed0 = [r for r in committed(kind, rows) if r.seed == 0]
        steps = seed0[0].train.steps if seed0 else 0
        for repeat in range(args.repeats):
            for precision in PRECISIONS:
                runs.append({"repeat": repeat, **run_one(kind, steps, precision, args)})
                r = runs[-1]
                print(
                    f"{kind} ({precision}): {r['steps']} steps, curve {r['curve_seconds']:.2f} s, test {r['eval_seconds']:.2f} s", file=sys.stderr, flush=True
                )
    metric = tomllib.loads(GRID.read_text())["report"]["metric"]
    raw = {
        "metric": metric,
        "runs": runs,
        "committed_std": {k: _std([r.metric(metric) for r in committed(k, rows)]) for k in args.cells},
        "seed_question": seed_question_clocks([r for r in rows if r.ok], args.rows),
    }
    out = record.write("eval_precision", args, raw, summarise(raw))
    print(render(json.loads(out.read_text())))


def _std(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.stdev(values) if len(values) >= 2 else None


# ------------------------------------------------------------------------------------------ summary, tables


def summarise(raw: dict) -> dict:
    """Per kind: median seconds of the curve and the test score in each precision, their bf16/fp32 ratios, whether
    both trained alike (steps, final loss), the largest metric difference and the grid metric's; the seed
    question's evaluation share as its rows measured it and projected with bf16 evaluation; the share measured on
    this run's own cells."""
    metric = raw["metric"]
    per_kind = {}
    for kind in dict.fromkeys(r["kind"] for r in raw["runs"]):
        runs = {p: [r for r in raw["runs"] if r["kind"] == kind and r["precision"] == p] for p in PRECISIONS}
        med = {p: {f: statistics.median(r[f] for r in runs[p]) for f in ("curve_seconds", "eval_seconds")} for p in PRECISIONS}
        pairs = list(zip(runs["fp32"], runs["bf16"]))
        diffs = [
            (abs(b["metrics"][k] - a["metrics"][k]), k)
            for a, b in pairs
            for k in a["metrics"]
            if direction(k) != "none" and _numbers(a["metrics"].get(k), b["metrics"].get(k))  # scores, not thresholds or counts
        ]
        per_kind[kind] = {
            "fp32": med["fp32"],
            "bf16": med["bf16"],
            "ratio": {
                "curve": med["bf16"]["curve_seconds"] / med["fp32"]["curve_seconds"] if med["fp32"]["curve_seconds"] else None,
                "test": med["bf16"]["eval_seconds"] / med["fp32"]["eval_seconds"],
            },
            "same_training": all(a["steps"] == b["steps"] and a["final_loss"] == b["final_loss"] for a, b in pairs),
            "same_selection": all((a["selected"] or {}).get("fraction") == (b["selected"] or {}).get("fraction") for a, b in pairs),
            "max_metric_diff": max(diffs, default=(0.0, None))[0],
            "max_metric_diff_of": max(diffs, default=(0.0, None))[1],
            "metric_diff": statistics.median(b["metrics"][metric] - a["metrics"][metric] for a, b in pairs),
            "committed_std": raw["committed_std"].get(kind),
        }
    rows = raw["seed_question"]["rows"]
    clock = sum(r["train_seconds"] + r["warmup_seconds"] + r["curve_seconds"] + r["eval_seconds"] for r in rows)
    evaluation = sum(r["curve_seconds"] + r["eval_seconds"] for r in rows)
    ratio = lambda r, p: per_kind[r["kind"]]["ratio"][p] if r["kind"] in per_kind and per_kind[r["kind"]]["ratio"][p] is not None else 1.0
    projected = sum(r["curve_seconds"] * ratio(r, "curve") + r["eval_seconds"] * ratio(r, "test") for r in rows)
    measured = {}
    for p in PRECISIONS:
        own = [r for r in raw["runs"] if r["precision"] == p]
        spent = sum(r["curve_seconds"] + r["eval_seconds"] for r in own)
        measured[p] = spent / sum(r["train_seconds"] + r["warmup_seconds"] + r["curve_seconds"] + r["eval_seconds"] for r in own)
    return {
        "kinds": per_kind,
        "own_cells_share": measured,
        "seed_question": {
            "rows": len(rows),
            "rows_covered": sum(r["kind"] in per_kind for r in rows),
            "clock_seconds": clock,
            "evaluation_seconds": evaluation,
            "evaluation_share": evaluation / clock,
            "projected_evaluation_seconds": projected,
            "projected_share": projected / (clock - evaluation + projected),
        },
    }


def _numbers(*values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in values)


def render(rec: dict) -> str:
    s, metric = rec["summary"], rec["raw"]["metric"]
    header = [
        "kind",
        "curve fp32 (s)",
        "curve bf16 (s)",
        "test fp32 (s)",
        "test bf16 (s)",
        "test bf16/fp32",
        f"Δ {metric}",
        "seed std (committed)",
        "largest Δ of any score",
        "same selection",
    ]
    table = [
        [
            kind,
            f"{k['fp32']['curve_seconds']:.2f}",
            f"{k['bf16']['curve_seconds']:.2f}",
            f"{k['fp32']['eval_seconds']:.2f}",
            f"{k['bf16']['eval_seconds']:.2f}",
            f"{k['ratio']['test']:.2f}×",
            f"{k['metric_diff']:+.4f}".replace("-", "−"),
            "—" if k["committed_std"] is None else f"{k['committed_std']:.4f}",
            f"{k['max_metric_diff']:.4f}" + (f" ({k['max_metric_diff_of']})" if k.get("max_metric_diff_of") else ""),
            "yes" if k["same_selection"] else "no",
        ]
        for kind, k in s["kinds"].items()
    ]
    sq, own = s["seed_question"], s["own_cells_share"]
    apart = [kind for kind, k in s["kinds"].items() if not k["same_training"]]
    text = [
        tables.markdown(header, table, "l" + "r" * (len(header) - 2) + "l"),
        "",
        "Both runs of every kind trained the same weights (the same steps and final loss)."
        if not apart
        else f"Not the same weights in both runs (steps or final loss differ), so their Δ is not bf16's alone: {', '.join(apart)}.",
        "",
        f"Evaluation's share of the seed question ({sq['rows']} rows, {sq['rows_covered']} of them of a kind measured here): "
        f'{sq["evaluation_share"]:.1%} as run (fp32), {sq["projected_share"]:.1%} projected with eval.precision = "bf16" '
        f"({sq['evaluation_seconds']:.0f} s → {sq['projected_evaluation_seconds']:.0f} s of {sq['clock_seconds']:.0f} s). "
        f"On this run's own cells: {own['fp32']:.1%} (fp32) and {own['bf16']:.1%} (bf16).",
        "",
        tables.provenance(rec),
    ]
    return "\n".join(text)


if __name__ == "__main__":
    main()

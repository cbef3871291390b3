"""The docs' benchmark tables, made from the raw figures in results/benchmarks/*.json:

    .venv/bin/python benchmarks/tables.py results/benchmarks/precision.json [more.json ...]

Each benchmark has a `summarise_<name>(raw)` (the figures the docs quote: means, medians over repeats,
ratios, all computed from the raw measurements; the benchmark stores its output as the file's "summary")
and a `render_<name>(record)` that prints its markdown table(s) from the raw figures."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pandas as pd

PRECISIONS = ("fp32", "bf16")


def markdown(header: list[str], rows: list[list[str]], align: str) -> str:
    """`align` is one letter per column: l (left) or r (right)."""
    cell = lambda v: str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])


def provenance(record: dict) -> str:
    m, v = record["machine"], record["versions"]
    commit = (v.get("metric-bench") or "unknown")[:7] + ("+changes" if v.get("metric-bench dirty") else "")
    bf16 = f"fast bf16 ({', '.join(m['bf16_flags'])})" if m.get("bf16_flags") else ("fast bf16" if m["fast_bf16"] else "no fast bf16")
    where = f"{m['cpu_model']}, {m['cores']} cores, {m['torch_threads']} torch threads, {bf16}"
    where += f", {m['cuda']}" if m.get("cuda") else ""
    return f"(Measured {record['date'][:10]} on {where}; torch {v.get('torch')}, metric-bench {commit}: `{record['command']}`.)"


# precision -------------------------------------------------------------------------------------------------


def summarise_precision(raw: dict) -> dict:
    from bench.config.metrics import definition

    cells = pd.DataFrame(raw["cells"])
    cells["images_per_second"] = cells["samples"] / cells["wall_seconds"]
    speed = cells.groupby(["backbone", "precision"])[["images_per_second", "gflop_per_second"]].mean()
    backbones = list(dict.fromkeys(cells["backbone"]))
    precisions = [p for p in PRECISIONS if (cells["precision"] == p).any()]
    rows = [
        {
            "backbone": b,
            "precision": p,
            **speed.loc[(b, p)].to_dict(),
            "speed_up": speed.loc[(b, p), "images_per_second"] / speed.loc[(b, "fp32"), "images_per_second"],
        }
        for b in backbones
        for p in precisions
    ]
    metrics = pd.DataFrame(
        [
            {"backbone": c["backbone"], "precision": c["precision"], "metric": k, "value": v}
            for c in raw["cells"]
            for k, v in c["metrics"].items()
            if (d := definition(k)) and d.direction != "none"
        ]
    )
    metrics = metrics[metrics.groupby("metric")["value"].transform("count") > 0]  # a metric NaN everywhere says nothing
    stats = metrics.groupby(["metric", "backbone", "precision"])["value"].agg(["mean", "std", "count"]).reset_index()
    return {
        "speed": rows,
        "backbones": backbones,
        "precisions": precisions,
        "metrics": json.loads(stats.to_json(orient="records")),
    }  # std is NaN (null) with one seed


def render_precision(record: dict) -> str:
    s = summarise_precision(record["raw"])
    speed = markdown(
        ["backbone", "precision", "img/s", "GFLOP/s", "speed-up"],
        [[r["backbone"], r["precision"], f"{r['images_per_second']:.0f}", f"{r['gflop_per_second']:.1f}", f"{r['speed_up']:.2f}×"] for r in s["speed"]],
        "llrrr",
    )
    if "bf16" not in s["precisions"]:
        speed += "\n\nauto ran fp32 here: this machine has no fast bf16 (AMX / AVX512-BF16), so there is nothing to compare."
    stat = {(r["metric"], r["backbone"], r["precision"]): r for r in s["metrics"]}
    backbones, precisions = s["backbones"], s["precisions"]
    header = ["metric (mean over seeds)"] + [f"{b} {p}" for b in backbones for p in precisions]
    if "bf16" in precisions:
        header += [f"{b} bf16 − fp32 (fp32 seed std)" for b in backbones]
    rows = []
    for k in sorted({r["metric"] for r in s["metrics"]}):
        row = [k] + [f"{_num(stat[(k, b, p)]['mean']):.4f}" for b in backbones for p in precisions]
        if "bf16" in precisions:
            fp32 = [stat[(k, b, "fp32")] for b in backbones]
            row += [f"{_num(stat[(k, b, 'bf16')]['mean']) - _num(f['mean']):+.4f} ({_num(f['std']):.4f})" for b, f in zip(backbones, fp32)]
        rows.append(row)
    return f"{provenance(record)}\n\n{speed}\n\n{markdown(header, rows, 'l' + 'r' * (len(header) - 1))}"


def _num(value) -> float:
    return float("nan") if value is None else value


# frozen-feature cache --------------------------------------------------------------------------------------


def summarise_frozen_cache(raw: dict) -> dict:
    train_eval = lambda cells: sum(c["train_wall_seconds"] + c["eval_seconds"] for c in cells)
    out = {
        sweep: {
            "wall_seconds": statistics.median(r[sweep]["wall_seconds"] for r in raw["repeats"]),
            "train_eval_seconds": statistics.median(train_eval(r[sweep]["cells"]) for r in raw["repeats"]),
        }
        for sweep in ("plain", "cached")
    }
    key = lambda c: (c["loss"], c["seed"])
    diffs = [
        abs(a["metrics"][m] - b["metrics"][m])
        for r in raw["repeats"]
        for a, b in zip(sorted(r["cached"]["cells"], key=key), sorted(r["plain"]["cells"], key=key))
        for m in a["metrics"]
    ]
    return {
        **out,
        "wall_ratio": out["plain"]["wall_seconds"] / out["cached"]["wall_seconds"],
        "train_eval_ratio": out["plain"]["train_eval_seconds"] / max(out["cached"]["train_eval_seconds"], 1e-9),
        "max_metric_diff": max(diffs),
        "cells": len(raw["repeats"][0]["cached"]["cells"]),
    }


def render_frozen_cache(record: dict) -> str:
    s = summarise_frozen_cache(record["raw"])
    rows = [
        ["recompute the frozen trunk every step", f"{s['plain']['wall_seconds']:.1f}", f"{s['plain']['train_eval_seconds']:.1f}", ""],
        ["frozen-feature cache", f"{s['cached']['wall_seconds']:.1f}", f"{s['cached']['train_eval_seconds']:.1f}", f"{s['max_metric_diff']:.2g}"],
        ["ratio", f"{s['wall_ratio']:.1f}×", f"{s['train_eval_ratio']:.1f}×", ""],
    ]
    return f"{provenance(record)}\n\n" + markdown(["sweep", "wall s (incl. start-up)", "train + eval s", "max metric diff"], rows, "lrrr")


# executors and the disk cache ------------------------------------------------------------------------------


def summarise_parallel(raw: dict) -> dict:
    base = statistics.median(r["seconds"] for r in raw["variants"][0]["runs"])
    executors = [
        {
            "name": v["name"],
            "wall_seconds": (s := statistics.median(r["seconds"] for r in v["runs"])),
            "vs_in_process": s / base,
            "ok": sum(r["ok"] for r in v["runs"]),
            "total": sum(r["total"] for r in v["runs"]),
        }
        for v in raw["variants"]
    ]
    cold = statistics.median(r["cold_seconds"] for r in raw["disk_cache"]["runs"])
    warm = statistics.median(r["warm_seconds"] for r in raw["disk_cache"]["runs"])
    return {"executors": executors, "disk_cache": {"cold_seconds": cold, "warm_seconds": warm, "ratio": cold / warm}}


def render_parallel(record: dict) -> str:
    s, raw = summarise_parallel(record["raw"]), record["raw"]
    executors = markdown(
        ["executor", "wall s", "vs in-process", "ok cells"],
        [[e["name"], f"{e['wall_seconds']:.1f}", f"{e['vs_in_process']:.2f}×", f"{e['ok']} / {e['total']}"] for e in s["executors"]],
        "lrrr",
    )
    c = s["disk_cache"]
    cache = markdown(
        [raw["disk_cache"]["grid"], "wall s"],
        [
            ["first run (features computed, written to --cache-dir)", f"{c['cold_seconds']:.1f}"],
            ["second run (features read from disk)", f"{c['warm_seconds']:.1f}"],
            ["ratio", f"{c['ratio']:.2f}×"],
        ],
        "lr",
    )
    return f"{provenance(record)}\n\n{executors}\n\n{cache}"


# evaluation speed ------------------------------------------------------------------------------------------


def summarise_eval_speed(raw: dict) -> dict:
    rows = []
    for case in raw["cases"]:
        med = lambda runs, k: statistics.median(r[k] for r in runs)
        ours_s, theirs_s = med(case["ours"], "seconds"), med(case["theirs"], "seconds")
        ours_mb, theirs_mb = med(case["ours"], "peak_mb"), med(case["theirs"], "peak_mb")
        diff = max(abs(a["values"][k] - b["values"][k]) for a, b in zip(case["ours"], case["theirs"]) for k in a["values"])
        rows.append(
            {
                "embeddings": f"{case['kind']} {case['n'] // 1000}k×{case['dim']}",
                "comparison": case["comparison"],
                "ours_seconds": ours_s,
                "theirs_seconds": theirs_s,
                "speed_up": theirs_s / ours_s,
                "ours_peak_mb": ours_mb,
                "theirs_peak_mb": theirs_mb,
                "memory_ratio": ours_mb / max(theirs_mb, 1),
                "max_abs_diff": diff,
            }
        )
    return {"rows": rows}


def render_eval_speed(record: dict) -> str:
    rows = [
        [
            r["embeddings"],
            r["comparison"],
            f"{r['ours_seconds']:.2f}",
            f"{r['theirs_seconds']:.2f}",
            f"{r['speed_up']:.2f}×",
            f"{r['ours_peak_mb']:.0f}",
            f"{r['theirs_peak_mb']:.0f}",
            f"{r['memory_ratio']:.2f}",
            f"{r['max_abs_diff']:.1e}",
        ]
        for r in summarise_eval_speed(record["raw"])["rows"]
    ]
    knn = record["raw"]["knn"]
    return f"{provenance(record)} kNN: {knn}.\n\n" + markdown(
        ["embeddings", "comparison", "ours s", "theirs s", "speed-up", "ours peak MB", "theirs peak MB", "memory ratio", "max abs diff"], rows, "llrrrrrrr"
    )


# data side -------------------------------------------------------------------------------------------------


def summarise_data_speed(raw: dict) -> dict:
    step = statistics.mean(raw["step_seconds"])
    return {
        "step_ms": step * 1e3,
        "augment": [
            {"name": a["name"], "ms": statistics.mean(a["seconds"]) * 1e3, "fraction_of_step": statistics.mean(a["seconds"]) / step} for a in raw["augment"]
        ],
    }


def render_data_speed(record: dict) -> str:
    s, raw = summarise_data_speed(record["raw"]), record["raw"]
    decode = markdown(["dataset", "images", "decode s"], [[d["dataset"], d["images"], f"{d['seconds']:.2f}"] for d in raw["decode"]], "lrr")
    steps = markdown(
        ["on one batch (32×1×105×105)", "ms", "fraction of a training step"],
        [["Koch CNN training step", f"{s['step_ms']:.1f}", "1"]]
        + [[f"augment `{a['name']}`", f"{a['ms']:.2f}", f"{a['fraction_of_step']:.3f}"] for a in s["augment"]],
        "lrr",
    )
    return f"{provenance(record)} Device {raw['device']}.\n\n" + (f"{decode}\n\n" if raw["decode"] else "") + steps


# threads ---------------------------------------------------------------------------------------------------


def summarise_threads(raw: dict) -> dict:
    """Per cell kind (backbone, freeze, precision) and metric: the paired difference (threads B − threads A, by seed),
    its mean, std and paired t-test p, beside the seed-to-seed std at each thread count: a shift well outside the
    paired spread is systematic; paired differences the size of the seed spread, centred on 0, are chaotic noise."""
    from scipy.stats import ttest_rel

    a, b = raw["threads"]
    cells = pd.DataFrame([c for c in raw["cells"] if c["status"] == "ok"])
    out = []
    for (backbone, freeze, precision), kind in cells.groupby(["backbone", "freeze", "precision"], sort=False):
        for metric in raw["metrics"]:
            value = kind.assign(value=[c.get(metric) for c in kind["metrics"]]).dropna(subset=["value"])
            pivot = value.pivot_table(index="seed", columns="threads", values="value").dropna()
            if a not in pivot or b not in pivot or len(pivot) < 2:
                continue
            diff = pivot[b] - pivot[a]
            p = float(ttest_rel(pivot[b], pivot[a]).pvalue) if diff.std() > 0 else (1.0 if diff.mean() == 0 else 0.0)
            out.append(
                {
                    "backbone": backbone,
                    "freeze": freeze,
                    "precision": precision,
                    "metric": metric,
                    "seeds": len(pivot),
                    "mean_a": float(pivot[a].mean()),
                    "mean_b": float(pivot[b].mean()),
                    "diff_mean": float(diff.mean()),
                    "diff_std": float(diff.std()),
                    "p": p,
                    "seed_std_a": float(pivot[a].std()),
                    "seed_std_b": float(pivot[b].std()),
                    # a thread change that acts like a fresh seed gives paired differences of std √2 × the seed std
                    "like_a_seed": _ratio(diff.std(), math.sqrt(2) * math.sqrt((pivot[a].var() + pivot[b].var()) / 2)),
                    "identical": bool((diff == 0).all()),
                }
            )
    return {"threads": [a, b], "rows": out, "precision": _precision_pairs(cells, raw["metrics"])}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else math.nan


def _precision_pairs(cells: pd.DataFrame, metrics: list[str]) -> list[dict]:
    """Per cell kind (backbone, freeze) and metric: bf16 − fp32, paired by seed and thread count (the same cell in the
    two precisions), its mean, std and paired t-test p, beside the fp32 seed std (at each thread count, pooled)."""
    from scipy.stats import ttest_rel

    out = []
    for (backbone, freeze), kind in cells.groupby(["backbone", "freeze"], sort=False):
        for metric in metrics:
            value = kind.assign(value=[c.get(metric) for c in kind["metrics"]]).dropna(subset=["value"])
            pivot = value.pivot_table(index=["threads", "seed"], columns="precision", values="value").dropna()
            if "fp32" not in pivot or "bf16" not in pivot or len(pivot) < 2:
                continue
            diff = pivot["bf16"] - pivot["fp32"]
            seed_std = math.sqrt(pivot["fp32"].groupby(level="threads").var().mean())
            p = float(ttest_rel(pivot["bf16"], pivot["fp32"]).pvalue) if diff.std() > 0 else (1.0 if diff.mean() == 0 else 0.0)
            out.append(
                {
                    "backbone": backbone,
                    "freeze": freeze,
                    "metric": metric,
                    "pairs": len(pivot),
                    "fp32": float(pivot["fp32"].mean()),
                    "bf16": float(pivot["bf16"].mean()),
                    "diff_mean": float(diff.mean()),
                    "diff_std": float(diff.std()),
                    "p": p,
                    "fp32_seed_std": seed_std,
                }
            )
    return out


def render_threads(record: dict) -> str:
    s = summarise_threads(record["raw"])
    a, b = s["threads"]
    rows = [
        [
            r["backbone"],
            r["freeze"],
            r["precision"],
            r["metric"],
            str(r["seeds"]),
            f"{r['mean_a']:.4f}",
            f"{r['mean_b']:.4f}",
            f"{r['diff_mean']:+.4f} ± {r['diff_std']:.4f}",
            "identical" if r["identical"] else f"{r['p']:.2g}",
            f"{r['seed_std_a']:.4f} / {r['seed_std_b']:.4f}",
            "—" if r["identical"] else f"{r['like_a_seed']:.2f}",
        ]
        for r in s["rows"]
    ]
    table = markdown(
        [
            "backbone",
            "freeze",
            "precision",
            "metric",
            "seeds",
            f"{a} thread(s)",
            f"{b} threads",
            f"{b} − {a}, paired (mean ± std)",
            "paired p",
            "seed std",
            "paired std / (√2 seed std)",
        ],
        rows,
        "llllrrrrrrr",
    )
    pairs = [
        [
            r["backbone"],
            r["freeze"],
            r["metric"],
            str(r["pairs"]),
            f"{r['fp32']:.4f}",
            f"{r['bf16']:.4f}",
            f"{r['diff_mean']:+.4f} ± {r['diff_std']:.4f}",
            f"{r['p']:.2g}",
            f"{r['fp32_seed_std']:.4f}",
        ]
        for r in s["precision"]
    ]
    precision = (
        markdown(
            ["backbone", "freeze", "metric", "pairs (seed × threads)", "fp32", "bf16", "bf16 − fp32, paired (mean ± std)", "paired p", "fp32 seed std"],
            pairs,
            "lllrrrrrr",
        )
        if pairs
        else ""
    )
    return provenance(record) + "\n\n" + table + ("\n\n" + precision if precision else "")


# thread_ops ------------------------------------------------------------------------------------------------


def summarise_thread_ops(raw: dict) -> dict:
    """Per precision: the whole step's differences at 1 vs 2 threads, and per kind of leaf module (fed identical
    inputs at both thread counts) how many differ and by how much (forward, input gradient, weight gradients)."""
    out = {}
    for precision, p in raw["precisions"].items():
        kinds = pd.DataFrame(p["modules"]).fillna(0.0)
        by_kind = []
        for kind, group in kinds.groupby("kind", sort=False):
            row = {"kind": kind, "modules": len(group)}
            for part in ("forward", "grad_input", "grad_weights"):
                row[f"{part}_differ"] = int((group[part] > 0).sum())
                row[f"{part}_max"] = float(group[part].max())
            by_kind.append(row)
        out[precision] = {"whole_step": p["whole_step"], "repeat_1_thread": p["repeat_1_thread"], "kinds": by_kind}
    return out


def render_thread_ops(record: dict) -> str:
    s = summarise_thread_ops(record["raw"])
    a, b = record["raw"]["threads"]
    parts = [provenance(record)]
    for precision, p in s.items():
        w = p["whole_step"]
        parts.append(
            f"**{precision}**, one training step, {a} vs {b} threads: embeddings differ by {w['embeddings']:.1e}, the loss by "
            f"{w['loss']:.1e}, the gradient by {w['gradient']:.1e} (relative L2; cosine {w['gradient_cosine']:.6f}); the same step "
            f"run twice at {a} thread: {p['repeat_1_thread']:.1e}."
        )
        rows = [
            [k["kind"], str(k["modules"])]
            + [f"{k[f'{part}_differ']} ({k[f'{part}_max']:.1e})" if k[f"{part}_differ"] else "0" for part in ("forward", "grad_input", "grad_weights")]
            for k in p["kinds"]
        ]
        parts.append(
            markdown(["leaf module", "count", "forward differs (max)", "input gradient differs (max)", "weight gradient differs (max)"], rows, "lrrrr")
        )
    versus = record["raw"].get("versus_fp32", {})
    if versus:
        rows = [
            [
                name,
                f"{v['embeddings_1_vs_2_threads']:.1e}",
                f"{v['gradient_cosine_1_vs_2_threads']:.4f}",
                f"{v['embeddings_vs_fp32']:.2f}",
                f"{v['gradient_cosine_vs_fp32']:.3f}",
            ]
            for name, v in versus.items()
        ]
        parts.append(
            markdown(
                ["one step in", f"embeddings, {a} vs {b} threads", f"gradient cosine, {a} vs {b} threads", "embeddings vs fp32", "gradient cosine vs fp32"],
                rows,
                "lrrrr",
            )
        )
    return "\n\n".join(parts)


# stats calibration -------------------------------------------------------------------------------------------


def summarise_stats_calibration(raw: dict) -> dict:
    """The worst familywise error over the null families, the worst top-line "below" rate, and the worst
    false-positive rate and coverage of one paired test (the issue's requirements), from the scenarios' figures."""
    found = [s["summary"] for s in raw["scenarios"]]
    null = [s for s in found if s["group"].startswith("null")]
    tied = [s for s in found if s["group"] == "tied top"]
    pairs = [s for s in found if s["group"].startswith("pair") and "false_positive_rate" in s]
    covered = [s for s in found if s["group"].startswith("pair") and s.get("untested", 0) < s["replicates"]]
    worst = lambda xs, key: max((x[key] for x in xs), default=None)
    return {
        "worst_familywise_error": worst(null, "familywise_error"),
        "worst_top_line_called_below": max((max(s["top_called_below"]) for s in tied), default=None),
        "worst_false_positive_rate": worst(pairs, "false_positive_rate"),
        "lowest_pair_coverage": min((s["coverage"] for s in covered), default=None),
        "lowest_simultaneous_coverage": min((s["simultaneous_coverage"] for s in null + tied), default=None),
    }


def render_stats_calibration(record: dict) -> str:
    found = [s["summary"] for s in record["raw"]["scenarios"]]
    pct = lambda x, se=None: "—" if x is None else f"{100 * x:.1f} %" + ("" if se is None else f" ± {100 * se:.1f}")
    family = [
        [
            s["name"],
            str(s["replicates"]),
            pct(s["familywise_error"], s["familywise_error_se"]),
            pct(s["simultaneous_coverage"]),
            ", ".join(pct(x) for x in s.get("top_called_below", [])) or "—",
            ", ".join(f"{k}: {pct(v)}" for k, v in s.get("power", {}).items()) or "—",
        ]
        for s in found
        if "familywise_error" in s
    ]
    pairs = [
        [
            s["name"],
            str(s["replicates"]),
            pct(s.get("false_positive_rate"), s.get("false_positive_rate_se")) if "false_positive_rate" in s else "—",
            pct(s["coverage"]),
            pct(s["power"]) if "power" in s else "—",
            pct(s["df_infinite"]),
            ", ".join(s["method"]),
        ]
        for s in found
        if "coverage" in s
    ]
    parts = [provenance(record)]
    if family:
        parts.append(
            markdown(
                [
                    "comparison group (versus_best)",
                    "replicates",
                    "P(any top line called below)",
                    "all intervals cover",
                    "each top line called below",
                    "power on the lower lines",
                ],
                family,
                "lrrrrl",
            )
        )
    if pairs:
        parts.append(
            markdown(
                ["one comparison (compare_lines)", "replicates", "false positives at 5 %", "95 % interval covers", "power (gap 0.02)", "df = ∞", "method"],
                pairs,
                "lrrrrrl",
            )
        )
    degenerate = record["raw"].get("degenerate", {})
    if degenerate:
        said = {k: ", ".join(v["vs_best"]) if "vs_best" in v else f"{v['method']} (p {v['p']})" for k, v in degenerate.items()}
        parts.append("Degenerate inputs: " + "; ".join(f"{k} → {v}" for k, v in said.items()) + ".")
    return "\n\n".join(parts)


# contention --------------------------------------------------------------------------------------------------


def summarise_contention(raw: dict) -> dict:
    """Per cell, threads and wait policy: the median step rate quiet and beside the hogs, the slowdown, what a fair
    share of the cores would cost ((T + H) / C, at least 1) and the slowdown over it, and how each run was marked."""
    cores, hogs = raw["cores"], raw["hogs"]
    out = []
    keys = list(dict.fromkeys((r["cell"], r["threads"], r["policy"]) for r in raw["runs"]))
    for cell, threads, policy in keys:
        runs = [r for r in raw["runs"] if (r["cell"], r["threads"], r["policy"]) == (cell, threads, policy)]
        quiet = [r for r in runs if r["hogs"] == 0]
        busy = [r for r in runs if r["hogs"] > 0]
        rate = lambda rs: statistics.median(r["steps_per_second"] for r in rs) if rs else math.nan
        fair = max(1.0, (threads + hogs) / cores)
        slowdown = _ratio(rate(quiet), rate(busy))
        out.append(
            {
                "cell": cell,
                "threads": threads,
                "policy": policy,
                "quiet_steps_per_second": rate(quiet),
                "busy_steps_per_second": rate(busy),
                "slowdown": slowdown,
                "fair_slowdown": fair,
                "vs_fair": slowdown / fair,
                "quiet_core_wait": statistics.median(r["machine"]["core_wait_share"] or 0 for r in quiet) if quiet else math.nan,
                "busy_core_wait": statistics.median(r["machine"]["core_wait_share"] or 0 for r in busy) if busy else math.nan,
                "quiet_contended": sum(r["contended"] for r in quiet),
                "busy_contended": sum(r["contended"] for r in busy),
                "quiet_runs": len(quiet),
                "busy_runs": len(busy),
            }
        )
    return {"cells": out}


def render_contention(record: dict) -> str:
    s, raw = summarise_contention(record["raw"]), record["raw"]
    rows = [
        [
            c["cell"],
            c["threads"],
            c["policy"],
            f"{c['quiet_steps_per_second']:.1f}",
            f"{c['busy_steps_per_second']:.1f}",
            f"{c['slowdown']:.1f}×",
            f"{c['fair_slowdown']:.1f}×",
            f"{c['vs_fair']:.1f}×",
            f"{c['quiet_core_wait']:.0%} / {c['busy_core_wait']:.0%}",
            f"{c['quiet_contended']} of {c['quiet_runs']} / {c['busy_contended']} of {c['busy_runs']}",
        ]
        for c in s["cells"]
    ]
    table = markdown(
        [
            "cell",
            "threads",
            "OpenMP wait",
            "steps/s quiet",
            f"beside {raw['hogs']} hogs",
            "slowdown",
            "fair",
            "vs fair",
            "core wait quiet / busy",
            "marked contended quiet / busy",
        ],
        rows,
        "lrlrrrrrrr",
    )
    return f"{provenance(record)}\n\n{table}"


SUMMARISE = {
    "precision": summarise_precision,
    "frozen_cache": summarise_frozen_cache,
    "parallel": summarise_parallel,
    "eval_speed": summarise_eval_speed,
    "data_speed": summarise_data_speed,
    "threads": summarise_threads,
    "thread_ops": summarise_thread_ops,
    "stats_calibration": summarise_stats_calibration,
    "contention": summarise_contention,
}
RENDER = {
    "precision": render_precision,
    "frozen_cache": render_frozen_cache,
    "parallel": render_parallel,
    "eval_speed": render_eval_speed,
    "data_speed": render_data_speed,
    "threads": render_threads,
    "thread_ops": render_thread_ops,
    "stats_calibration": render_stats_calibration,
    "contention": render_contention,
}


def render(record: dict) -> str:
    return RENDER[record["benchmark"]](record)


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: benchmarks/tables.py results/benchmarks/<name>.json [...]", file=sys.stderr)
        return 2
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"{path}: cannot read a benchmark record ({e}); run the benchmark that writes it", file=sys.stderr)
            return 2
        if record.get("benchmark") not in RENDER:
            print(f"{path}: unknown benchmark {record.get('benchmark')!r}; expected one of {', '.join(RENDER)}", file=sys.stderr)
            return 2
        print(render(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How often the leaderboard's verdicts and intervals are wrong, measured on simulated lines whose truth is known:
the familywise error of "below" when the best is picked from the same data, the false-positive rate and coverage of
one paired comparison, the power on lines truly below, and what degenerate inputs give. Every replicate goes
through the project's own code: rows and per-item scores are built as a grid would write them and judged by
`bench.report.verdicts.versus_best` (the leaderboard's columns) and `compare_lines` (one paired test).

    .venv/bin/python benchmarks/stats_calibration.py [--replicates 1000] [--workers 2]

The simulated design is the seed question's: N = 200 shared test episodes of 20 queries each, whose difficulty
every line shares (an episode hard for one line is hard for all), a line × episode interaction (lines find
different episodes hard: sd 0.05), a per-seed shift (each line's seed sd drawn in 0.01–0.03) and binomial
seed × episode noise. A line of identical replicates is one run repeated (a frozen trunk scored untrained).
The truth of line a − line b is μ_a − μ_b (the population mean over episodes and seeds)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
METRIC = "few_shot_20way_1shot_accuracy"
ITEMS, QUERIES = 200, 20


def simulate_lines(rng, means: list[float], seeds: int | list[int], fixed: tuple[int, ...] = (), items: int = ITEMS):
    """Per line, (per-seed row values, per-seed per-episode correct counts): lines with the given true means on one
    shared draw of episodes; lines whose index is in `fixed` are one deterministic run repeated `seeds` times (no seed shift: nothing in it
    depends on the seed; its per-episode outcomes are still a draw of the episodes)."""
    difficulty = rng.uniform(0.25, 0.75, items)
    counts = [seeds] * len(means) if isinstance(seeds, int) else seeds
    out = []
    for index, (mu, n) in enumerate(zip(means, counts)):
        interaction = rng.normal(0, 0.05, items)
        spread = rng.uniform(0.01, 0.03)

        def one(shift: bool = True):
            p = np.clip(difficulty + mu + interaction + (rng.normal(0, spread) if shift else 0.0), 0.01, 0.99)
            return rng.binomial(QUERIES, p).astype(np.uint8)

        runs = [one(shift=False)] * n if index in fixed else [one() for _ in range(n)]
        out.append(runs)
    return out


def lines_of(simulated, material: str, with_items: bool = True):
    """(bench.report.lines.Line objects of the simulated rows, `load(row)`: a row's simulated per-episode counts, as
    bench.report.rows.items_loader gives a real row's items; None for every row without items)."""
    from bench.report.lines import Line
    from bench.schema import Row

    lines, kept = [], {}
    for index, runs in enumerate(simulated):
        rows = []
        for s, correct in enumerate(runs):
            items = {METRIC: correct, f"{METRIC}.queries": np.array(QUERIES, np.uint16), f"material.{METRIC}": np.array(material)}
            kept[f"line{index}-seed{s}"] = items if with_items else None
            rows.append(
                Row.from_dict(
                    {
                        "cell_id": f"line{index}-seed{s}",
                        "config": {"backbone": f"line{index}", "seed": s},
                        "status": "ok",
                        "metrics": {METRIC: float(correct.mean() / QUERIES)},
                        "train": {"steps": 1, "stopped_by": "max_steps"},
                    }
                )
            )
        lines.append(Line(tuple(rows)))
    return lines, lambda row: kept[row.cell_id]


# --- scenarios: each returns one replicate's outcome ----------------------------------------------------------


def family_replicate(seed: int, means: list[float], seeds: int, with_items: bool = True) -> dict:
    """One comparison group judged by versus_best: which lines were called below, and whether every simultaneous
    interval covered its truth (line − the observed best)."""
    from bench.report.verdicts import versus_best

    rng = np.random.default_rng(seed)
    lines, load = lines_of(simulate_lines(rng, means, seeds), f"{seed:064x}", with_items)
    out = versus_best(lines, METRIC, load)
    best = out["vs_best"].index("best")
    below = [v == "below" for v in out["vs_best"]]
    covered = all(math.isnan(lo) or lo <= means[i] - means[best] <= hi for i, (lo, hi) in enumerate(zip(out["vs_best_low"], out["vs_best_high"])))
    return {"below": below, "covered": covered, "untested": sum(v == "untested" for v in out["vs_best"])}


def pair_replicate(seed: int, seeds_a: int, seeds_b: int, gap: float, fixed_b: bool, with_items: bool = True) -> dict:
    """One comparison of a − b by compare_lines (no family): p, whether its 95 % interval covers the truth, method."""
    from bench.report.paired import ItemBootstrap
    from bench.report.verdicts import compare_lines

    rng = np.random.default_rng(seed)
    simulated = simulate_lines(rng, [gap, 0.0], [seeds_a, seeds_b], fixed=(1,) if fixed_b else ())
    (a, b), load = lines_of(simulated, f"{seed:064x}", with_items)
    c = compare_lines(a, b, METRIC, load, ItemBootstrap())
    return {"p": c.p, "covered": (c.low <= gap <= c.high) if c.tested else None, "method": c.method, "df": c.df}


def _run(job):
    kind, seed, kwargs = job
    return (family_replicate if kind == "family" else pair_replicate)(seed, **kwargs)


def scenarios(replicates: int) -> list[dict]:
    """The scenarios the issue asks for: the global null at 2/5/10/25 lines × 2/3/5 seeds; three lines tied at the
    top and three lower by 0.03–0.05; one paired test between seeded lines and against identical replicates (null and
    a 0.02 gap, for coverage); seeds-only families and tests (rows without per-item files)."""
    out = []
    for k in (2, 5, 10, 25):
        for n in (2, 3, 5):
            out.append(
                {"name": f"null, {k} lines, {n} seeds", "kind": "family", "group": "null", "lines": k, "seeds": n, "kwargs": {"means": [0.0] * k, "seeds": n}}
            )
    for n in (2, 3, 5):
        out.append(
            {
                "name": f"3 tied top + 3 lower (0.03, 0.04, 0.05), {n} seeds",
                "kind": "family",
                "group": "tied top",
                "lines": 6,
                "seeds": n,
                "kwargs": {"means": [0.05, 0.05, 0.05, 0.02, 0.01, 0.0], "seeds": n},
            }
        )
    for n in (3, 5):
        out.append(
            {
                "name": f"null, 5 lines, {n} seeds, seeds only (no items)",
                "kind": "family",
                "group": "null, seeds only",
                "lines": 5,
                "seeds": n,
                "kwargs": {"means": [0.0] * 5, "seeds": n, "with_items": False},
            }
        )
    for n in (2, 3, 5):
        for gap in (0.0, 0.02):
            out.append(
                {
                    "name": f"{n} v {n} seeds, gap {gap}",
                    "kind": "pair",
                    "group": "pair",
                    "seeds": n,
                    "gap": gap,
                    "kwargs": {"seeds_a": n, "seeds_b": n, "gap": gap, "fixed_b": False},
                }
            )
            out.append(
                {
                    "name": f"{n} seeds v identical replicates, gap {gap}",
                    "kind": "pair",
                    "group": "pair v identical",
                    "seeds": n,
                    "gap": gap,
                    "kwargs": {"seeds_a": n, "seeds_b": 3, "gap": gap, "fixed_b": True},
                }
            )
    for n in (3,):
        out.append(
            {
                "name": f"{n} v {n} seeds, gap 0.0, seeds only (no items)",
                "kind": "pair",
                "group": "pair, seeds only",
                "seeds": n,
                "gap": 0.0,
                "kwargs": {"seeds_a": n, "seeds_b": n, "gap": 0.0, "fixed_b": False, "with_items": False},
            }
        )
    for s in out:
        s["replicates"] = replicates
    return out


def summarise(scenario: dict, results: list[dict]) -> dict:
    """The figures of one scenario, with their Monte-Carlo standard errors."""
    n = len(results)
    rate = lambda hits: (hits / n, math.sqrt(max(hits, 1) * (n - max(hits, 1)) / n) / n)
    out = {"name": scenario["name"], "group": scenario["group"], "replicates": n}
    if scenario["kind"] == "family":
        means = scenario["kwargs"]["means"]
        top = max(means)
        out["familywise_error"], out["familywise_error_se"] = rate(sum(any(b for i, b in enumerate(r["below"]) if means[i] == top) for r in results))
        out["simultaneous_coverage"], _ = rate(sum(r["covered"] for r in results))
        if len(set(means)) > 1:
            out["top_called_below"] = [rate(sum(r["below"][i] for r in results))[0] for i, m in enumerate(means) if m == top]
            out["power"] = {f"{top - m:.2f} below": rate(sum(r["below"][i] for r in results))[0] for i, m in enumerate(means) if m < top}
    else:
        tested = [r for r in results if r["covered"] is not None]
        hits = sum(r["p"] < 0.05 for r in tested)
        if scenario["gap"] == 0:
            out["false_positive_rate"], out["false_positive_rate_se"] = rate(hits)
        else:
            out["power"] = hits / n
        out["coverage"] = sum(r["covered"] for r in tested) / max(len(tested), 1)
        out["untested"] = n - len(tested)
        out["df_infinite"] = sum(1 for r in tested if not math.isfinite(r["df"])) / max(len(tested), 1)
        out["method"] = sorted({r["method"] for r in results})
    return out


def degenerate() -> dict:
    """What inputs with nothing to test give: one seed per line, and two lines of identical seeds without items."""
    from bench.report.paired import compare_seeds
    from bench.report.verdicts import versus_best

    rng = np.random.default_rng(0)
    one, load = lines_of(simulate_lines(rng, [0.0, 0.0], 1), "a" * 64)
    out = {"1 seed per line": {"vs_best": versus_best(one, METRIC, load)["vs_best"]}}
    c = compare_seeds(np.array([0.5, 0.5, 0.5]), np.array([0.5001, 0.5001, 0.5001]), True, True)
    out["identical seeds 1e-4 apart, no items"] = {"method": c.method, "p": c.p}
    return out


def main(argv: list[str] | None = None) -> int:
    import record
    import tables

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default=None, help="run only the scenarios whose name contains this")
    record.add_out_argument(parser, "stats_calibration")
    args = parser.parse_args(argv)
    chosen = [s for s in scenarios(args.replicates) if args.only is None or args.only in s["name"]]
    raw = {"scenarios": [], "degenerate": degenerate(), "design": {"items": ITEMS, "queries": QUERIES}}
    with ProcessPoolExecutor(args.workers) as pool:
        for number, s in enumerate(chosen):
            start = time.perf_counter()
            jobs = [(s["kind"], 1_000_003 * number + r, s["kwargs"]) for r in range(s["replicates"])]
            results = list(pool.map(_run, jobs, chunksize=20))
            summary = summarise(s, results)
            summary["seconds"] = round(time.perf_counter() - start, 1)
            raw["scenarios"].append({**{k: v for k, v in s.items() if k != "kwargs"}, "summary": summary})
            print(summary, file=sys.stderr, flush=True)
    record.write("stats_calibration", args, raw, tables.summarise_stats_calibration(raw))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

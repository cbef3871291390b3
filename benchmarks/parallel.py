"""Executors side by side in one run: a 20-cell digits grid (benchmarks/parallel_grid.toml: the quickstart at 6e8cbe3) in this process, in 1 worker × all threads, in
N workers × 1 thread, on a local Ray instance and through submitit's local executor; then the disk cache's
gain on a second run of a frozen-backbone grid. Prints wall times and each executor's overhead.

    .venv/bin/python benchmarks/parallel.py [--grid benchmarks/parallel_grid.toml] [--repeats 1]

Overhead is wall time over the in-process run at the same total threads, minus 1; with 2 cores, N workers
× 1 thread compete for the same cores, so their speed-up measures what parallel cells gain over threads.
Every run's figures go to results/benchmarks/parallel.json (--out), which benchmarks/tables.py renders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import record
import tables

FROZEN = """
name = "frozen"
[budget]
max_steps = 100
[model]
freeze = "backbone"
[axes]
backbone = ["efficientnet_lite0_imagenet"]
loss = ["contrastive", "triplet"]
seed = [0, 1, 2]
[backbone.efficientnet_lite0_imagenet]
image_size = 96
"""


def timed(folder: Path, grid: Path, results: str, *args: str) -> tuple[float, list[dict]]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    seconds = record.bench_run(folder, "--grid", str(grid), "--results", results, *args, env=env, failed_cells_ok=True)
    return seconds, [json.loads(line) for line in (folder / results).read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("benchmarks/parallel_grid.toml"))
    parser.add_argument("--repeats", type=int, default=1, help="run every executor this many times, interleaved; tables show medians")
    record.add_out_argument(parser, "parallel")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    variants = [
        ("in-process", []),
        (f"1 worker × {cores} threads", ["--workers", "1", "--threads", str(cores)]),
        (f"{cores} workers × 1 thread", ["--workers", str(cores), "--threads", "1"]),
        (f"Ray, {cores} CPUs (1 per cell)", ["--executor", "ray"]),
        (f"submitit-local, {cores} jobs × 1 thread", ["--executor", "submitit-local", "--workers", str(cores), "--threads", "1"]),
    ]
    runs = {name: [] for name, _ in variants}
    cache_runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        grid = folder / "grid.toml"
        grid.write_text(args.grid.read_text() + "\n[resources]\ncpus = 1\n")
        (folder / "frozen.toml").write_text(FROZEN)
        for repeat in range(args.repeats):
            for i, (name, extra) in enumerate(variants):
                seconds, got = timed(folder, grid, f"{repeat}-{i}.jsonl", "--no-disk-cache", *extra)
                runs[name].append({"seconds": seconds, "ok": sum(r["status"] == "ok" for r in got), "total": len(got), "statuses": [r["status"] for r in got]})
            cold, _ = timed(folder, folder / "frozen.toml", f"cold{repeat}.jsonl", "--cache-dir", f"cache{repeat}")
            warm, _ = timed(folder, folder / "frozen.toml", f"warm{repeat}.jsonl", "--cache-dir", f"cache{repeat}")
            shutil.rmtree(folder / f"cache{repeat}", ignore_errors=True)
            cache_runs.append({"cold_seconds": cold, "warm_seconds": warm})
    raw = {
        "grid": str(args.grid),
        "cores": cores,
        "variants": [{"name": name, "args": ["--no-disk-cache", *extra], "runs": runs[name]} for name, extra in variants],
        "disk_cache": {"grid": "frozen EfficientNet-Lite0 grid (6 cells, 96 px, digits)", "toml": FROZEN, "runs": cache_runs},
    }
    out = record.write("parallel", args, raw, tables.summarise_parallel(raw))
    print(f"{args.grid} ({raw['variants'][0]['runs'][0]['total']} cells), {cores} cores\n")
    print(tables.render(json.loads(out.read_text())))


if __name__ == "__main__":
    main()

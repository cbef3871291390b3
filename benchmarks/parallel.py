"""Executors side by side in one run: the quickstart grid in this process, in 1 worker × all threads, in
N workers × 1 thread, on a local Ray instance and through submitit's local executor; then the disk cache's
gain on a second run of a frozen-backbone grid. Prints wall times and each executor's overhead.

    .venv/bin/python benchmarks/parallel.py [--grid examples/quickstart.toml]

Overhead is wall time over the in-process run at the same total threads, minus 1; with 2 cores, N workers
× 1 thread compete for the same cores, so their speed-up measures what parallel cells gain over threads.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--grid", str(grid), "--results", results, *args],
                          cwd=folder, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return seconds, [json.loads(line) for line in (folder / results).read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("examples/quickstart.toml"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    variants = [("in-process", []), (f"1 worker × {cores} threads", ["--workers", "1", "--threads", str(cores)]),
                (f"{cores} workers × 1 thread", ["--workers", str(cores), "--threads", "1"]),
                (f"Ray, {cores} CPUs (1 per cell)", ["--executor", "ray"]),
                (f"submitit-local, {cores} jobs × 1 thread", ["--executor", "submitit-local", "--workers", str(cores), "--threads", "1"])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        grid = folder / "grid.toml"
        grid.write_text(args.grid.read_text() + "\n[resources]\ncpus = 1\n")
        for name, extra in variants:
            seconds, got = timed(folder, grid, f"{len(rows)}.jsonl", "--no-disk-cache", *extra)
            rows.append((name, seconds, sum(r["status"] == "ok" for r in got), len(got)))
        (folder / "frozen.toml").write_text(FROZEN)
        cold, _ = timed(folder, folder / "frozen.toml", "cold.jsonl", "--cache-dir", "cache")
        warm, _ = timed(folder, folder / "frozen.toml", "warm.jsonl", "--cache-dir", "cache")
        shutil.rmtree(folder / "cache", ignore_errors=True)
    base = rows[0][1]
    print(f"{args.grid} ({rows[0][3]} cells), {cores} cores\n")
    print("| executor | wall s | vs in-process | ok cells |\n|---|---:|---:|---:|")
    for name, seconds, ok, total in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / base:.2f}× | {ok} / {total} |")
    print("\n| frozen EfficientNet-Lite0 grid (6 cells, 96 px, digits) | wall s |\n|---|---:|")
    print(f"| first run (features computed, written to --cache-dir) | {cold:.1f} |\n| second run (features read from disk) | {warm:.1f} |")
    print(f"| ratio | {cold / warm:.2f}× |")


if __name__ == "__main__":
    main()

"""A busy neighbour beside a seconds-bound cell: what it costs, and what OpenMP's wait policy has to do with it.

Three real cells (`bench run` in a fresh process, scikit-learn's digits, a `max_seconds` budget): a head on a frozen
EfficientNet-Lite0's cached features (contrastive), conv4 from scratch (triplet) and a fine-tuned Lite0
(contrastive), each at 1 and 2 torch threads, on a quiet machine and beside `--hogs` busy-looping processes, with
GNU OpenMP's default wait (spin 300,000 times, then sleep: GOMP_SPINCOUNT=300000, what torch did before) and with
the passive wait `bench` now sets (OMP_WAIT_POLICY=PASSIVE). Conditions are interleaved.

    .venv/bin/python benchmarks/contention.py [--seconds 6] [--hogs 2] [--repeats 1]

A step rate is steps ÷ the budget clock's own loop seconds (`train.machine.wall_seconds`). With T threads beside H
hogs on C cores, a fair scheduler gives the cell C / (T + H) of a core per thread, so a compute-bound cell should
slow down by about (T + H) / C (capped below at 1): *vs fair* is the measured slowdown over that. Every run's row
figures go to results/benchmarks/contention.json (--out), which benchmarks/tables.py renders. Run it on an
otherwise quiet machine: the hogs are the only neighbours it means to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import record
import tables

CELLS = {  # name → the grid's cell (one backbone, one loss, digits)
    "head on cached Lite0 features": ("efficientnet_lite0_imagenet", "contrastive", 'freeze = "backbone"', 32),
    "conv4 from scratch": ("conv4", "triplet", 'freeze = "none"', 28),
    "fine-tuned Lite0": ("efficientnet_lite0_imagenet", "contrastive", 'freeze = "none"', 64),
}
POLICIES = {"spin then sleep (GNU default)": {"GOMP_SPINCOUNT": "300000"}, "passive (bench's default)": {"OMP_WAIT_POLICY": "PASSIVE"}}
GRID = """name = "cell"
[budget]
max_seconds = {seconds}
[model]
{freeze}
[axes]
backbone = ["{backbone}"]
loss = ["{loss}"]
dataset = ["digits"]
seed = [0]
[backbone.{quoted}]
image_size = {size}
"""
HOG = "while True: pass"


def grid(cell: str, seconds: float) -> str:
    backbone, loss, freeze, size = CELLS[cell]
    return GRID.format(seconds=seconds, freeze=freeze, backbone=backbone, loss=loss, quoted=json.dumps(backbone), size=size)


def run_cell(folder: Path, cell: str, threads: int, hogs: int, policy: str, seconds: float) -> dict:
    """One cell in a fresh `bench run` (beside `hogs` busy loops): its steps, loop seconds and machine record."""
    (folder / "grid.toml").write_text(grid(cell, seconds))
    results = folder / "r.jsonl"
    results.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | POLICIES[policy]
    busy = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
    try:
        record.bench_run(folder, "--grid", "grid.toml", "--results", str(results), "--threads", str(threads), "--cache-dir", str(folder / "cache"), env=env)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    row = json.loads(results.read_text().splitlines()[-1])
    train, machine = row["train"], row["train"]["machine"]
    return {
        "cell": cell,
        "threads": threads,
        "hogs": hogs,
        "policy": policy,
        "steps": train["steps"],
        "stopped_by": train["stopped_by"],
        "loop_seconds": machine["wall_seconds"],
        "steps_per_second": train["steps"] / machine["wall_seconds"],
        "charged_seconds": train["charged_seconds"],
        "machine": machine,
        "contended": _contended(row),
    }


def _contended(row: dict) -> bool:
    from bench.results import contended

    return contended(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="each cell's max_seconds budget")
    parser.add_argument("--hogs", type=int, default=2, help="busy-looping processes beside the cell (0 = quiet only)")
    parser.add_argument("--repeats", type=int, default=1, help="run every condition this many times, interleaved; tables show medians")
    record.add_out_argument(parser, "contention")
    args = parser.parse_args()
    runs = []
    conditions = [(c, t, h, p) for c in CELLS for t in (1, 2) for p in POLICIES for h in (0, args.hogs)]
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for n, (cell, threads, hogs, policy) in enumerate(conditions, 1):
                run = run_cell(Path(tmp), cell, threads, hogs, policy, args.seconds)
                runs.append(run | {"repeat": repeat})
                print(
                    f"[{n}/{len(conditions)}] {cell} · {threads} threads · {hogs} hogs · {policy}: {run['steps']} steps, "
                    f"{run['steps_per_second']:.1f}/s, core wait {run['machine']['core_wait_share']}",
                    file=sys.stderr,
                )
    raw = {"cores": os.cpu_count(), "seconds": args.seconds, "hogs": args.hogs, "runs": runs}
    record.write("contention", args, raw, tables.summarise_contention(raw))
    print(tables.render_contention(json.loads(args.out.read_text())))


if __name__ == "__main__":
    main()

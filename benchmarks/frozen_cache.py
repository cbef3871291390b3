"""Frozen-feature cache: a sweep of losses × seeds over one frozen pretrained backbone, with and without
the cache, side by side in one run. Prints wall times, their ratio, and the largest metric difference;
every cell's figures go to results/benchmarks/frozen_cache.json (--out), which benchmarks/tables.py renders.

    .venv/bin/python benchmarks/frozen_cache.py [--seeds 6] [--steps 100] [--image-size 96] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import record
import tables

LOSSES = ["bce_l1", "contrastive", "triplet"]
METRICS = ("verification_roc_auc", "recall_at_1")
GRID = """
name = "{name}"
[budget]
max_steps = {steps}
[train]
batch_size = 32
[model]
freeze = "backbone"
[eval]
n_way = 4
episodes = 200
[axes]
backbone = ["{backbone}"]
loss = {losses}
seed = {seeds}
[backbone.{quoted}]
image_size = {size}
"""


def run(folder: Path, name: str, extra: list[str], **fmt) -> tuple[float, list[dict]]:
    grid = folder / f"{name}.toml"
    grid.write_text(GRID.format(name=name, quoted=json.dumps(fmt["backbone"]), losses=json.dumps(LOSSES), **fmt))
    seconds = record.bench_run(folder, "--grid", str(grid), "--results", str(folder / f"{name}.jsonl"), *extra)
    return seconds, [json.loads(l) for l in (folder / f"{name}.jsonl").read_text().splitlines()]


def cells(rows: list[dict]) -> list[dict]:
    # wall time: a cached cell's train.seconds also holds the charged trunk time (the budget's clock)
    return [
        {
            "loss": r["config"]["loss"],
            "seed": r["config"]["seed"],
            "status": r["status"],
            "stopped_by": r["train"].get("stopped_by"),
            "feature_cache": r["train"].get("feature_cache"),
            "train_seconds": r["train"]["seconds"],
            "train_wall_seconds": r["train"].get("wall_seconds", r["train"]["seconds"]),
            "eval_seconds": r["eval_seconds"],
            "metrics": {m: r["metrics"][m] for m in METRICS},
        }
        for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--backbone", default="efficientnet_lite0_imagenet")
    parser.add_argument("--repeats", type=int, default=1, help="run both sweeps this many times, alternating; tables show medians")
    record.add_out_argument(parser, "frozen_cache")
    args = parser.parse_args()
    fmt = dict(steps=args.steps, seeds=list(range(args.seeds)), size=args.image_size, backbone=args.backbone)
    repeats = []
    for _repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            cached_s, cached = run(folder, "cached", [], **fmt)
            plain_s, plain = run(folder, "plain", ["--no-feature-cache"], **fmt)
        repeats.append({"cached": {"wall_seconds": cached_s, "cells": cells(cached)}, "plain": {"wall_seconds": plain_s, "cells": cells(plain)}})
    raw = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "dataset": "digits",
        "steps": args.steps,
        "batch_size": 32,
        "losses": LOSSES,
        "seeds": args.seeds,
        "repeats": repeats,
    }
    out = record.write("frozen_cache", args, raw, tables.summarise_frozen_cache(raw))
    print(
        f"{len(repeats[0]['cached']['cells'])} cells: {args.backbone} frozen at {args.image_size} px, digits, {args.steps} steps × 32 images, "
        f"{len(LOSSES)} losses × {args.seeds} seeds\n"
    )
    print(tables.render(json.loads(out.read_text())))


if __name__ == "__main__":
    main()

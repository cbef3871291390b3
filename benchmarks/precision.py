"""fp32 against `precision = "auto"` (bf16 autocast + channels_last where the CPU has fast bf16): the same
cells side by side in one run, with training speed and every metric, so users see what bf16 costs.

    .venv/bin/python benchmarks/precision.py [--steps 40] [--seeds 2] [--omniglot data/omniglot]

Speed is training images per second of wall time and achieved GFLOP/s (FLOPs per image from
torch.utils.flop_counter); metrics are means over seeds, and the last column is bf16 − fp32. Every cell's
figures go to results/benchmarks/precision.json (--out); benchmarks/tables.py renders the tables from it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import record
import tables

GRID = """
name = "precision"
[budget]
max_steps = {steps}
[train]
batch_size = 32
[eval]
episodes = 200
max_pairs = 500000
distance = "cosine"
[axes]
backbone = ["koch", "timm/resnet18"]
loss = ["triplet"]
dataset = ["{dataset}"]
seed = {seeds}
"train.precision" = ["fp32", "auto"]
[backbone.koch]
image_size = 65
[backbone."timm/resnet18"]
image_size = 64
{dataset_table}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--omniglot", help="folder with the Omniglot small-set zips (default: digits)")
    record.add_out_argument(parser, "precision")
    args = parser.parse_args()
    dataset, table = "digits", ""
    if args.omniglot:
        root = Path(args.omniglot).resolve()
        dataset = "omniglot"
        table = f'[dataset.omniglot]\nroot = "{root}"\nbackground = "images_background_small1"\nevaluation = "images_background_small2"'
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "g.toml").write_text(GRID.format(steps=args.steps, seeds=list(range(args.seeds)), dataset=dataset, dataset_table=table))
        record.bench_run(folder, "--grid", "g.toml", "--results", "r.jsonl")
        rows = [json.loads(line) for line in (folder / "r.jsonl").read_text().splitlines()]
    cells = [
        {
            "backbone": r["config"]["backbone"],
            "precision_setting": r["config"]["train"]["precision"],
            "precision": r["precision"],
            "seed": r["config"]["seed"],
            "status": r["status"],
            "torch_threads": r["env"]["torch_threads"],
            **{k: r["train"][k] for k in ("samples", "steps", "wall_seconds", "seconds", "gflop_per_second", "images_per_second")},
            "metrics": {k: v for k, v in r["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        }
        for r in rows
    ]
    raw = {"dataset": dataset, "loss": "triplet", "batch_size": 32, "cells": cells}
    out = record.write("precision", args, raw, tables.summarise_precision(raw))
    print(f"{dataset}, triplet loss, {args.steps} steps × 32 images, {args.seeds} seeds, {rows[0]['env']['torch_threads']} torch threads\n")
    print(tables.render(json.loads(out.read_text())))


if __name__ == "__main__":
    main()

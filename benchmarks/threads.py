"""Does a result move with the torch thread count? The same cells, the same seeds, the same steps, run at 1 and at 2
threads (two `bench run` processes, in-process executor, no disk cache), in fp32 and in `precision = "auto"`,
compared paired by seed: a systematic shift shows as a mean paired difference well outside its own spread; chaotic
noise as paired differences centred on 0 with a spread the size of the seed-to-seed spread.

    .venv/bin/python benchmarks/threads.py --omniglot data/omniglot [--seeds 5] [--steps 300]

Cells (Omniglot's small sets, triplet loss, 65 px; 28 px for conv4): EfficientNet-Lite0 fine-tuned, EfficientNet-Lite0
frozen (BatchNorm in eval mode) and conv4 from scratch. Every figure goes to results/benchmarks/threads.json (--out),
which benchmarks/tables.py renders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import record
import tables

GRID = """
name = "threads"
[budget]
max_steps = {steps}
[train]
batch_size = 32
lr = 1e-3
[eval]
episodes = 200
max_pairs = 500000
distance = "cosine"
[axes]
backbone = ["efficientnet_lite0_imagenet", "conv4"]
loss = ["triplet"]
dataset = ["omniglot"]
seed = {seeds}
"model.freeze" = ["none", "backbone"]
"train.precision" = ["fp32", "auto"]
[backbone.efficientnet_lite0_imagenet]
image_size = 65
[backbone.conv4]
image_size = 28
[dataset.omniglot]
root = "{root}"
background = "images_background_small1"
evaluation = "images_background_small2"
[[exclude]]
backbone = "conv4"
"model.freeze" = "backbone"
"""
METRICS = ("verification_roc_auc", "few_shot_20way_1shot_accuracy", "recall_at_1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--omniglot", required=True, help="folder with the Omniglot small-set zips")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, nargs=2, default=[1, 2], metavar=("A", "B"))
    record.add_out_argument(parser, "threads")
    args = parser.parse_args()
    root = Path(args.omniglot).resolve()
    cells = []
    folder = Path(tempfile.mkdtemp(prefix="threads-"))  # kept when a run fails, with its rows: nothing measured is lost
    (folder / "g.toml").write_text(GRID.format(steps=args.steps, seeds=list(range(args.seeds)), root=root))
    for threads in args.threads:
        seconds = record.bench_run(folder, "--grid", "g.toml", "--results", f"t{threads}.jsonl", "--threads", str(threads), "--no-disk-cache")
        for line in (folder / f"t{threads}.jsonl").read_text().splitlines():
            r = json.loads(line)
            cells.append(
                {
                    "cell_id": r["cell_id"],
                    "backbone": r["config"]["backbone"],
                    "freeze": r["config"]["model"]["freeze"],
                    "precision": r["precision"],
                    "seed": r["config"]["seed"],
                    "threads": r["env"]["torch_threads"],
                    "status": r["status"],
                    "steps": r.get("train", {}).get("steps"),
                    "run_seconds": seconds,
                    "metrics": {m: r.get("metrics", {}).get(m) for m in METRICS},
                }
            )
    shutil.rmtree(folder)
    raw = {"steps": args.steps, "seeds": args.seeds, "threads": args.threads, "metrics": list(METRICS), "cells": cells}
    out = record.write("threads", args, raw, tables.summarise_threads(raw))
    print(tables.render(json.loads(out.read_text())))


if __name__ == "__main__":
    main()

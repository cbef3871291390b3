"""fp32 against `precision = "auto"` (bf16 autocast + channels_last where the CPU has fast bf16): the same
cells side by side in one run, with training speed and every metric, so users see what bf16 costs.

    .venv/bin/python benchmarks/precision.py [--steps 40] [--seeds 2] [--omniglot data/omniglot]

Speed is training images per second of wall time and achieved GFLOP/s (FLOPs per image from
torch.utils.flop_counter); metrics are means over seeds, and the last column is bf16 − fp32.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.eval.definitions import definition

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
    args = parser.parse_args()
    dataset, table = "digits", ""
    if args.omniglot:
        root = Path(args.omniglot).resolve()
        dataset = "omniglot"
        table = f'[dataset.omniglot]\nroot = "{root}"\nbackground = "images_background_small1"\nevaluation = "images_background_small2"'
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "g.toml").write_text(GRID.format(steps=args.steps, seeds=list(range(args.seeds)), dataset=dataset, dataset_table=table))
        subprocess.run([sys.executable, "-m", "bench", "run", "--grid", "g.toml", "--results", "r.jsonl"], check=True, capture_output=True, cwd=folder)
        rows = [json.loads(line) for line in (folder / "r.jsonl").read_text().splitlines()]
    by = {}
    for r in rows:
        by.setdefault((r["config"]["backbone"], r["precision"]), []).append(r)
    if not any(p == "bf16" for _, p in by):
        print("auto ran fp32 here: this CPU has no fast bf16 (AMX / AVX512-BF16), so there is nothing to compare")
    scores = sorted(k for k in rows[0]["metrics"] if (d := definition(k)) and d.direction != "none")
    print(f"{dataset}, triplet loss, {args.steps} steps × 32 images, {args.seeds} seeds, {rows[0]['env']['torch_threads']} torch threads\n")
    backbones = list(dict.fromkeys(b for b, _ in by))
    precisions = [p for p in ("fp32", "bf16") if any(k[1] == p for k in by)]
    print("| backbone | precision | img/s | GFLOP/s | speed-up |\n|---|---|---:|---:|---:|")
    for backbone in backbones:
        base = np.mean([r["train"]["samples"] / r["train"]["wall_seconds"] for r in by[(backbone, "fp32")]])
        for precision in precisions:
            group = by[(backbone, precision)]
            ips = np.mean([r["train"]["samples"] / r["train"]["wall_seconds"] for r in group])
            gflops = np.mean([r["train"]["gflop_per_second"] for r in group])
            print(f"| {backbone} | {precision} | {ips:.0f} | {gflops:.1f} | {ips / base:.2f}× |")
    mean = lambda b, p, k: np.mean([r["metrics"][k] for r in by[(b, p)]])  # noqa: E731
    spread = lambda b, p, k: np.std([r["metrics"][k] for r in by[(b, p)]], ddof=1) if len(by[(b, p)]) > 1 else float("nan")  # noqa: E731
    print("\n| metric (mean over seeds) | " + " | ".join(f"{b} {p}" for b in backbones for p in precisions) + " | " +
          " | ".join(f"{b} bf16 − fp32 (fp32 seed std)" for b in backbones) + " |")
    print("|---|" + "---:|" * (len(backbones) * len(precisions)) + "---:|" * len(backbones))
    for k in scores:
        cells = [f"{mean(b, p, k):.4f}" for b in backbones for p in precisions]
        if "bf16" in precisions:
            cells += [f"{mean(b, 'bf16', k) - mean(b, 'fp32', k):+.4f} ({spread(b, 'fp32', k):.4f})" for b in backbones]
        print(f"| {k} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()

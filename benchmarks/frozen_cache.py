"""Frozen-feature cache: a sweep of losses × seeds over one frozen pretrained backbone, with and without
the cache, side by side in one run. Prints wall times, their ratio, and the largest metric difference.

    .venv/bin/python benchmarks/frozen_cache.py [--seeds 6] [--steps 100] [--image-size 96]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
loss = ["bce_l1", "contrastive", "triplet"]
seed = {seeds}
[backbone.{quoted}]
image_size = {size}
"""


def run(folder: Path, name: str, extra: list[str], **fmt) -> tuple[float, list[dict]]:
    grid = folder / f"{name}.toml"
    grid.write_text(GRID.format(name=name, quoted=json.dumps(fmt["backbone"]), **fmt))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", "run", "--grid", str(grid), "--results", str(folder / f"{name}.jsonl"), *extra],
                   check=True, capture_output=True, cwd=folder)
    seconds = time.perf_counter() - start
    return seconds, [json.loads(l) for l in (folder / f"{name}.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--backbone", default="efficientnet_lite0_imagenet")
    args = parser.parse_args()
    fmt = dict(steps=args.steps, seeds=list(range(args.seeds)), size=args.image_size, backbone=args.backbone)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cached_s, cached = run(folder, "cached", [], **fmt)
        plain_s, plain = run(folder, "plain", ["--no-feature-cache"], **fmt)
    diff = max(abs(a["metrics"][m] - b["metrics"][m]) for a, b in zip(cached, plain) for m in ("verification_roc_auc", "recall_at_1"))
    # wall time: a cached cell's train.seconds also holds the charged trunk time (the budget's clock)
    train = lambda rows: sum(r["train"].get("wall_seconds", r["train"]["seconds"]) + r["eval_seconds"] for r in rows)  # noqa: E731
    print(f"{len(cached)} cells: {args.backbone} frozen at {args.image_size} px, digits, {args.steps} steps × 32 images, 3 losses × {args.seeds} seeds")
    print("| sweep | wall s (incl. start-up) | train + eval s | max metric diff |")
    print("|---|---:|---:|---:|")
    print(f"| recompute the frozen trunk every step | {plain_s:.1f} | {train(plain):.1f} | |")
    print(f"| frozen-feature cache | {cached_s:.1f} | {train(cached):.1f} | {diff:.2e} |")
    print(f"| ratio | {plain_s / cached_s:.1f}× | {train(plain) / max(train(cached), 1e-9):.1f}× | |")


if __name__ == "__main__":
    main()

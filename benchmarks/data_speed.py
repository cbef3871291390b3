"""How long the data side takes next to training: dataset decode times, and one augmentation of a batch as
a ratio of one Koch-CNN training step on the same batch, written to results/benchmarks/data_speed.json (--out)
and rendered by benchmarks/tables.py. Run: .venv/bin/python benchmarks/data_speed.py [cpu|cuda]"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import record
import tables
import torch

from bench.data.augment import make_augment
from bench.data.datasets import mnist, omniglot

# the README's data/omniglot, else the shared copy beside this checkout
OMNIGLOT = next((p for p in (record.ROOT / "data" / "omniglot", record.ROOT.parent / "shared" / "data" / "omniglot") if p.is_dir()), None)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def seconds(fn, repeat: int = 1) -> list[float]:
    """Seconds of each of `repeat` calls, after one warm-up call: first-call allocations and lazy imports
    are not what a grid pays per step."""
    fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("device", nargs="?", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--omniglot",
        type=Path,
        default=OMNIGLOT,
        help="folder with the Omniglot small-set zips (default: data/omniglot or ../shared/data/omniglot when present)",
    )
    parser.add_argument(
        "--fashion-mnist",
        type=Path,
        default=DEBIAN_FASHION if DEBIAN_FASHION.is_dir() else None,
        help="folder with the Fashion-MNIST idx .gz files (default: Debian's, when present)",
    )
    record.add_out_argument(parser, "data_speed")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch threads {torch.get_num_threads()}, device {device}", file=sys.stderr)
    decode = []
    if args.omniglot:
        start = time.perf_counter()
        data = omniglot(str(args.omniglot), "images_background_small1", "images_background_small2")
        decode.append({"dataset": "omniglot small1+small2 (zips)", "images": len(data.labels), "seconds": time.perf_counter() - start})
    if args.fashion_mnist:
        start = time.perf_counter()
        data = mnist(str(args.fashion_mnist), "fashion-mnist")
        decode.append({"dataset": "fashion-mnist (idx .gz)", "images": len(data.labels), "seconds": time.perf_counter() - start})

    from bench.backbones.koch import koch

    model = koch().to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    batch = torch.randint(0, 256, (32, 1, 105, 105), dtype=torch.uint8, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        optimizer.zero_grad()
        model(batch.float() / 255).square().mean().backward()
        optimizer.step()
        sync()

    step_s = seconds(step, 5 if device.type == "cpu" else 50)
    augment = []
    for name in ("koch", "flip_crop"):
        fn = make_augment(name, 0)
        augment.append({"name": name, "seconds": seconds(lambda: (fn(batch), sync()), 50)})
    raw = {"device": str(device), "batch": [32, 1, 105, 105], "decode": decode, "step_seconds": step_s, "augment": augment}
    out = record.write("data_speed", args, raw, tables.summarise_data_speed(raw))
    print(tables.render(json.loads(out.read_text())))


if __name__ == "__main__":
    main()

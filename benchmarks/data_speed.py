"""How long the data side takes next to training: dataset decode times, and one augmentation of a batch as
a ratio of one Koch-CNN training step on the same batch. Run: .venv/bin/python benchmarks/data_speed.py"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from bench.data.augment import make_augment
from bench.data.datasets import mnist, omniglot

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def seconds(fn, repeat: int = 1) -> float:
    fn()  # warm-up: first-call allocations and lazy imports are not what a grid pays per step
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    device = torch.device(sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"torch threads {torch.get_num_threads()}, device {device}")
    if OMNIGLOT.is_dir():
        start = time.perf_counter()
        data = omniglot(str(OMNIGLOT), "images_background_small1", "images_background_small2")
        print(f"omniglot small1+small2: {len(data.labels)} images decoded from the zips in {time.perf_counter() - start:.2f} s")
    if DEBIAN_FASHION.is_dir():
        start = time.perf_counter()
        data = mnist(str(DEBIAN_FASHION), "fashion-mnist")
        print(f"fashion-mnist (Debian, gz): {len(data.labels)} images in {time.perf_counter() - start:.2f} s")

    from backbones.koch import koch

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
    print(f"koch CNN train step, 32x1x105x105: {step_s * 1e3:.1f} ms")
    for name in ("koch", "flip_crop"):
        augment = make_augment(name, 0)
        aug_s = seconds(lambda: (augment(batch), sync()), 50)
        print(f"augment {name}: {aug_s * 1e3:.2f} ms per batch = {aug_s / step_s:.3f} of a training step")


if __name__ == "__main__":
    main()

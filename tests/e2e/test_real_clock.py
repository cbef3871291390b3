"""What a seconds budget buys, on the real clock (each in a fresh process, as a user's `bench run` is): the first
cell in a process buys the steps a later identical cell buys (one-time costs are paid in the untimed warm-up
step), and a frozen trunk's cells buy the same steps with and without the feature cache. Small on purpose:
budgets of 1.5-2 s, and one torch thread, so that another process on a small machine does not stall a thread pool.
Without the warm-up the first cell bought 15-35 % fewer steps (its first step's set-up, and page faults on
every step until the allocator's threshold rose: see `bench.run.train.warm_up`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Real-clock checks jitter by up to ~25 % over 2 s when other jobs share a 2-core machine, so they run only on
# request (a quiet machine): METRIC_BENCH_REAL_CLOCK=1 pytest tests/test_real_clock.py. The accounting itself is
# tested deterministically on a fake clock in tests/test_cost_model.py and tests/test_budget.py.
pytestmark = pytest.mark.skipif(os.environ.get("METRIC_BENCH_REAL_CLOCK") != "1", reason="real-clock check: set METRIC_BENCH_REAL_CLOCK=1 on a quiet machine")

GRID = """name = "{name}"
[budget]
max_seconds = {seconds}
[train]
batch_size = 32
[eval]
episodes = 10
n_way = 3
[model]
freeze = "{freeze}"
[axes]
backbone = ["{backbone}"]
loss = ["triplet"]
dataset = ["digits"]
seed = {seeds}
[backbone."{backbone}"]
image_size = {size}
"""


def bench(tmp_path, *runs: list[str]) -> None:
    """Each of `runs` (bench arguments) in turn, in one fresh Python process."""
    script = "import sys\nfrom bench.cli import main\n" + "".join(f"assert main({args!r}) == 0\n" for args in runs)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, capture_output=True, timeout=120)


def steps(path: Path) -> list[int]:
    return [json.loads(line)["train"]["steps"] for line in path.read_text().splitlines()]


def test_the_first_cell_in_a_process_buys_the_steps_of_a_later_identical_one(tmp_path):
    (tmp_path / "g.toml").write_text(GRID.format(name="warm", freeze="none", backbone="conv4", size=28, seeds=[0, 1, 2], seconds=2.0))
    bench(tmp_path, ["run", "--grid", "g.toml", "--threads", "1", "--no-disk-cache"])
    first, *later = steps(tmp_path / "results" / "warm.jsonl")  # three seeds: the same work per step
    later = sum(later) / len(later)  # two later cells: less of another process's noise in the reference
    assert abs(first - later) <= 0.1 * later, (first, later)


def test_a_frozen_trunk_buys_the_same_steps_with_and_without_the_feature_cache(tmp_path):
    (tmp_path / "g.toml").write_text(GRID.format(name="frozen", freeze="backbone", backbone="timm/resnet10t", size=32, seeds=[0], seconds=1.5))
    bench(
        tmp_path,
        ["run", "--grid", "g.toml", "--threads", "1", "--no-disk-cache"],
        ["run", "--grid", "g.toml", "--threads", "1", "--no-feature-cache", "--results", "results/plain.jsonl"],
    )
    rows = [json.loads(line) for name in ("frozen", "plain") for line in (tmp_path / "results" / f"{name}.jsonl").read_text().splitlines()]
    assert [r["train"]["feature_cache"] for r in rows] == [True, False]
    for r in rows:  # one extraction of the training images on the clock, then the head's steps
        t = r["train"]
        assert t["cost_model"] == "features_once" and t["stopped_by"] == "max_seconds"
        assert 0 < t["charged_seconds"] == t["charged_images"] * t["charged_seconds_per_image"] < 1.5
    cached, plain = (r["train"]["steps"] for r in rows)
    # stated tolerance: a third. Head-only steps take ~2 ms, and two identical cells on a shared 2-core machine
    # differed by up to a quarter; a trunk pass charged per step (as before) bought several times fewer
    assert abs(cached - plain) <= max(cached, plain) / 3, (cached, plain)

"""What a seconds budget buys, on the real clock (each in a fresh process, as a user's `bench run` is): the first
cell in a process buys the steps a later identical cell buys (one-time costs are paid in the untimed warm-up
step), and a frozen trunk's cells buy the same steps with and without the feature cache. Small on purpose:
two torch threads (the pool's start-up is most of the one-time cost) and budgets of 2 s."""
import json
import subprocess
import sys
from pathlib import Path

GRID = """name = "{name}"
[budget]
max_seconds = 2.0
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
seed = [0, 1]
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
    (tmp_path / "g.toml").write_text(GRID.format(name="warm", freeze="none", backbone="conv4", size=28))
    bench(tmp_path, ["run", "--grid", "g.toml", "--threads", "2", "--no-disk-cache"])
    first, later = steps(tmp_path / "results" / "warm.jsonl")  # seeds 0 and 1: the same work per step
    assert abs(first - later) <= 0.1 * max(first, later), (first, later)


def test_a_frozen_trunk_buys_the_same_steps_with_and_without_the_feature_cache(tmp_path):
    (tmp_path / "g.toml").write_text(GRID.format(name="frozen", freeze="backbone", backbone="timm/resnet10t", size=32))
    bench(tmp_path, ["run", "--grid", "g.toml", "--threads", "2", "--no-disk-cache"],
          ["run", "--grid", "g.toml", "--threads", "2", "--no-feature-cache", "--results", "results/plain.jsonl"])
    rows = [json.loads(line) for name in ("frozen", "plain") for line in (tmp_path / "results" / f"{name}.jsonl").read_text().splitlines()]
    assert [r["train"]["feature_cache"] for r in rows] == [True, True, False, False]
    for r in rows:  # one extraction of the training images on the clock, then the head's steps
        t = r["train"]
        assert t["cost_model"] == "features_once" and t["stopped_by"] == "max_seconds"
        assert 0 < t["charged_seconds"] == t["charged_images"] * t["charged_seconds_per_image"] < 2.0
    cached, plain = sum(r["train"]["steps"] for r in rows[:2]), sum(r["train"]["steps"] for r in rows[2:])
    assert abs(cached - plain) <= 0.2 * max(cached, plain), (cached, plain)  # stated tolerance: 20 %

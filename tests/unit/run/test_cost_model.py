"""What a seconds budget pays for under each protocol (README, *Budgets*), on a fake clock that only a frozen
trunk's and a head's forward passes advance: a frozen trunk without augmentation is charged one extraction of
the training images and then the head's steps, with or without the feature cache; the charged time per
image is measured in each run, never taken from an earlier run's disk cache."""

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.plugins import BACKBONES, InputSpec

TRUNK_SECONDS_PER_IMAGE = 2.0**-10  # dyadic costs: the fake clock's sums are exact, so the step counts are too
HEAD_SECONDS_PER_CALL = 2.0**-6


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A `slow_trunk` backbone whose trunk costs TRUNK_SECONDS_PER_IMAGE / torch threads an image and whose
    head costs HEAD_SECONDS_PER_CALL a call, on a clock nothing else moves; the images the trunk saw."""
    monkeypatch.chdir(tmp_path)
    clock, seen = {"now": 0.0}, []
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    threads = torch.get_num_threads()

    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 16)

        def forward(self, x):
            clock["now"] += TRUNK_SECONDS_PER_IMAGE / torch.get_num_threads() * len(x)
            seen.append(len(x))
            return self.fc(x.flatten(1))

    class Head(nn.Linear):
        def forward(self, x):
            clock["now"] += HEAD_SECONDS_PER_CALL
            return super().forward(x)

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_dim, self.input_spec = 8, InputSpec((8, 8), 1, (0.0,), (1.0,), pretrained=True)
            self.trunk, self.head = Trunk(), Head(16, 8)

        def forward(self, x):
            return self.head(self.trunk(x))

    from bench.builtins import load_builtins

    load_builtins()  # first: the built-ins registered into the patched copy would vanish with it, flag still set
    monkeypatch.setattr(BACKBONES, "_entries", dict(BACKBONES._entries))
    BACKBONES.register("slow_trunk")(lambda: Backbone())
    yield seen
    torch.set_num_threads(threads)  # --threads sets this process's


GRID = """name = "{name}"
[budget]
max_steps = 1000
max_seconds = 2.0
[train]
batch_size = 30
augment = "{augment}"
[eval]
episodes = 20
n_way = 3
[model]
freeze = "{freeze}"
[axes]
backbone = ["slow_trunk"]
loss = ["triplet"]
dataset = ["digits"]
"""


def run(name, *flags, augment="none", freeze="backbone"):
    path = f"{name}.toml"
    with open(path, "w") as f:
        f.write(GRID.format(name=name, augment=augment, freeze=freeze))
    assert main(["run", "--grid", path, *(flags if "--threads" in flags else (*flags, "--threads", "1"))]) == 0
    [row] = rows(Path("results") / f"{name}.jsonl")
    return row


def test_a_frozen_trunk_is_charged_one_extraction_then_the_heads_steps_with_and_without_the_cache(fake):
    cached = run("cached")
    plain = run("plain", "--no-feature-cache")
    n_train = cached["split"]["n_train_images"]
    charge = n_train * TRUNK_SECONDS_PER_IMAGE
    # the clock starts at the extraction's cost and each step adds one head call: the first boundary at or past 2 s
    expected = math.ceil((2.0 - charge) / HEAD_SECONDS_PER_CALL)
    for row in (cached, plain):
        train = row["train"]
        assert train["steps"] == expected  # not 2 s / (30 images × trunk + head) = 45 steps, a trunk pass per step
        assert train["cost_model"] == "features_once" and train["stopped_by"] == "max_seconds"
        assert train["charged_seconds_per_image"] == TRUNK_SECONDS_PER_IMAGE
        assert train["charged_images"] == n_train and train["charged_seconds"] == charge
        assert train["seconds"] == charge + train["wall_seconds"]
        assert train["warmup_seconds"] == HEAD_SECONDS_PER_CALL  # the head's warm-up call, off the budget's clock
        wait = train["machine"]["charge_core_wait_share"]  # the timed extraction's own wait for a core, beside the loop's
        assert (wait is None) == (train["machine"]["core_wait_share"] is None) and (wait is None or 0 <= wait < 1)
    assert cached["train"]["feature_cache"] and not plain["train"]["feature_cache"]
    for key in ("verification_roc_auc", "recall_at_1"):  # the uncached cell scores through the whole backbone
        assert cached["metrics"][key] == pytest.approx(plain["metrics"][key], abs=2e-3), key


def test_the_other_protocols_pay_every_step_on_the_clock(fake):
    augmented = run("augmented", augment="koch")  # a frozen trunk on augmented images: a trunk pass per step
    scratch = run("scratch", freeze="none")
    step = 30 * TRUNK_SECONDS_PER_IMAGE + HEAD_SECONDS_PER_CALL
    for row, model in ((augmented, "trunk_per_step"), (scratch, "end_to_end")):
        train = row["train"]
        assert train["cost_model"] == model and train["charged_seconds"] == 0 and train["charged_images"] == 0
        assert train["steps"] == math.ceil(2.0 / step) and not train["feature_cache"]


def test_the_charged_trunk_time_is_measured_in_each_run_not_read_from_the_disk_cache(fake):
    first = run("timing", "--threads", "1")  # makes the features and writes them to results/cache
    made = sum(fake)
    fake.clear()
    assert main(["run", "--grid", "timing.toml", "--threads", "2", "--results", "results/again.jsonl"]) == 0
    [again] = rows(Path("results") / "again.jsonl")
    assert first["env"]["torch_threads"] == 1 and again["env"]["torch_threads"] == 2
    assert first["train"]["charged_seconds_per_image"] == TRUNK_SECONDS_PER_IMAGE
    # the features came from the disk (the trunk saw a timing sample, not the dataset), the time from this run
    assert again["train"]["feature_cache"] and sum(fake) < made / 2
    assert again["train"]["charged_seconds_per_image"] == TRUNK_SECONDS_PER_IMAGE / 2
    assert again["train"]["steps"] > first["train"]["steps"]  # half the charge leaves more of the budget for steps

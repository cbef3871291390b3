"""The training loop's budgets: each limit, exact `max_samples`, `max_seconds` at the first step boundary
past it, time charged for a cached frozen trunk, and divergence found in the embeddings."""
import itertools

import pytest
import torch
from torch import nn

import bench.run.train as train_module
from bench.config import Budget, TrainConfig
from bench.run.train import budget_reached, train


class TinyLoss(nn.Module):
    distance = "cosine"

    def __init__(self, batch="triplets"):
        super().__init__()
        self.batch = batch

    def forward(self, embeddings, labels):
        return embeddings.pow(2).mean()


def data(n_classes=6, per_class=8):
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return torch.randn(len(labels), 4), labels


def run(budget, batch="triplets", batch_size=12, charge=0.0, clock_step=None, monkeypatch=None):
    if clock_step is not None:  # a fake clock: every reading advances it by clock_step seconds
        ticks = itertools.count()
        monkeypatch.setattr(train_module.time, "perf_counter", lambda: next(ticks) * clock_step)
    inputs, labels = data()
    return train(nn.Linear(4, 3), TinyLoss(batch), inputs, labels, lambda x: x, TrainConfig(batch_size=batch_size), budget,
                 seed=0, device=torch.device("cpu"), bf16=False, charge_per_sample=charge)


def test_budget_reached_each_limit():
    assert budget_reached(Budget(max_steps=3), 2, 100, 1e9) is None
    assert budget_reached(Budget(max_steps=3), 3, 0, 0.0) == "max_steps"
    assert budget_reached(Budget(max_samples=40), 30, 30, 0.0, next_samples=10) is None  # 40: exactly the limit
    assert budget_reached(Budget(max_samples=40), 30, 30, 0.0, next_samples=12) == "max_samples"  # would pass it
    assert budget_reached(Budget(max_samples=40), 39, 39, 0.0, next_samples=0) == "max_samples"  # no batch fits
    assert budget_reached(Budget(max_seconds=2.0), 5, 5, 1.999) is None
    assert budget_reached(Budget(max_seconds=2.0), 5, 5, 2.0) == "max_seconds"
    assert budget_reached(Budget(max_steps=1, max_seconds=1.0), 1, 1, 5.0) == "max_steps"  # order: steps first


@pytest.mark.parametrize("limit,batch,expected", [(45, "triplets", 45), (44, "triplets", 42), (50, "pairs", 48),
                                                  (40, "pairs", 36), (44, "pairs", 44), (36, "m_per_class", 36), (30, "m_per_class", 24)])
def test_max_samples_is_never_exceeded(limit, batch, expected):
    # 12 images a step; the last batch shrinks to what is left when the loss can learn from it (≥ 3 for
    # triplets, ≥ 8 for pairs, ≥ 2 classes × m for m-per-class), else training stops short of the limit.
    result = run(Budget(max_samples=limit), batch)
    assert result.samples == expected <= limit
    assert result.stopped_by == "max_samples"


def test_max_steps_is_exact():
    result = run(Budget(max_steps=7))
    assert (result.steps, result.samples, result.stopped_by) == (7, 84, "max_steps")


def test_max_seconds_stops_at_the_first_step_boundary_past_it(monkeypatch):
    # On the fake clock each step reads it a fixed number of times, so steps are deterministic.
    result = run(Budget(max_seconds=10.0), clock_step=0.1, monkeypatch=monkeypatch)
    assert result.stopped_by == "max_seconds"
    per_step = result.wall_seconds / result.steps
    assert result.seconds >= 10.0 and result.seconds - 10.0 < per_step + 0.1 + 1e-9


def test_charged_time_counts_against_max_seconds(monkeypatch):
    free = run(Budget(max_seconds=10.0), clock_step=0.1, monkeypatch=monkeypatch)
    charged = run(Budget(max_seconds=10.0), charge=0.01, clock_step=0.1, monkeypatch=monkeypatch)  # 0.12 s a step
    assert charged.charged_seconds == pytest.approx(charged.samples * 0.01)
    assert charged.seconds == pytest.approx(charged.wall_seconds + charged.charged_seconds)
    assert charged.steps < free.steps
    # each step costs wall w and charge 0.12: both runs stop at the first boundary past 10 s
    wall_per_step = free.wall_seconds / free.steps
    assert charged.steps == pytest.approx(free.steps * wall_per_step / (wall_per_step + 0.12), abs=1.5)


def test_steps_limit_ignores_charged_time():
    result = run(Budget(max_steps=5), charge=100.0)
    assert result.steps == 5 and result.charged_seconds == pytest.approx(6000.0)

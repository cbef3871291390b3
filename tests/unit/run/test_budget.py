"""The training loop's budgets: each limit, exact `max_samples`, `max_seconds` at the first step boundary
past it, time charged at the start for a frozen trunk's one-time extraction, and the untimed warm-up step
that leaves training bit-identical."""

import itertools
import random

import numpy as np
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
    return train(
        nn.Linear(4, 3),
        TinyLoss(batch),
        inputs,
        labels,
        lambda x: x,
        TrainConfig(batch_size=batch_size),
        budget,
        seed=0,
        device=torch.device("cpu"),
        bf16=False,
        charge_at_start=charge,
    )


def test_budget_reached_each_limit():
    assert budget_reached(Budget(max_steps=3), 2, 100, 1e9) is None
    assert budget_reached(Budget(max_steps=3), 3, 0, 0.0) == "max_steps"
    assert budget_reached(Budget(max_samples=40), 30, 30, 0.0, next_samples=10) is None  # 40: exactly the limit
    assert budget_reached(Budget(max_samples=40), 30, 30, 0.0, next_samples=12) == "max_samples"  # would pass it
    assert budget_reached(Budget(max_samples=40), 39, 39, 0.0, next_samples=0) == "max_samples"  # no batch fits
    assert budget_reached(Budget(max_seconds=2.0), 5, 5, 1.999) is None
    assert budget_reached(Budget(max_seconds=2.0), 5, 5, 2.0) == "max_seconds"
    assert budget_reached(Budget(max_steps=1, max_seconds=1.0), 1, 1, 5.0) == "max_steps"  # order: steps first


@pytest.mark.parametrize(
    "limit,batch,expected",
    [(45, "triplets", 45), (44, "triplets", 42), (50, "pairs", 48), (40, "pairs", 36), (44, "pairs", 44), (36, "m_per_class", 36), (30, "m_per_class", 24)],
)
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
    charged = run(Budget(max_seconds=10.0), charge=4.0, clock_step=0.1, monkeypatch=monkeypatch)  # on the clock from the start
    assert charged.charged_seconds == 4.0
    assert charged.seconds == pytest.approx(charged.wall_seconds + 4.0)
    # each step costs the same wall time w in both runs: the charged run has 6 s of the 10 left for its steps
    wall_per_step = free.wall_seconds / free.steps
    assert charged.steps == pytest.approx(free.steps * 6.0 / 10.0, abs=1.5)
    assert charged.steps == pytest.approx(6.0 / wall_per_step, abs=1.5)


def test_a_charge_past_the_budget_buys_no_step():
    result = run(Budget(max_seconds=1.0), charge=2.0)
    assert (result.steps, result.stopped_by, result.charged_seconds) == (0, "max_seconds", 2.0)


def test_steps_limit_ignores_charged_time():
    result = run(Budget(max_steps=5), charge=100.0)
    assert result.steps == 5 and result.charged_seconds == 100.0


class NoisyNet(nn.Module):
    """BatchNorm (running statistics), dropout (the torch stream) and a count of forward passes."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 3))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.body(x)


class StatefulLoss(TinyLoss):
    """A loss with a learnable scale and state of its own that each call changes (as a cross-batch memory does)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen = 0

    def forward(self, embeddings, labels):
        self.seen += len(labels)
        return self.scale * embeddings.pow(2).mean() + 0.01 * self.seen


def test_the_warm_up_step_leaves_max_steps_training_bit_identical(monkeypatch):
    def fit(warm: bool):
        torch.manual_seed(0)
        model, loss = NoisyNet(), StatefulLoss()
        inputs, labels = data()
        noisy = lambda x: x + 0.1 * torch.randn_like(x) + float(np.random.rand()) + random.random()
        with monkeypatch.context() as m:
            if not warm:  # the loop as it was before the warm-up step
                m.setattr(train_module, "warm_up", lambda *a, **k: 0.0)
            result = train(
                model,
                loss,
                inputs,
                labels,
                noisy,
                TrainConfig(batch_size=12, optimizer="adam"),
                Budget(max_steps=6),
                seed=0,
                device=torch.device("cpu"),
                bf16=False,
            )
        after = (torch.rand(3), np.random.rand(), random.random())  # the streams go on where training left them
        return result, model, loss, after

    np_state, py_state = np.random.get_state(), random.getstate()
    warm = fit(True)
    np.random.set_state(np_state)
    random.setstate(py_state)
    cold = fit(False)
    assert warm[1].calls == cold[1].calls + 1 and warm[0].warmup_seconds > 0  # the warm-up ran, off the clock
    assert warm[0].final_loss == cold[0].final_loss and warm[0].steps == cold[0].steps == 6
    for (name, a), (_, b) in zip(warm[1].state_dict().items(), cold[1].state_dict().items()):
        assert torch.equal(a, b), name  # weights and BatchNorm's running statistics, bit for bit
    assert torch.equal(warm[2].scale, cold[2].scale) and warm[2].seen == cold[2].seen  # the loss ran on a copy
    assert torch.equal(warm[3][0], cold[3][0]) and warm[3][1:] == cold[3][1:]
    assert all(p.grad is None or torch.equal(p.grad, q.grad) for p, q in zip(warm[1].parameters(), cold[1].parameters()))


def test_no_warm_up_when_no_batch_fits():
    result = run(Budget(max_samples=2))  # fewer than a triplet: no step, and nothing to warm up
    assert (result.steps, result.warmup_seconds) == (0, 0.0)

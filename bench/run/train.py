"""The one training loop. Budgets are enforced here and nowhere else; plugins never see them."""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.config import Budget, TrainConfig
from bench.plugins import Loss
from bench.run.clock import Meter
from bench.run.sampling import BatchSampler

Prepare = Callable[[torch.Tensor], torch.Tensor]  # a batch of stored inputs (on device) -> what the model takes


@dataclass(frozen=True)
class TrainResult:
    steps: int
    samples: int
    seconds: float  # the budget's clock: wall time plus any charged time (see `charge_at_start`)
    stopped_by: str  # "max_steps" | "max_samples" | "max_seconds" | "diverged" | "pruned" (a search trial, at a curve point)
    final_loss: float  # mean of the last 10 steps' losses
    data_seconds: float  # sampling, gathering, augmenting, normalising: the loader's share
    compute_seconds: float  # forward, loss, backward, optimizer step
    wall_seconds: float  # training wall-clock time actually spent in this loop
    charged_seconds: float  # time charged for work done outside the loop (a frozen trunk's one-time feature extraction)
    curve_seconds: float = 0.0  # learning-curve evaluations, with the budget's clock stopped
    warmup_seconds: float = 0.0  # the untimed warm-up step before the clock started (see `warm_up`)
    machine: dict | None = None  # what the clock's spans got from the machine (bench.run.clock.Meter.record)


def budget_reached(budget: Budget, steps: int, samples: int, seconds: float, next_samples: int = 1) -> str | None:
    """The limit that stops training before the next step, or None.

    `max_samples` is exact: a step whose batch would pass it does not run (the loop first shrinks the last
    batch to fit; `next_samples` is what that batch would hold, 0 when no batch fits). `max_seconds` is
    checked between steps, so training stops at the first step boundary at or past it."""
    if budget.max_steps is not None and steps >= budget.max_steps:
        return "max_steps"
    if budget.max_samples is not None and (next_samples <= 0 or samples + next_samples > budget.max_samples):
        return "max_samples"
    if budget.max_seconds is not None and seconds >= budget.max_seconds:
        return "max_seconds"
    return None


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


CurveHook = Callable[[float, "Progress"], "bool | None"]  # (curve fraction, where training is) -> True to stop (a pruned trial)


@dataclass(frozen=True)
class Progress:
    """Where training stands at a curve point."""

    steps: int
    samples: int
    seconds: float  # the budget's clock
    progress: float  # fraction of the binding budget limit used (see `budget_fraction`)


def budget_fraction(budget: Budget, steps: int, samples: int, seconds: float) -> float:
    """How much of the budget is used: the largest fraction over its limits (whichever binds), at most 1."""
    used = [n / limit for n, limit in ((steps, budget.max_steps), (samples, budget.max_samples), (seconds, budget.max_seconds)) if limit]
    return min(1.0, max(used))


def lr_factor(schedule: str, warmup: float, fraction: float) -> float:
    """The learning rate's multiplier at `fraction` of the budget: a linear warm-up from 0 over the first
    `warmup`, then constant, or a cosine decay to 0 at the end of the budget."""
    if warmup > 0 and fraction < warmup:
        return fraction / warmup
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (fraction - warmup) / (1 - warmup))))
    return 1.0


def train(
    model: nn.Module,
    loss_fn: Loss,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    prepare: Prepare,
    cfg: TrainConfig,
    budget: Budget,
    seed: int,
    device: torch.device,
    bf16: bool,
    on_step: Callable[[int, int, float, float], None] = lambda steps, samples, seconds, loss: None,
    charge_at_start: float = 0.0,
    charge_wait: float | None = None,
    sampler: BatchSampler | None = None,
    curve: tuple[float, ...] = (),
    on_curve: CurveHook = lambda fraction, at: None,
    warmup_prepare: Prepare | None = None,
) -> TrainResult:
    """Train `model` (a backbone on images, or only its head on a frozen trunk's features) until the budget stops it.

    The budget's clock starts after one untimed warm-up step (`warm_up`, on `warmup_prepare`, default
    `prepare`: give one without random state of its own, such as a second copy of a seeded augmentation), so
    the first cell in a process does not pay one-time costs out of `max_seconds`. `charge_at_start` seconds
    are on the clock from the start: work the protocol does before its first step that ran outside this loop
    (a frozen trunk's one-time extraction of the training images' features); `charge_wait`, the share of that work's
    measured runnable time its threads waited for a core, joins the clock's machine record. At each `curve` fraction of the
    budget (after the first step that reaches it, and 1.0 when training ends) `on_curve` runs with the clock
    stopped: curve evaluations cost no training budget (their time is `curve_seconds`). An `on_curve` that returns
    True stops training there (`stopped_by` "pruned": a search trial below the median rule's bar)."""
    params = [p for m in (model, loss_fn) for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, params)
    base_lr = [group["lr"] for group in optimizer.param_groups]
    sampler = sampler or BatchSampler(loss_fn.batch, labels.numpy(), cfg.batch_size, seed, cfg.m_per_class)
    points = curve_points(curve)
    model.train()
    loss_fn.train()
    steps = samples = 0
    data_seconds = compute_seconds = paused = 0.0
    recent: list[float] = []
    warmup_seconds = warm_up(model, loss_fn, inputs, labels, warmup_prepare or prepare, sampler, cfg, _fit(cfg.batch_size, budget, 0), device, bf16)
    start = time.perf_counter()
    meter = Meter(torch.get_num_threads())

    def clock() -> float:
        return time.perf_counter() - start - paused + charge_at_start

    def reached(fraction: float) -> bool:
        nonlocal paused
        t = time.perf_counter()
        meter.stop_span()
        seconds = clock()
        stop = on_curve(fraction, Progress(steps, samples, seconds, budget_fraction(budget, steps, samples, seconds)))
        model.train()
        loss_fn.train()
        paused += time.perf_counter() - t
        meter.start_span()
        return bool(stop)

    scheduled = cfg.schedule != "constant" or cfg.warmup > 0
    while True:
        size = _fit(cfg.batch_size, budget, samples)
        now = clock()
        if (stopped_by := budget_reached(budget, steps, samples, now, sampler.images_per_batch(size))) is not None:
            break
        if scheduled:
            factor = lr_factor(cfg.schedule, cfg.warmup, budget_fraction(budget, steps, samples, now))
            for group, lr in zip(optimizer.param_groups, base_lr):
                group["lr"] = lr * factor
        t0 = time.perf_counter()
        idx = torch.from_numpy(sampler.draw(size))
        x = prepare(inputs[idx].to(device, non_blocking=True))
        y = labels[idx].to(device)
        t1 = time.perf_counter()
        with autocast(device, bf16):
            embeddings = model(x)
        loss = loss_fn(embeddings.float(), y)
        value = loss.item()
        if not math.isfinite(value):
            stopped_by = "diverged"
            recent.append(value)
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        data_seconds += t1 - t0
        compute_seconds += time.perf_counter() - t1
        steps, samples = steps + 1, samples + len(idx)
        recent = (recent + [value])[-10:]
        now = clock()  # read once a step: the curve check must not change what a seconds budget buys
        on_step(steps, samples, now, value)
        while len(points) > 1 and budget_fraction(budget, steps, samples, now) >= points[0]:
            if reached(points.pop(0)):
                stopped_by = "pruned"
                break
        if stopped_by == "pruned":
            break
    if stopped_by not in ("diverged", "pruned"):
        for fraction in points:  # 1.0, and any point the budget ended before (an exact max_samples may stop short)
            reached(fraction)
    wall = time.perf_counter() - start - paused
    machine = meter.record()
    if charge_at_start:
        machine["charge_core_wait_share"] = charge_wait
    final = sum(recent) / len(recent) if recent else float("nan")
    return TrainResult(
        steps, samples, wall + charge_at_start, stopped_by, final, data_seconds, compute_seconds, wall, charge_at_start, paused, warmup_seconds, machine
    )


def warm_up(
    model: nn.Module,
    loss_fn: Loss,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    prepare: Prepare,
    sampler: BatchSampler,
    cfg: TrainConfig,
    size: int,
    device: torch.device,
    bf16: bool,
) -> float:
    """One forward and backward pass on a batch like the first step's, and a step of a throwaway optimizer,
    before the budget's clock starts: the first step in a process pays one-time costs (the allocator, oneDNN's
    and cuDNN's kernel choices, lazy initialisation) that would otherwise come out of a `max_seconds` budget
    and buy the first cell fewer steps than a later identical one. Nothing training reads changes: the
    batch comes from a copy of the sampler, the random streams are forked, the loss is a copy, the model's
    buffers (BatchNorm's running statistics) are put back, its gradients are dropped and its weights are
    never stepped. Returns the seconds it took (outside the budget)."""
    if sampler.images_per_batch(size) <= 0:
        return 0.0
    start = time.perf_counter()
    # glibc's malloc hands a freed block above its mmap threshold back to the system, so a step's activations
    # are page-faulted in anew every step, until a large block freed once raises the threshold (in a later
    # cell, an evaluation's): a process's first cell ran ~25 % slower throughout. Freeing one block of 32 MiB
    # (glibc's largest dynamic threshold; allocated, never touched) raises it now.
    torch.empty(2**25 - 2**16, dtype=torch.uint8)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, p.grad) for p in model.parameters()]
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for p, _ in grads:
                p.grad = None
            idx = torch.from_numpy(copy.deepcopy(sampler).draw(size))
            x = prepare(inputs[idx].to(device, non_blocking=True))
            with autocast(device, bf16):
                embeddings = model(x)
            loss = copy.deepcopy(loss_fn)(embeddings.float(), labels[idx].to(device))
            if loss.requires_grad:
                loss.backward()
            dummy = torch.zeros(1, device=device, requires_grad=True)  # the optimizer's own first-step set-up
            dummy.grad = torch.zeros_like(dummy)
            make_optimizer(cfg, [dummy]).step()
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, grad in grads:
            p.grad = grad
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def curve_points(curve: tuple[float, ...]) -> list[float]:
    """The fractions of the budget a curve is scored at: those asked for, and always 1.0 (none without a curve)."""
    return [f for f in curve if f < 1.0] + [1.0] if curve else []


def _fit(batch_size: int, budget: Budget, samples: int) -> int:
    """The next batch's size: the configured one, or what is left of an exact `max_samples` budget."""
    return batch_size if budget.max_samples is None else min(batch_size, budget.max_samples - samples)


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def embed(model: nn.Module, inputs: torch.Tensor, prepare: Prepare, batch_size: int, device: torch.device, bf16: bool) -> torch.Tensor:
    """`model`'s outputs for `inputs`, a batch at a time, in eval mode. On a CPU images go through in channels-last
    (NHWC) memory: oneDNN's convolutions run 1.6-2.8x faster on it in fp32 (benchmarks/eval_profile.py), and the
    outputs differ from NCHW's by float rounding only (~1e-6); training uses the same layout (cell.py)."""
    model.eval()
    nhwc = device.type == "cpu"
    if nhwc:
        model.to(memory_format=torch.channels_last)
    out = []
    for chunk in inputs.split(batch_size):
        x = prepare(chunk.to(device))
        if nhwc and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)

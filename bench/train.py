"""The one training loop. Budgets are enforced here and nowhere else; plugins never see them."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bench.config import Budget, TrainConfig
from bench.plugins import Loss
from bench.sampling import BatchSampler

Prepare = Callable[[torch.Tensor], torch.Tensor]  # a batch of stored inputs (on device) -> what the model takes


@dataclass(frozen=True)
class TrainResult:
    steps: int
    samples: int
    seconds: float
    stopped_by: str  # "max_steps" | "max_samples" | "max_seconds" | "diverged"
    final_loss: float  # mean of the last 10 steps' losses
    data_seconds: float  # sampling, gathering, augmenting, normalising: the loader's share
    compute_seconds: float  # forward, loss, backward, optimizer step


def budget_reached(budget: Budget, steps: int, samples: int, seconds: float) -> str | None:
    if budget.max_steps is not None and steps >= budget.max_steps:
        return "max_steps"
    if budget.max_samples is not None and samples >= budget.max_samples:
        return "max_samples"
    if budget.max_seconds is not None and seconds >= budget.max_seconds:
        return "max_seconds"
    return None


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train(
    model: nn.Module, loss_fn: Loss, inputs: torch.Tensor, labels: torch.Tensor, prepare: Prepare, cfg: TrainConfig,
    budget: Budget, seed: int, device: torch.device, bf16: bool,
    on_step: Callable[[int, int, float, float], None] = lambda steps, samples, seconds, loss: None,
) -> TrainResult:
    """Train `model` (a backbone on images, or only its head on cached features) until the budget stops it."""
    params = [p for m in (model, loss_fn) for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, params)
    sampler = BatchSampler(loss_fn.batch, labels.numpy(), cfg.batch_size, seed, cfg.m_per_class)
    model.train()
    loss_fn.train()
    steps = samples = 0
    data_seconds = compute_seconds = 0.0
    recent: list[float] = []
    start = time.perf_counter()
    while (stopped_by := budget_reached(budget, steps, samples, time.perf_counter() - start)) is None:
        t0 = time.perf_counter()
        idx = torch.from_numpy(next(sampler))
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
        on_step(steps, samples, time.perf_counter() - start, value)
    seconds = time.perf_counter() - start
    final = sum(recent) / len(recent) if recent else float("nan")
    return TrainResult(steps, samples, seconds, stopped_by, final, data_seconds, compute_seconds)


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def embed(model: nn.Module, inputs: torch.Tensor, prepare: Prepare, batch_size: int, device: torch.device, bf16: bool) -> torch.Tensor:
    model.eval()
    out = []
    for chunk in inputs.split(batch_size):
        with autocast(device, bf16):
            out.append(model(prepare(chunk.to(device))).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)

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
from bench.plugins import Backbone, Loss
from bench.preprocess import normalize
from bench.sampling import BatchSampler


@dataclass(frozen=True)
class TrainResult:
    steps: int
    samples: int
    seconds: float
    stopped_by: str  # "max_steps" | "max_samples" | "max_seconds" | "diverged"
    final_loss: float  # mean of the last 10 steps' losses


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
    backbone: Backbone, loss_fn: Loss, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
    budget: Budget, seed: int, device: torch.device, bf16: bool,
    on_step: Callable[[int, int, float, float], None] = lambda steps, samples, seconds, loss: None,
) -> TrainResult:
    """Train on `images` (uint8, already fitted to the backbone's size and channels) until the budget stops it."""
    params = [p for m in (backbone, loss_fn) for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, params)
    sampler = BatchSampler(loss_fn.batch, labels.numpy(), cfg.batch_size, seed, cfg.m_per_class)
    backbone.train()
    loss_fn.train()
    spec = backbone.input_spec
    steps = samples = 0
    recent: list[float] = []
    start = time.perf_counter()
    while (stopped_by := budget_reached(budget, steps, samples, time.perf_counter() - start)) is None:
        idx = torch.from_numpy(next(sampler))
        x = normalize(images[idx].to(device, non_blocking=True), spec)
        if bf16 and device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            embeddings = backbone(x)
        loss = loss_fn(embeddings.float(), labels[idx].to(device))
        value = loss.item()
        if not math.isfinite(value):
            stopped_by = "diverged"
            recent.append(value)
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps, samples = steps + 1, samples + len(idx)
        recent = (recent + [value])[-10:]
        on_step(steps, samples, time.perf_counter() - start, value)
    seconds = time.perf_counter() - start
    return TrainResult(steps, samples, seconds, stopped_by, sum(recent) / len(recent) if recent else float("nan"))


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def embed(backbone: Backbone, images: torch.Tensor, batch_size: int, device: torch.device, bf16: bool) -> torch.Tensor:
    backbone.eval()
    out = []
    for chunk in images.split(batch_size):
        x = normalize(chunk.to(device), backbone.input_spec)
        if bf16 and device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            out.append(backbone(x).float().cpu())
    return torch.cat(out)

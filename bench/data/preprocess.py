"""Turns dataset uint8 images into what a backbone expects (size, channels, mean/std), recording what it did."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.plugins import InputSpec


def fit_to_spec(images: np.ndarray, spec: InputSpec) -> tuple[torch.Tensor, dict]:
    """Resize and convert channels once per cell, keeping uint8 so the whole set stays small in memory."""
    x = torch.from_numpy(images)
    n, c, h, w = x.shape
    done = {"from": [c, h, w], "resize": None, "channel_conversion": None}
    if (h, w) != tuple(spec.size):
        out = []
        for chunk in x.split(1024):
            y = F.interpolate(chunk.float(), size=spec.size, mode="bilinear", antialias=True, align_corners=False)
            out.append(y.round_().clamp_(0, 255).to(torch.uint8))
        x = torch.cat(out)
        done["resize"] = "bilinear, antialiased"
    if c != spec.channels:
        if c == 1:
            x = x.expand(-1, spec.channels, -1, -1)
            done["channel_conversion"] = f"gray replicated to {spec.channels}"
        elif spec.channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
            done["channel_conversion"] = "RGB to luma (ITU-R 601)"
        else:
            raise ValueError(f"cannot convert {c} channels to {spec.channels}")
    return x.contiguous(), done


def normalize(batch: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    if spec.bgr:
        batch = batch.flip(1)
    mean = torch.tensor(spec.mean, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=batch.device).view(1, -1, 1, 1)
    return (batch.float().div_(255.0) - mean) / std

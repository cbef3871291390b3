"""Adapting a backbone to a cell: the preprocessing it is fed, what is frozen, and the input check."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from bench.errors import UserError
from bench.plugins import InputSpec

PREPROCESS = ("native", "unit", "raw", "caffe")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # Keras/Caffe ResNet50: BGR, ImageNet mean subtracted, no scaling


def apply_preprocess(spec: InputSpec, mode: str) -> InputSpec:
    """The spec actually fed. `normalize` computes (pixels/255 − mean) / std, so each mode is a mean/std:
    native: the backbone's own; unit: pixels/255; raw: pixels 0–255 as-is; caffe: BGR minus the ImageNet mean."""
    c = spec.channels
    if mode == "native":
        return spec
    if mode == "unit":
        return dataclasses.replace(spec, mean=(0.0,) * c, std=(1.0,) * c, bgr=False)
    if mode == "raw":
        return dataclasses.replace(spec, mean=(0.0,) * c, std=(1 / 255,) * c, bgr=False)
    if mode == "caffe":
        mean = tuple(m / 255 for m in CAFFE_BGR_MEAN) if c == 3 else (sum(CAFFE_BGR_MEAN) / 3 / 255,)
        return dataclasses.replace(spec, mean=mean, std=(1 / 255,) * c, bgr=c == 3)
    raise ValueError(f"unknown preprocess {mode!r}; use one of {', '.join(PREPROCESS)}")


class FrozenTrunk(nn.Module):
    """A fully frozen trunk stays in eval mode (BatchNorm uses its running stats, dropout is off) even
    while the rest of the model trains: the classic mistake this harness measures is leaving it in train mode."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return self  # always eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


def freeze(backbone: nn.Module, mode: str, unfrozen_stages: int = 1) -> dict:
    """Freeze (part of) the backbone's `trunk` in place; returns parameter counts for the row.

    none: everything trains; bn: BatchNorm layers use running stats with frozen affine (timm's
    FrozenBatchNorm2d); backbone: the whole trunk is frozen and in eval mode, only the head trains;
    backbone_bn_train: the trunk's weights are frozen but its BatchNorm layers stay in train mode, normalising
    with batch statistics and overwriting the pretrained running statistics (Keras' trainable=False pitfall);
    all_but_last_n: timm's coarse parameter groups (stem, stages) are frozen except the last `unfrozen_stages`.
    """
    from timm.utils.model import freeze as timm_freeze
    from timm.utils.model import freeze_batch_norm_2d

    if mode != "none":
        if not isinstance(getattr(backbone, "trunk", None), nn.Module):
            raise UserError(f'freeze = {mode!r} needs a backbone with a `trunk` (and `head`) — this backbone has none; use freeze = "none"')
        if mode == "bn":
            backbone.trunk = freeze_batch_norm_2d(backbone.trunk)
        elif mode == "backbone":
            backbone.trunk = FrozenTrunk(freeze_batch_norm_2d(backbone.trunk))
        elif mode == "backbone_bn_train":  # the pitfall, measured: weights frozen, BatchNorm still in train mode
            backbone.trunk.requires_grad_(False)
        elif mode == "all_but_last_n":
            groups = _stage_groups(backbone.trunk)
            if not 1 <= unfrozen_stages < len(groups):
                raise UserError(f"model.unfrozen_stages = {unfrozen_stages} must be between 1 and {len(groups) - 1} for this backbone ({len(groups)} stages)")
            frozen = [name for group in groups[: len(groups) - unfrozen_stages] for name in group]
            timm_freeze(backbone.trunk, frozen, include_bn_running_stats=True)
        else:
            raise ValueError(f"unknown freeze mode {mode!r}")
    params = list(backbone.parameters())
    return {
        "freeze": mode,
        "backbone_params": sum(p.numel() for p in params),
        "backbone_trainable_params": sum(p.numel() for p in params if p.requires_grad),
    }


def _stage_groups(trunk: nn.Module) -> list[list[str]]:
    if not hasattr(trunk, "group_matcher"):
        raise UserError('freeze = "all_but_last_n" needs a timm trunk (stages come from timm\'s group_matcher) — use "bn" or "backbone"')
    from timm.models import group_modules

    grouped = group_modules(trunk, trunk.group_matcher(coarse=True))
    return [grouped[k] for k in sorted(grouped)]


def input_check(sample: torch.Tensor, used: InputSpec, native: InputSpec, normalize) -> dict:
    """Compare what enters a pretrained backbone with what its own preprocessing would feed it.

    Statistics are per channel over a sample of training images. A mean shift of more than 2 native
    standard deviations, or a spread more than 4× off, is a mismatch: a console warning and a row flag.
    """
    x, ref = normalize(sample, used).double(), normalize(sample, native).double()
    dims = (0, 2, 3)
    mean, std = x.mean(dims), x.std(dims)
    ref_mean, ref_std = ref.mean(dims), ref.std(dims).clamp_min(1e-6)
    shift = ((mean - ref_mean).abs() / ref_std).max().item()
    ratio = (std / ref_std).clamp_min(1e-12)
    spread = max(ratio.max().item(), 1 / ratio.min().item())
    return {
        "mean": [round(v, 4) for v in mean.tolist()],
        "std": [round(v, 4) for v in std.tolist()],
        "native_mean": [round(v, 4) for v in ref_mean.tolist()],
        "native_std": [round(v, 4) for v in ref_std.tolist()],
        "mean_shift_in_native_stds": round(shift, 3),
        "spread_ratio": round(spread, 3),
        "mismatch": bool(native.pretrained and (shift > 2 or spread > 4)),
    }

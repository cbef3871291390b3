"""Any timm model as a backbone, `timm/<name>`: timm's pooled features plus a linear projection to embed_dim."""
from __future__ import annotations

import functools

import torch
from torch import nn

from bench.errors import UserError
from bench.plugins import BACKBONES, InputSpec
from bench.registry import Prefix


class TimmBackbone(nn.Module):
    def __init__(self, model: nn.Module, embed_dim: int, input_spec: InputSpec):
        super().__init__()
        self.model = model
        self.embed_dim = embed_dim
        self.input_spec = input_spec
        # with num_classes=0 timm returns pre-logits: head_hidden_size where the head has a hidden layer
        # (MobileNetV3's conv_head), num_features otherwise
        features = getattr(model, "head_hidden_size", None) or model.num_features
        self.project = nn.Linear(features, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.model(images))


def build_timm(model_name: str, embed_dim: int = 128, pretrained: bool = False, image_size: int = 0) -> TimmBackbone:
    """`image_size = 0` keeps the model's pretrained input size; pretrained weights come through timm's hub."""
    import timm

    model = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
    cfg = model.pretrained_cfg
    _, height, width = cfg.get("input_size", (3, 224, 224))
    size = (image_size, image_size) if image_size else (height, width)
    spec = InputSpec(size, 3, tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225))))
    return TimmBackbone(model, embed_dim, spec)


def _resolve(model_name: str):
    import timm

    if not timm.is_model(model_name):
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join('timm/' + c for c in close)}? " if close else ""
        raise UserError(f"unknown timm model {model_name!r}: {hint}run `bench ls backbones 'timm/*'` to see the names")
    factory = functools.partial(build_timm, model_name)
    return factory


def _list(pattern: str) -> list[str]:
    import timm

    return timm.list_models(pattern or "*")


BACKBONES.add_prefix("timm", Prefix(factory=_resolve, lister=_list, source="timm"))

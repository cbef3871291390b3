"""Any timm model as a backbone, `timm/<name>`: timm's pooled features plus a linear projection to embed_dim."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from bench.errors import UserError
from bench.plugins import BACKBONES, InputSpec
from bench.registry import Prefix

HEADS = ("linear", "sigmoid4096")


class TimmBackbone(nn.Module):
    """A timm trunk (pooled pre-logits features) and an embedding head: `linear` to embed_dim, or
    `sigmoid4096` (dense 4096 + sigmoid, the head of Koch's network and of many siamese tutorials)."""

    def __init__(self, trunk: nn.Module, embed_dim: int, input_spec: InputSpec, head: str = "linear"):
        super().__init__()
        if head not in HEADS:
            raise UserError(f"head = {head!r} is not one of {', '.join(HEADS)} — fix the backbone's head argument")
        self.trunk = trunk
        self.input_spec = input_spec
        # with num_classes=0 timm returns pre-logits: head_hidden_size where the head has a hidden layer
        # (MobileNetV3's conv_head), num_features otherwise
        features = getattr(trunk, "head_hidden_size", None) or trunk.num_features
        self.embed_dim = 4096 if head == "sigmoid4096" else embed_dim
        self.head = nn.Linear(features, self.embed_dim) if head == "linear" else nn.Sequential(nn.Linear(features, 4096), nn.Sigmoid())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


def make_backbone(trunk: nn.Module, embed_dim: int, image_size: int, head: str, pretrained: bool) -> TimmBackbone:
    """Wrap a timm model built with num_classes=0; its pretrained_cfg gives the input it expects."""
    cfg = trunk.pretrained_cfg
    _, height, width = cfg.get("input_size", (3, 224, 224))
    size = (image_size, image_size) if image_size else (height, width)
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return TimmBackbone(trunk, embed_dim, InputSpec(size, 3, mean, std, pretrained=pretrained), head)


def build_timm(model_name: str, embed_dim: int = 128, pretrained: bool = False, image_size: int = 0, weights: str = "", head: str = "linear") -> TimmBackbone:
    """`image_size = 0` keeps the model's pretrained input size. `pretrained = true` downloads through timm's
    hub (or its local cache); `weights` loads a local .safetensors/.pth state_dict instead. `head` is
    `linear` (to embed_dim) or `sigmoid4096` (embed_dim is then 4096)."""
    import timm

    if pretrained and weights:
        raise UserError(f"timm/{model_name}: set either pretrained = true or weights = {weights!r}, not both")
    trunk = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
    if weights:
        load_weights(trunk, weights, f"timm/{model_name}")
    return make_backbone(trunk, embed_dim, image_size, head, pretrained=pretrained or bool(weights))


def load_weights(model: nn.Module, path: str, name: str) -> None:
    """Strictly load a local state_dict; the classifier is ignored since the backbone has none (num_classes=0)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"{name}: weights file {str(file)!r} not found — fix the weights path")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(file)
        else:  # weights_only: a weights file can hold tensors, never code to run
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"{name}: cannot read weights {str(file)!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}) — give a plain state_dict (.safetensors or .pth)"
        ) from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    classifier = model.pretrained_cfg.get("classifier", "")
    state = {k: v for k, v in state.items() if not (classifier and k.startswith(classifier + "."))}
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:

        def few(keys):
            return f"{len(keys)} (e.g. {', '.join(keys[:2])})" if keys else "0"

        raise UserError(
            f"{name}: weights {str(file)!r} do not match the model: missing {few(missing)}, unexpected {few(unexpected)}, "
            f"wrong shape {few(shapes)} — use weights saved from this exact timm model"
        )
    model.load_state_dict(state)


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

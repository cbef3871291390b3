"""Preprocessing modes, freezing modes and the input check, against obvious formulas and real updates."""

import numpy as np
import pytest
import torch

from bench.builtins import load_builtins
from bench.data.preprocess import normalize
from bench.errors import UserError
from bench.plugins import BACKBONES, InputSpec
from bench.run.adapt import CAFFE_BGR_MEAN, FrozenTrunk, apply_preprocess, freeze, input_check

load_builtins()
SPEC = InputSpec((4, 4), 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), pretrained=True)
PIXELS = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4), dtype=np.uint8))


def test_preprocess_modes_match_their_definitions():
    p = PIXELS.double()
    mean, std = torch.tensor(SPEC.mean).view(1, 3, 1, 1), torch.tensor(SPEC.std).view(1, 3, 1, 1)
    expected = {
        "native": (p / 255 - mean) / std,
        "unit": p / 255,
        "raw": p,
        "caffe": p.flip(1) - torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1),
    }
    for mode, want in expected.items():
        got = normalize(PIXELS, apply_preprocess(SPEC, mode)).double()
        assert torch.allclose(got, want, atol=1e-3), mode
    assert apply_preprocess(SPEC, "caffe").bgr and not apply_preprocess(SPEC, "unit").bgr
    gray = apply_preprocess(InputSpec((4, 4), 1, (0.0,), (1.0,)), "caffe")
    assert gray.channels == 1 and not gray.bgr and gray.mean[0] * 255 == pytest.approx(sum(CAFFE_BGR_MEAN) / 3)


def resnet():
    torch.manual_seed(0)
    return BACKBONES.get("timm/resnet10t").factory(image_size=32, embed_dim=8)


def one_step(backbone):
    backbone.train()
    opt = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    backbone(torch.randn(4, 3, 32, 32)).pow(2).mean().backward()
    opt.step()


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def changed(before, module, prefix):
    """Whether any state entry under `prefix` changed; a prefix that names nothing is a bug in the test."""
    after = module.state_dict()
    keys = [k for k in before if k.startswith(prefix)]
    assert keys and all(k in after for k in keys), f"no state entry starts with {prefix!r}"
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_changed_refuses_a_prefix_that_names_no_state():
    backbone = resnet()
    assert not changed(snapshot(backbone), backbone, "trunk.layer4.")
    with pytest.raises(AssertionError, match="no state entry starts with 'trunk.layer9.'"):
        changed(snapshot(backbone), backbone, "trunk.layer9.")  # resnet10t has layer1..layer4


def test_freeze_backbone_trains_only_the_head_and_keeps_bn_stats():
    backbone = resnet()
    record = freeze(backbone, "backbone")
    assert record["backbone_trainable_params"] == sum(p.numel() for p in backbone.head.parameters())
    before = {k: v.clone() for k, v in backbone.trunk.trunk.state_dict().items()}
    head_before = snapshot(backbone.head)
    one_step(backbone)
    assert isinstance(backbone.trunk, FrozenTrunk) and not backbone.trunk.trunk.training
    assert all(torch.equal(before[k], v) for k, v in backbone.trunk.trunk.state_dict().items())  # incl. running stats
    assert changed(head_before, backbone.head, "")


def test_freeze_bn_keeps_running_stats_but_trains_convs():
    backbone = resnet()
    freeze(backbone, "bn")
    before = snapshot(backbone)
    one_step(backbone)
    stats = [k for k in before if "running_mean" in k]
    assert stats and all(torch.equal(before[k], backbone.state_dict()[k]) for k in stats)
    assert changed(before, backbone, "trunk.conv1.0.weight")


def test_freeze_all_but_last_n_trains_the_last_stage_only():
    backbone = resnet()
    record = freeze(backbone, "all_but_last_n", unfrozen_stages=1)
    assert 0 < record["backbone_trainable_params"] < record["backbone_params"]
    before = snapshot(backbone)
    one_step(backbone)
    assert not changed(before, backbone, "trunk.layer3.")
    assert not changed(before, backbone, "trunk.conv1.")
    assert changed(before, backbone, "trunk.layer4.")
    with pytest.raises(UserError, match="unfrozen_stages = 9 must be between 1 and 4"):
        freeze(resnet(), "all_but_last_n", unfrozen_stages=9)


def test_freeze_none_counts_everything_and_plain_modules_cannot_be_frozen():
    backbone = resnet()
    record = freeze(backbone, "none")
    assert record["backbone_trainable_params"] == record["backbone_params"]
    with pytest.raises(UserError, match="needs a backbone with a `trunk`"):
        freeze(torch.nn.Linear(2, 2), "backbone")


def test_input_check_flags_large_mismatch_only_for_pretrained_backbones():
    ok = input_check(PIXELS, SPEC, SPEC, normalize)
    assert not ok["mismatch"] and ok["mean_shift_in_native_stds"] == 0 and ok["spread_ratio"] == pytest.approx(1.0)
    raw = input_check(PIXELS, apply_preprocess(SPEC, "raw"), SPEC, normalize)
    assert raw["mismatch"] and raw["spread_ratio"] > 4
    scratch = InputSpec(SPEC.size, 3, SPEC.mean, SPEC.std, pretrained=False)
    assert not input_check(PIXELS, apply_preprocess(scratch, "raw"), scratch, normalize)["mismatch"]


def test_freeze_backbone_bn_train_keeps_weights_but_lets_bn_stats_drift():
    backbone = resnet()
    record = freeze(backbone, "backbone_bn_train")
    assert record["backbone_trainable_params"] == sum(p.numel() for p in backbone.head.parameters())
    before = snapshot(backbone)
    one_step(backbone)
    assert not changed(before, backbone, "trunk.conv1.0.weight")
    assert changed(before, backbone, "trunk.conv1.1.running_mean")  # the pitfall this mode measures

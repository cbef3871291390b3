"""Local weights files for timm backbones: strict, weights_only, one-line errors on mismatch."""

import pickle

import pytest
import torch

from bench.builtins import load_builtins
from bench.errors import UserError
from bench.plugins import BACKBONES

load_builtins()


def build(name="timm/resnet10t", **args):
    return BACKBONES.get(name).factory(image_size=32, **args)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_loads_exactly(tmp_path, suffix):
    import timm

    source = timm.create_model("resnet10t", num_classes=10)  # with a classifier, which the backbone drops
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    backbone = build(weights=str(path))
    for key, value in backbone.trunk.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_mismatched_weights_are_a_one_line_error(tmp_path):
    import timm

    path = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), path)
    with pytest.raises(UserError) as err:
        build(weights=str(path))
    message = str(err.value)
    assert "do not match the model" in message and "wrong shape" in message and "\n" not in message


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": print}, f, protocol=2)  # an object weights_only must not unpickle (protocol 2: torch.save's own)
    with pytest.raises(UserError, match="cannot read weights"):
        build(weights=str(path))


def test_missing_weights_file_and_conflicting_options(tmp_path):
    with pytest.raises(UserError, match="not found — fix the weights path"):
        build(weights=str(tmp_path / "none.pth"))
    with pytest.raises(UserError, match="either pretrained = true or weights"):
        build(weights="x.pth", pretrained=True)

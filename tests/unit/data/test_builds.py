"""Walk every registered backbone, loss and dataset and build it (OML does this for its registries)."""

import numpy as np
import pytest
import torch

from bench.builtins import load_builtins
from bench.data.preprocess import fit_to_spec, normalize
from bench.plugins import BACKBONES, DATASETS, LOSSES, Backbone, LabelledImages, Loss

load_builtins()

# timm has ~1,300 models; build a few small ones of different families through the namespace.
TIMM_SAMPLE = ["timm/resnet10t", "timm/mobilenetv3_small_050", "timm/efficientnet_b0", "timm/test_vit"]
SMALL_ARGS = {"koch": {"image_size": 65}}


@pytest.mark.parametrize("name", [n for n, _ in BACKBONES.list() if "<" not in n] + TIMM_SAMPLE)
def test_every_backbone_builds_and_embeds(name):
    args = SMALL_ARGS.get(name, {"image_size": 32} if name.startswith("timm/") and "vit" not in name else {})
    backbone = BACKBONES.get(name).factory(**args)
    assert isinstance(backbone, Backbone)
    spec = backbone.input_spec
    images, _ = fit_to_spec(np.random.default_rng(0).integers(0, 255, (2, 1, 20, 20), dtype=np.uint8), spec)
    out = backbone.eval()(normalize(images, spec))
    assert out.shape == (2, backbone.embed_dim)
    assert torch.isfinite(out).all()


def batch_for(kind: str):
    if kind == "pairs":
        return torch.tensor([0, 0, 1, 2, 0, 3, 1, 2])
    if kind == "triplets":
        return torch.tensor([0, 1, 2, 0, 1, 2, 1, 2, 0])
    return torch.arange(4).repeat_interleave(4)


PML_REQUIRED = {"pml/RankedListLoss": {"margin": 0.4, "Tn": 1.0}}


@pytest.mark.parametrize("name", [n for n, _ in LOSSES.list() if "<" not in n] + [n for n, _ in LOSSES.list("pml/*")])
def test_every_loss_builds_and_backpropagates(name):
    torch.manual_seed(0)
    loss = LOSSES.get(name).factory(16, **PML_REQUIRED.get(name, {}))
    assert isinstance(loss, Loss) and loss.batch in ("pairs", "triplets", "m_per_class")
    assert loss.distance in ("cosine", "euclidean", "l1")
    labels = batch_for(loss.batch)
    embeddings = torch.randn(len(labels), 16, requires_grad=True)
    if not getattr(loss, "trains", True):  # `none`, the untrained baseline: the runner never calls it
        with pytest.raises(RuntimeError, match="never trained"):
            loss(embeddings, labels)
        return
    value = loss(embeddings, labels)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert embeddings.grad is not None


def test_every_dataset_builds(tmp_path):
    from datafixtures import make_cars, make_csv, make_cub, make_folder, make_grocery, make_inshop, make_sop, omniglot_zip, write_idx_set

    make_folder(tmp_path / "folder")
    manifest = make_csv(tmp_path / "csv", [("a0.png", "a"), ("a1.png", "a"), ("b0.png", "b"), ("b1.png", "b")], header="path,label")
    write_idx_set(tmp_path / "idx", gz=True)
    omniglot_zip(tmp_path / "omniglot" / "images_background.zip", "images_background", {"Greek": 2})
    omniglot_zip(tmp_path / "omniglot" / "images_evaluation.zip", "images_evaluation", {"Tifinagh": 2})
    args = {
        "folder": {"root": str(tmp_path / "folder")},
        "csv": {"manifest": str(manifest)},
        "mnist": {"root": str(tmp_path / "idx")},
        "omniglot": {"root": str(tmp_path / "omniglot")},
        "grocery": {"root": str(make_grocery(tmp_path / "grocery")), "image_size": 16},
        "cub": {"root": str(make_cub(tmp_path)), "image_size": 8},
        "cars196": {"root": str(make_cars(tmp_path / "cars")), "image_size": 8},
        "sop": {"root": str(make_sop(tmp_path)), "image_size": 8},
        "inshop": {"root": str(make_inshop(tmp_path / "inshop")), "image_size": 8},
    }
    for name, _ in DATASETS.list():
        data = DATASETS.get(name).factory(**args.get(name, {}))
        assert isinstance(data, LabelledImages) and len(data.class_names) >= 2

"""Product retrieval's protocol through a real grid: when test images have roles, queries are searched
against the gallery only, and recall@1 matches a brute-force loop over the same embeddings."""

import json

import numpy as np
import pytest
import torch
from datafixtures import noise_classes

from bench.cli import main


def make_catalogue(root, seed=0):
    """8 classes of class-structured noise; the 4 test classes have query/ and gallery/ sub-folders."""
    return noise_classes(root, {f"c{c}": ({"query": 3, "gallery": 2} if c >= 4 else {"": 6}) for c in range(8)}, seed, noise=60.0)


GRID = """
name = "qg"
[budget]
max_steps = 1
[train]
precision = "fp32"
[split]
test_classes = {test}
[eval]
n_way = 2
episodes = 50
[axes]
backbone = ["timm/resnet10t"]
loss = ["none"]
dataset = ["folder"]
[backbone."timm/resnet10t"]
image_size = 32
[dataset.folder]
root = "{root}"
"""


def test_queries_are_searched_against_the_gallery_only(tmp_path, monkeypatch):
    make_catalogue(tmp_path / "cat")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID.format(test='["c4", "c5", "c6", "c7"]', root=tmp_path / "cat"))
    assert main(["run", "--grid", "g.toml"]) == 0
    [row] = [json.loads(line) for line in (tmp_path / "results" / "qg.jsonl").read_text().splitlines()]
    m = row["metrics"]
    assert row["status"] == "ok" and m["retrieval_gallery"] == "separate" and m["retrieval_queries"] == 12
    assert m["verification_pairs"] == 12 * 8  # query × gallery pairs, not all pairs of test images
    # brute force: the same trunk (seeded as the cell), cosine nearest gallery image per query
    from bench.builtins import load_builtins
    from bench.data.preprocess import fit_to_spec, normalize
    from bench.plugins import BACKBONES, DATASETS

    load_builtins()
    torch.manual_seed(0)
    backbone = BACKBONES.get("timm/resnet10t").factory(image_size=32).eval()
    data = DATASETS.get("folder").factory(root=str(tmp_path / "cat"))
    images, _ = fit_to_spec(data.images, backbone.input_spec)
    with torch.no_grad():
        emb = torch.nn.functional.normalize(backbone.trunk(normalize(images, backbone.input_spec)), dim=1)
    roles = data.attributes["role"]
    queries, gallery = np.flatnonzero(roles == "query"), np.flatnonzero(roles == "gallery")
    hits = 0
    for q in queries:
        best = max(gallery, key=lambda g: float(emb[q] @ emb[g]))
        hits += data.labels[best] == data.labels[q]
    assert m["recall_at_1"] == pytest.approx(hits / len(queries))


def test_test_images_with_partial_roles_fail_before_training(tmp_path, monkeypatch, capsys):
    # c5 has queries and a gallery, c0 has no roles: a test split mixing them cannot be searched as a catalogue
    make_catalogue(tmp_path / "cat", seed=1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID.format(test='["c5", "c0"]', root=tmp_path / "cat"))
    assert main(["validate", "g.toml"]) == 2
    err = capsys.readouterr().err
    assert "give every test image a role" in err and "some none" in err and len(err.strip().splitlines()) == 1

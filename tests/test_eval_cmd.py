"""`bench evaluate EMBEDDINGS.npz`: prints every metric, writes JSON, and rejects bad files in one line."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from bench.config import EvalConfig
from bench.errors import UserError
from bench.evaluate_cmd import add_parser
from bench.metrics import evaluate


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(required=True)
    add_parser(sub, common)
    args = parser.parse_args(argv)
    return args.func(args)


def write(tmp_path, **arrays):
    path = tmp_path / "emb.npz"
    np.savez(path, **arrays)
    return path


def clustered_arrays(seed=0, n_classes=25, per_class=4, dim=8):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    return (rng.normal(size=(n_classes, dim))[labels] + 0.8 * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def test_evaluate_prints_and_writes_the_same_metrics_as_evaluate(tmp_path, capsys):
    x, y = clustered_arrays()
    vx, vy = clustered_arrays(seed=1)
    path = write(tmp_path, embeddings=x, labels=y, val_embeddings=vx, val_labels=vy)
    assert run(["evaluate", str(path), "--distance", "euclidean", "--episodes", "50", "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "m.json").read_text())
    expected = evaluate(torch.from_numpy(x), torch.from_numpy(y), "euclidean", EvalConfig(episodes=50, distance="euclidean"), 0,
                        val_embeddings=torch.from_numpy(vx), val_labels=torch.from_numpy(vy))
    assert written["metrics"] == pytest.approx(expected)
    for key in ("verification_eer", "verification_accuracy_val_threshold", "map_at_r", "few_shot_20way_1shot_accuracy"):
        assert key in printed and f"{expected[key]:.6f}" in printed


def test_evaluate_uses_a_separate_gallery(tmp_path):
    x, y = clustered_arrays()
    path = write(tmp_path, embeddings=x[::2], labels=y[::2], gallery_embeddings=x[1::2], gallery_labels=y[1::2])
    assert run(["evaluate", str(path), "--episodes", "5", "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["retrieval_gallery"] == "separate" and metrics["retrieval_queries"] == 50


@pytest.mark.parametrize("arrays,message", [
    ({"emb": np.zeros((3, 2)), "labels": np.arange(3)}, "missing embeddings"),
    ({"embeddings": np.zeros((3, 2)), "labels": np.arange(2)}, "one integer label per embedding"),
    ({"embeddings": np.zeros((3, 2)), "labels": np.arange(3), "gallery_embeddings": np.zeros((3, 2))}, "come together"),
    ({"embeddings": np.full((3, 2), np.nan), "labels": np.arange(3)}, "NaN"),
    ({"embeddings": np.zeros((3, 2)), "labels": np.array(["a", "b", "c"])}, "labels must be integers"),
])
def test_evaluate_rejects_bad_files_in_one_line(tmp_path, arrays, message):
    path = write(tmp_path, **arrays)
    with pytest.raises(UserError, match=message) as err:
        run(["evaluate", str(path)])
    assert "\n" not in str(err.value)


def test_evaluate_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        run(["evaluate", str(tmp_path / "nope.npz")])
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(UserError, match="not a readable .npz"):
        run(["evaluate", str(tmp_path / "bad.npz")])
    with pytest.raises(UserError, match="--episodes 0 must be positive"):
        run(["evaluate", str(write(tmp_path, embeddings=np.zeros((3, 2)), labels=np.arange(3))), "--episodes", "0"])

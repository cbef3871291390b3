"""`bench evaluate EMBEDDINGS.npz`: prints every metric, writes JSON, and rejects bad files in one line."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from scipy.spatial.distance import cdist, pdist
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from bench.cli.evaluate import add_parser
from bench.errors import UserError


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


def monte_carlo_few_shot(dist, labels, n_way, episodes, seed):
    """1-shot episodes drawn with Python's `random`, not the harness's generator: mean and standard error."""
    rng = random.Random(seed)
    members = {c: [i for i in range(len(labels)) if labels[i] == c] for c in set(labels.tolist())}
    accuracies = []
    for _ in range(episodes):
        drawn = [rng.sample(members[c], 2) for c in rng.sample(sorted(members), n_way)]
        right = sum(min(range(n_way), key=lambda v: dist[query, drawn[v][0]]) == w for w, (_, query) in enumerate(drawn))
        accuracies.append(right / n_way)
    return np.mean(accuracies), np.std(accuracies, ddof=1) / np.sqrt(episodes)


def best_val_threshold(same, dist):
    """The distance threshold of the best balanced accuracy, by a loop over candidates (smallest on a tie)."""
    candidates = np.unique(dist)
    return candidates[int(np.argmax([(dist[same] <= t).mean() + (dist[~same] > t).mean() for t in candidates]))]


def test_evaluate_prints_and_writes_metrics_that_match_references(tmp_path, capsys):
    x, y = clustered_arrays()
    vx, vy = clustered_arrays(seed=1)
    path = write(tmp_path, embeddings=x, labels=y, val_embeddings=vx, val_labels=vy)
    assert run(["evaluate", str(path), "--distance", "euclidean", "--episodes", "400", "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    i, j = np.triu_indices(len(y), 1)
    same, dist = y[i] == y[j], pdist(x.astype(np.float64))
    vi, vj = np.triu_indices(len(vy), 1)
    threshold = best_val_threshold(vy[vi] == vy[vj], pdist(vx.astype(np.float64)))
    calc = AccuracyCalculator(
        include=("mean_average_precision_at_r",), k="max_bin_count", device=torch.device("cpu"), knn_func=CustomKNN(LpDistance(normalize_embeddings=False))
    )
    shots, stderr = monte_carlo_few_shot(cdist(x, x), y, 20, 2000, seed=0)
    assert metrics["verification_roc_auc"] == pytest.approx(roc_auc_score(same, -dist), abs=1e-6)
    assert metrics["verification_val_threshold"] == pytest.approx(threshold, abs=1e-5)
    assert metrics["verification_balanced_accuracy_val_threshold"] == pytest.approx(balanced_accuracy_score(same, dist <= threshold), abs=1e-6)
    assert metrics["map_at_r"] == pytest.approx(calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))["mean_average_precision_at_r"], abs=1e-6)
    few = metrics["few_shot_20way_1shot_accuracy"]
    assert abs(few - shots) < 4 * np.hypot(stderr, metrics["few_shot_20way_1shot_accuracy_stderr"]) and 0.2 < few < 0.95
    for key in ("verification_roc_auc", "verification_balanced_accuracy_val_threshold", "map_at_r", "few_shot_20way_1shot_accuracy"):
        assert f"{key} " in printed and f"{metrics[key]:.6f}" in printed
    assert "note" not in printed


def test_evaluate_scores_query_gallery_pairs_and_gallery_support(tmp_path, capsys):
    # One query per class, as in retrieval benchmarks: verification and few-shot need the gallery.
    x, y = clustered_arrays(per_class=5)
    queries, gallery = np.arange(0, len(y), 5), np.setdiff1d(np.arange(len(y)), np.arange(0, len(y), 5))
    path = write(tmp_path, embeddings=x[queries], labels=y[queries], gallery_embeddings=x[gallery], gallery_labels=y[gallery])
    assert run(["evaluate", str(path), "--episodes", "50", "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    same = y[queries][:, None] == y[gallery][None, :]
    assert metrics["retrieval_gallery"] == "separate" and metrics["retrieval_queries"] == 25
    assert metrics["verification_pairs"] == 25 * 100 and metrics["verification_same_pairs"] == same.sum() == 100
    auc = roc_auc_score(same.ravel(), -cdist(x[queries].astype(np.float64), x[gallery].astype(np.float64), "cosine").ravel())
    assert metrics["verification_roc_auc"] == pytest.approx(auc, abs=1e-6)
    assert metrics["few_shot_classes"] == 25 and 0.2 < metrics["few_shot_20way_1shot_accuracy"] <= 1
    assert not [k for k in metrics if k.endswith("_note")] and "note" not in capsys.readouterr().out


def test_evaluate_prints_why_a_figure_is_nan(tmp_path, capsys):
    x, _ = clustered_arrays(n_classes=6, per_class=1)
    path = write(tmp_path, embeddings=x, labels=np.arange(6))  # every image its own class
    assert run(["evaluate", str(path), "--episodes", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("verification: no same-class pair among the 15 test pairs") for line in lines)
    assert any(line.startswith("few_shot: 0 classes have 2+ images, a 20-way episode needs 20") for line in lines)
    assert any(line.startswith("retrieval: none of the 6 queries") for line in lines)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"emb": np.zeros((3, 2)), "labels": np.arange(3)}, "missing embeddings"),
        ({"embeddings": np.zeros((3, 2)), "labels": np.arange(2)}, "one integer label per embedding"),
        ({"embeddings": np.zeros((3, 2)), "labels": np.arange(3), "gallery_embeddings": np.zeros((3, 2))}, "come together"),
        ({"embeddings": np.full((3, 2), np.nan), "labels": np.arange(3)}, "NaN"),
        ({"embeddings": np.zeros((3, 2)), "labels": np.array(["a", "b", "c"])}, "labels must be integers"),
    ],
)
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


def test_evaluate_loads_neither_scikit_learn_nor_scipy(tmp_path):
    """Half of `bench evaluate`'s import time was scikit-learn's and scipy's, for a ROC curve and a rank: the
    metrics now need neither (checked against both in tests/test_eval_metrics.py), so a fresh process never loads them."""
    x, y = clustered_arrays()
    path = write(tmp_path, embeddings=x, labels=y)
    code = (
        "import sys\nfrom bench.cli import main\nrc = main(['evaluate', sys.argv[1], '--episodes', '20'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy', 'pandas', 'pytorch_metric_learning'}))\nsys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"

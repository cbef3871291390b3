"""Per-test-item outcomes (bench.items): against slow references, the items reproduce every row metric they
stand for; their material digests name what the items are, never the model; a grid keeps them beside its
results, the same through --workers, and a failed write costs the items, never the rows."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from sklearn.metrics import auc, roc_auc_score

from bench.config import EvalConfig
from bench.eval.fewshot import WITHIN_GROUP_STREAM, class_pools, draw_episodes, draw_group_episodes, group_codes, pools_by_group
from bench.eval.metrics import evaluate
from bench.eval.verification import item_pairs, select_pairs
from bench.items import ITEM_PAIRS, ItemScores, item_metric, item_scores, items_folder, items_path, read_items, roc_vertices, write_items
from bench.schema import ItemsRef, Row

KS = (1, 2, 4)


def clustered(n: int, classes: int, dim: int = 6, seed: int = 0, spread: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Class centres with noise around them, neither perfect nor chance, so every metric is informative; in
    whole numbers, so that L1 and Euclidean distances are exact in float32 and the references (float64)
    order them as the evaluator does, ties included (many: they exercise the tie rules)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, dim, generator=g) * spread
    return torch.round(2 * (centres[labels] + torch.randn(n, dim, generator=g))), labels


def ref_distance(a: np.ndarray, b: np.ndarray, distance: str) -> float:
    if distance == "cosine":
        return 1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) if distance == "euclidean" else float(np.abs(a - b).sum())


def reference_retrieval(q, ql, g, gl, distance: str) -> dict[int, tuple[int, float, float]]:
    """query index -> (rank of its first same-class gallery item, R-precision, AP@R), by a loop over each
    query's whole ranking (distance, then gallery index); queries without a same-class item are left out."""
    same_set = g is None
    g, gl = (q, ql) if same_set else (g, gl)
    q, g = q.double().numpy(), g.double().numpy()
    out = {}
    for i in range(len(q)):
        candidates = [j for j in range(len(g)) if not (same_set and j == i)]
        order = sorted(candidates, key=lambda j: (ref_distance(q[i], g[j], distance), j))
        hits = [bool(gl[j] == ql[i]) for j in order]
        r = sum(hits)
        if r == 0:
            continue
        ap = sum(sum(hits[: m + 1]) / (m + 1) for m in range(r) if hits[m]) / r
        out[i] = (hits.index(True) + 1, sum(hits[:r]) / r, ap)
    return out


def same_metrics(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.parametrize("distance", ["l1", "euclidean"])
@pytest.mark.parametrize("separate", [False, True], ids=["other_queries", "gallery"])
def test_retrieval_items_are_each_querys_outcome_and_their_means_the_row(distance, separate):
    x, y = clustered(150, 12, seed=1)
    y[0] = 99  # a lone query: no same-class item, not scored
    q, ql, g, gl = (x[:60], y[:60], x[60:], y[60:]) if separate else (x, y, None, None)
    config = EvalConfig(recall_k=KS, episodes=30, n_way=3, max_pairs=3000)
    items = {}
    extra = {"gallery": g, "gallery_labels": gl} if separate else {}
    row = evaluate(q, ql, distance, config, 7, items=items, **extra)
    assert same_metrics(row, evaluate(q, ql, distance, config, 7, **extra))  # items change nothing
    ref = reference_retrieval(q, ql, g, gl, distance)
    assert items["retrieval.queries"].tolist() == sorted(ref) and 0 not in ref
    gallery_labels = ql if g is None else gl
    most = int(max((gallery_labels == c).sum() for c in ql.tolist())) - int(g is None)
    k = min(max(max(KS), most), len(gallery_labels) - int(g is None))  # the neighbours retrieval searches
    first = np.array([ref[i][0] for i in sorted(ref)])
    assert items["retrieval.first_hit"].dtype == np.uint16
    assert items["retrieval.first_hit"].tolist() == np.where(first <= k, first, 0).tolist()
    assert np.abs(items["retrieval.r_precision"] / 65535 - [ref[i][1] for i in sorted(ref)]).max() <= 0.5 / 65535 + 1e-12
    assert np.abs(items["retrieval.map_at_r"] / 65535 - [ref[i][2] for i in sorted(ref)]).max() <= 0.5 / 65535 + 1e-12
    for metric in [f"recall_at_{kk}" for kk in KS] + ["precision_at_1", "r_precision", "map_at_r"]:
        scores = item_scores(items, metric)
        assert scores.kind == "mean" and item_metric(scores) == pytest.approx(row[metric], abs=1e-5), metric
    assert np.mean(items["retrieval.first_hit"] == 1) == row["precision_at_1"]
    assert item_scores(items, f"recall_at_{k + 1}") is None  # a first hit past the k searched reads 0: no answer there


def reference_episode_counts(queries, support_set, support, query, k_shot: int, distance: str) -> list[int]:
    """Correct queries per episode, by a loop: each query takes the class of its nearest support image
    (the first drawn on a tie); support is (episodes, n_way, k_shot) indices, query (episodes, n_way)."""
    queries, support_set = queries.double().numpy(), support_set.double().numpy()
    counts = []
    for e in range(len(query)):
        flat = support[e].reshape(-1)
        correct = 0
        for w, qi in enumerate(query[e]):
            nearest = min(range(len(flat)), key=lambda s: (ref_distance(queries[qi], support_set[flat[s]], distance), s))
            correct += nearest // k_shot == w
        counts.append(correct)
    return counts


@pytest.mark.parametrize("k_shot", [1, 2])
@pytest.mark.parametrize("separate", [False, True], ids=["within_queries", "gallery_support"])
def test_few_shot_items_are_each_episodes_correct_count_and_their_mean_the_row(k_shot, separate):
    distance = "l1"
    x, y = clustered(240, 12, seed=2, spread=1.0)
    groups = (y % 3).numpy()  # 4 classes per group
    q, ql, g, gl = (x[:90], y[:90], x[90:], y[90:]) if separate else (x, y, None, None)
    config = EvalConfig(n_way=3, k_shot=k_shot, episodes=60, max_pairs=2000)
    extra = {"gallery": g, "gallery_labels": gl} if separate else {}
    items = {}
    row = evaluate(q, ql, distance, config, 5, items=items, groups=groups[: len(q)], group_name="colour", **extra)
    assert same_metrics(row, evaluate(q, ql, distance, config, 5, groups=groups[: len(q)], group_name="colour", **extra))
    pools = class_pools(ql, k_shot, gl)
    every = draw_episodes(pools, 3, k_shot, 60, np.random.default_rng(5))
    by_group = [m for m in pools_by_group(pools, group_codes(groups[: len(q)], ql, "colour")) if len(m) >= 3]
    within = draw_group_episodes(pools, by_group, 3, k_shot, 60, np.random.default_rng([WITHIN_GROUP_STREAM, 5]))
    for metric, (support, query, _) in [(f"few_shot_3way_{k_shot}shot_accuracy", every), (f"few_shot_3way_{k_shot}shot_within_colour_accuracy", within)]:
        assert items[metric].dtype == np.uint8 and int(items[f"{metric}.queries"]) == 3
        assert items[metric].tolist() == reference_episode_counts(q, q if g is None else g, support, query, k_shot, distance)
        scores = item_scores(items, metric)
        assert item_metric(scores) == pytest.approx(row[metric], abs=1e-9) and 0 < row[metric] < 1
    assert item_scores(items, f"few_shot_3way_{k_shot}shot_accuracy_stderr") is None


@pytest.mark.parametrize("n, max_pairs", [(70, 10**6), (220, 10**6), (400, 20000)], ids=["all_kept", "subset", "sampled_subset"])
def test_verification_items_are_dense_ranks_of_the_kept_pairs(n, max_pairs):
    x, y = clustered(n, 15, seed=3, spread=0.8)
    config = EvalConfig(max_pairs=max_pairs, episodes=10, n_way=3)
    items = {}
    row = evaluate(x, y, "l1", config, 11, items=items)
    rank, same = items["verification.rank"], items["verification.same"]
    assert rank.dtype == np.uint16 and same.dtype == bool and len(rank) == min(ITEM_PAIRS, row["verification_pairs"])
    scores = item_scores(items, "verification_roc_auc")
    assert scores.kind == "auc" and item_metric(scores) == pytest.approx(roc_auc_score(same, -rank.astype(float)), abs=1e-12)
    pairs = select_pairs(y, max_pairs, 11)
    all_same = (y[pairs["i"]] == y[pairs["j"]]).numpy()
    kept = item_pairs(all_same, 11)
    assert same.tolist() == all_same[kept].tolist()
    reference = np.array(
        [ref_distance(x[i].double().numpy(), x[j].double().numpy(), "l1") for i, j in zip(pairs["i"][kept].tolist(), pairs["j"][kept].tolist())]
    )
    assert rank.tolist() == (rankdata(reference, method="dense") - 1).tolist()  # ties (whole-number L1) share a rank
    if row["verification_pairs"] <= ITEM_PAIRS:  # every pair kept: the row's AUC itself
        assert item_metric(scores) == pytest.approx(row["verification_roc_auc"], abs=1e-12)
    else:  # same- and different-class pairs drawn apart, half each (or all of the rarer kind): an unbiased AUC
        assert same.sum() == min(ITEM_PAIRS // 2, int(all_same.sum())) and len(set(kept.tolist())) == ITEM_PAIRS
        assert abs(item_metric(scores) - row["verification_roc_auc"]) < 0.03


def test_weighted_item_metrics_equal_the_metric_of_the_repeated_items_and_vectorise():
    rng = np.random.default_rng(0)
    n = 400
    rank = rng.integers(0, 60, n).astype(float)  # many ties
    same = rng.random(n) < 0.3 + 0.4 * (rank < 20)
    auc, mean = ItemScores("auc", "m", rank, same), ItemScores("mean", "m", rng.random(n))
    assert item_metric(auc) == pytest.approx(roc_auc_score(same, -rank), abs=1e-12)
    weights = rng.integers(0, 4, (7, n))
    for w in weights:
        assert item_metric(auc, w) == pytest.approx(roc_auc_score(np.repeat(same, w), -np.repeat(rank, w)), abs=1e-12)
        assert item_metric(mean, w) == pytest.approx(np.repeat(mean.values, w).mean(), abs=1e-12)
    for scores in (auc, mean):
        many = item_metric(scores, weights)
        assert many.shape == (7,) and np.allclose(many, [item_metric(scores, w) for w in weights], rtol=0, atol=1e-14)
    assert math.isnan(item_metric(auc, same.astype(float)))  # only positives left: no AUC


def test_material_names_the_items_not_the_model():
    x, y = clustered(260, 10, seed=4)
    other_model = torch.randn_like(x)
    config = EvalConfig(max_pairs=20000, episodes=40, n_way=3)

    def material(emb, labels, seed):
        items = {}
        evaluate(emb, labels, "cosine", config, seed, items=items, groups=(labels % 2).numpy(), group_name="half")
        return {k: str(v) for k, v in items.items() if k.startswith("material.")}

    base = material(x, y, 1)
    assert set(base) == {
        "material.retrieval",
        "material.verification",
        "material.few_shot_3way_1shot_accuracy",
        "material.few_shot_3way_1shot_within_half_accuracy",
    }
    assert material(other_model, y, 1) == base
    reseeded = material(x, y, 2)
    assert reseeded["material.retrieval"] == base["material.retrieval"]  # retrieval scores every query whatever the seed
    assert all(reseeded[k] != base[k] for k in base if k != "material.retrieval")
    relabelled = material(x, torch.roll(y, 1), 1)
    assert all(relabelled[k] != base[k] for k in base)


def test_a_nan_family_keeps_no_items():
    x = torch.randn(12, 4)
    items = {}
    evaluate(x, torch.arange(12), "cosine", EvalConfig(n_way=3, episodes=5), 0, items=items)  # every image its own class
    assert items == {}


def test_items_file_round_trip_and_a_changed_file_is_refused(tmp_path):
    results = tmp_path / "r.jsonl"
    items = {"retrieval.first_hit": np.array([1, 0, 3], dtype=np.uint16), "material.retrieval": np.array("ab" * 32)}
    entry = write_items(results, "c0ffee", items)
    assert entry["file"] == "r_items/c0ffee.npz" and items_path(results, ItemsRef.from_dict(entry)) == items_folder(results) / "c0ffee.npz"
    data = (tmp_path / entry["file"]).read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    got = read_items(results, ItemsRef.from_dict(entry))  # a Mapping that decodes an array when it is first asked for
    assert got.keys() == items.keys() and all(np.array_equal(got[k], items[k]) for k in items)
    assert len(got) == 2 and "schema" not in got and got.get("verification.rank") is None
    with pytest.raises(KeyError):
        got["schema"]
    assert read_items(results, None) is None
    write_items(results, "c0ffee", {**items, "retrieval.first_hit": np.array([2, 2, 2], dtype=np.uint16)})  # a rerun's file
    with pytest.warns(UserWarning, match="c0ffee.npz: sha256 differs"):
        assert read_items(results, ItemsRef.from_dict(entry)) is None
    (tmp_path / entry["file"]).unlink()
    with pytest.warns(UserWarning, match="c0ffee.npz"):
        assert read_items(results, ItemsRef.from_dict(entry)) is None
    (tmp_path / "blocked.jsonl").write_text("")
    (tmp_path / "blocked_items").write_text("a file where the folder should be")
    failures = []
    assert write_items(tmp_path / "blocked.jsonl", "c0ffee", items, on_error=failures.append) is None
    assert len(failures) == 1 and isinstance(failures[0], OSError) and list(tmp_path.glob("blocked_items*")) == [tmp_path / "blocked_items"]


GRID = """
name = "it"
[budget]
max_steps = 5
[train]
batch_size = 12
precision = "fp32"
[split]
val_fraction = 0.3
[eval]
episodes = 20
n_way = 3
recall_k = [1, 2]
max_pairs = 4000
[axes]
backbone = ["conv4"]
loss = ["contrastive", "triplet", "none"]
seed = [0]
[backbone.conv4]
image_size = 16
"""


SEARCH = """
[search]
trials = 2
metric = "verification_roc_auc"
"train.lr" = { log = [1e-4, 1e-1] }
"""


@pytest.fixture
def bench_run(tmp_path, monkeypatch, capsys):
    """`bench run` on a grid (GRID by default) in this process, one torch thread like each of 2 workers on 2
    cores (thread counts change float sums); returns (results path, stderr). The thread count is put back."""
    from bench.cli import main

    threads = torch.get_num_threads()

    def run(results: str, *args, grid: str = GRID) -> tuple[Path, str]:
        (tmp_path / "g.toml").write_text(grid)
        monkeypatch.chdir(tmp_path)
        assert main(["run", "--grid", "g.toml", "--results", results, "--threads", "1", *args]) == 0
        return tmp_path / results, capsys.readouterr().err

    yield run
    torch.set_num_threads(threads)


def test_a_grid_keeps_every_cells_items_beside_its_results_and_workers_keep_the_same(bench_run):
    results, _ = bench_run("r.jsonl")
    text = results.read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 3 and '"_items"' not in text and {r["config"]["loss"] for r in rows} == {"contrastive", "triplet", "none"}
    arrays = {}
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        path = items_path(results, entry_of(row))
        assert path == results.parent / "r_items" / f"{row['cell_id']}.npz"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["items"]["sha256"] and path.stat().st_size == row["items"]["bytes"]
        arrays[row["cell_id"]] = items = read_items(results, entry_of(row))
        for metric in ("recall_at_1", "recall_at_2", "precision_at_1", "map_at_r", "few_shot_3way_1shot_accuracy", "verification_roc_auc"):
            tolerance = 1e-9 if metric.startswith(("recall", "precision", "few_shot")) else 1e-5
            assert item_metric(item_scores(items, metric)) == pytest.approx(row["metrics"][metric], abs=tolerance), metric
    assert len({str(a["material.retrieval"]) for a in arrays.values()}) == 1  # one comparison group: the same items

    workers, _ = bench_run("w.jsonl", "--workers", "2")
    for row in (json.loads(line) for line in workers.read_text().splitlines()):
        got, want = read_items(workers, entry_of(row)), arrays[row["cell_id"]]
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want), row["config"]["loss"]


def test_search_trials_keep_no_items_and_its_finals_do(bench_run):
    pytest.importorskip("optuna")
    results, _ = bench_run("s.jsonl", grid=GRID.replace('"triplet", ', "") + SEARCH)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    trials = [r for r in rows if "trial" in r["config"]]
    others = [r for r in rows if "trial" not in r["config"]]
    assert len(trials) == 2 and all(r["status"] == "ok" and "items" not in r and "roc" not in r for r in trials)
    assert {r["config"]["loss"] for r in others} == {"contrastive", "none"} and all(read_items(results, entry_of(r)) for r in others)


def test_a_cells_roc_is_kept_in_its_items_file_and_its_row_stays_small(bench_run):
    from bench.report.plots import roc_of
    from bench.report.rows import items_loader

    results, _ = bench_run("r.jsonl", grid=GRID.replace('"contrastive", "triplet", "none"', '"contrastive"'))
    [line] = results.read_text().splitlines()
    row = json.loads(line)
    assert row["status"] == "ok" and "roc" not in row and "verification_roc" not in row["metrics"]
    fpr, tpr = roc_vertices(read_items(results, entry_of(row)))
    inline = len(json.dumps({"roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}}))
    assert len(line) < 7000 < len(line) + inline  # 4.8 KB; the ROC's ~270 vertices inline made it 10.2 KB
    assert (fpr[0], fpr[-1], tpr[-1]) == (0.0, 1.0, 1.0) and np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert auc(fpr, tpr) == pytest.approx(row["metrics"]["verification_roc_auc"], abs=0.5 / 99 + 1e-5)  # downsample_roc's bound
    drawn = roc_of(Row.from_dict(row), items_loader([results]))  # what the plots draw
    assert np.array_equal(drawn[0], fpr) and np.array_equal(drawn[1], tpr)


def test_an_unwritable_items_folder_keeps_every_row_and_warns_once(bench_run, tmp_path):
    (tmp_path / "r_items").write_text("a file where the items folder should be")
    results, err = bench_run("r.jsonl")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 3 and all(r["status"] == "ok" and "items" not in r for r in rows)
    assert err.count("items not kept:") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(read_items(results, entry_of(r)) is None for r in rows)


def entry_of(row: dict) -> ItemsRef | None:
    """A row's items entry as the readers take it (bench.schema.ItemsRef), from the row as written."""
    return ItemsRef.from_dict(row["items"]) if "items" in row else None

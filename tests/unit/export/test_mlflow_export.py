"""`bench export mlflow` and `bench run --mlflow` against a real SQLite MLflow store, read back with MLflow's own
client: one parent per leaderboard line (agreeing with the leaderboard), one child per cell with its metrics and
learning curve, numbers as metrics and the evaluation's sizes as params (never a NaN, a narrow runs table), idempotent
exports that write nothing, a rerun row replacing its run, failed and trial rows kept, and the bad inputs.
Artifacts, commits and versions: tests/test_mlflow_provenance.py."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="needs the `mlflow` extra (in the test extra)")
from mlflow import MlflowClient  # noqa: E402
from mlflow_runs import QUICK, RESULTS, export, runs, write  # noqa: E402
from paths import copy_rows  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.export.mlflow import SIZE, plan  # noqa: E402
from bench.report.lines import configuration  # noqa: E402
from bench.report.rows import items_loader  # noqa: E402
from bench.report.table import ranked  # noqa: E402
from bench.results import read_rows  # noqa: E402

SEARCH = RESULTS / "search.jsonl"  # trials (ok and pruned) of 3 studies, and their finals
SEED = RESULTS / "seed_question.jsonl"  # 80 cells, 28 lines: lines still improving and not, steps ranges
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # inside MLflow's SQL store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds); each test has its own experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder}/mlflow.db"


@pytest.fixture(scope="module")
def quick(store, tmp_path_factory):
    path = copy_rows(QUICK, tmp_path_factory.mktemp("quick") / QUICK.name)
    assert export(store, "quick", path, extra=["--metric", "verification_roc_auc"]) == 0  # the metric these tests read
    return path, read_rows(path)


def test_one_child_per_cell_under_one_parent_per_leaderboard_line(store, quick):
    path, rows = quick
    parents, children = runs(store, "quick")
    frame, line_rows = ranked(rows, "verification_roc_auc", items_loader([path]))  # paired over the items, as the export
    assert len(children) == len(rows) == 15 and len(parents) == len(frame) == 8
    by_cell = {c.data.tags["cell_id"]: c for c in children}
    by_id = {p.info.run_id: p for p in parents}
    for (_, line), seeds in zip(frame.iterrows(), line_rows):  # each line's seeds share the parent that carries its marks
        parent = by_id[by_cell[seeds[0].cell_id].data.tags["mlflow.parentRunId"]]
        assert {by_cell[r.cell_id].data.tags["mlflow.parentRunId"] for r in seeds} == {parent.info.run_id}
        assert parent.data.metrics["verification_roc_auc"] == pytest.approx(line["verification_roc_auc_mean"])  # the children's key
        if not math.isnan(line["vs_best_p_adj"]):
            assert parent.data.metrics["verification_roc_auc/vs_best_p_adj"] == pytest.approx(line["vs_best_p_adj"])  # named after its metric
        else:
            assert "verification_roc_auc/vs_best_p_adj" not in parent.data.metrics  # the best line has none: no NaN instead
        if not math.isnan(line["verification_roc_auc_std"]):
            assert parent.data.metrics["verification_roc_auc_std"] == pytest.approx(line["verification_roc_auc_std"])
        assert parent.data.tags["vs_best"] == line["vs_best"] and "comparison_group" not in parent.data.tags  # one group: "all" says nothing
        improving = parent.data.metrics.get("verification_roc_auc/still_improving")
        assert improving == {"yes": 1.0, "no": 0.0}.get(line["still_improving"].split()[0]), line["still_improving"]
        low, high = (int(s) for s in (line["steps_range"].split("–") * 2)[:2])
        assert (parent.data.metrics["train/steps_min"], parent.data.metrics["train/steps_max"]) == (low, high)


def test_runs_have_short_unique_names_and_parents_span_their_cells(store, quick):
    _, rows = quick
    parents, children = runs(store, "quick")
    names = [p.info.run_name for p in parents]
    assert len(set(names)) == len(names) and max(map(len, names)) <= 40  # the options that tell lines apart, abbreviated
    assert "lite0 · triplet · frozen" in names and "koch · untrained" in names and "lite0 · triplet · frozen (BN train)" in names
    assert len({c.info.run_name for c in children}) == len(children)  # a child adds its seed
    for parent in parents:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        seeds = {r.cell_id: r.config["seed"] for r in rows}
        assert {c.info.run_name for c in mine} == {f"{parent.info.run_name} · seed {seeds[c.data.tags['cell_id']]}" for c in mine}
        # a parent runs from its first cell's start to its last cell's end, like a run
        assert parent.info.start_time == min(c.info.start_time for c in mine) and parent.info.end_time == max(c.info.end_time for c in mine)
        assert parent.data.tags["mlflow.source.name"] == f"grid {rows[0].grid}"


def test_a_child_holds_its_rows_metrics_params_tags_and_curve(store, quick):
    _, rows = quick
    _, children = runs(store, "quick")
    row = next(r for r in rows if r.curve)
    child = next(c for c in children if c.data.tags["cell_id"] == row.cell_id)
    assert child.info.status == "FINISHED" and "status" not in child.data.tags  # the run's status says ok; a tag says any other
    assert child.data.tags["speed_env"].startswith(row.env.device) and child.data.tags["speed_env"].endswith(row.precision)
    assert child.data.tags["stopped_by"] == row.train.stopped_by and f"torch {row.env.versions['torch']}" in child.data.tags["env.versions"]
    assert child.data.metrics["verification_roc_auc"] == row.metrics["verification_roc_auc"]
    assert child.data.metrics["train/steps"] == row.train.steps
    assert child.data.params["backbone"] == row.config["backbone"] and child.data.params["seed"] == str(row.config["seed"])
    assert "train.lr" not in child.data.params  # the same for every cell: in config.json, not a column
    history = MlflowClient(store).get_metric_history(child.info.run_id, "curve/val/verification_roc_auc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(p.steps, p.metrics["verification_roc_auc"]) for p in row.curve]


def test_exporting_again_adds_nothing_and_writes_nothing(store, quick):
    path, _ = quick
    before = {r.info.run_id: (r.data.tags, r.data.metrics, r.info.end_time) for r in sum(runs(store, "quick"), [])}
    assert export(store, "quick", path, extra=["--metric", "verification_roc_auc"]) == 0
    assert {r.info.run_id: (r.data.tags, r.data.metrics, r.info.end_time) for r in sum(runs(store, "quick"), [])} == before  # no refresh either


def test_numbers_are_metrics_sizes_are_params_and_the_table_stays_narrow(store, quick):
    _, rows = quick
    parents, children = runs(store, "quick")
    metrics = {k for r in parents + children for k in r.data.metrics}
    params = {k for r in parents + children for k in r.data.params}
    tags = {k for r in parents + children for k in r.data.tags if not k.startswith("mlflow.")}
    assert len(metrics) + len(params) + len(tags) <= 60, (sorted(metrics), sorted(params), sorted(tags))  # MLflow's runs table
    assert all(math.isfinite(v) for r in parents + children for v in r.data.metrics.values())  # no NaN, no inf
    assert not [k for k in metrics if SIZE.search(k)] and "verification_val_threshold" not in metrics  # no flat charts of constants
    by_cell = {c.data.tags["cell_id"]: c for c in children}
    for row in rows:
        child = by_cell[row.cell_id]
        sizes = {k: str(v) for k, v in row.metrics.items() if SIZE.search(k) and k != "verification_different_pairs"}
        assert sizes and {k: child.data.params[k] for k in sizes} == sizes  # the evaluation's counts, as the row says
        assert child.data.params["distance"] == row.metrics["distance"] and child.data.params["verification_pair_rule"] == row.metrics["verification_pair_rule"]
        scores = {k for k, v in row.metrics.items() if isinstance(v, float) and math.isfinite(v) and not k.endswith(("_threshold", "stderr"))}
        assert scores <= set(child.data.metrics), scores - set(child.data.metrics)
    for parent in parents:
        assert {"few_shot_classes", "verification_pairs", "backbone", "loss", "model.freeze"} <= set(parent.data.params)
        assert {"still_improving", "steps_range", "curve_means", "few_shot_classes"}.isdisjoint(parent.data.tags)


def test_the_leaderboards_marks_become_numbers():
    """Each line's still-improving verdict as 0/1, its steps range as min and max, its mean learning curve at its seeds'
    mean steps under the children's key, and no metric that is not a finite number, on a grid that has both verdicts."""
    rows = read_rows(SEED)
    metric = "few_shot_20way_1shot_accuracy"
    frame, line_rows = ranked(rows, metric)
    by_cells = {frozenset(r.cell_id for r in seeds): line for (_, line), seeds in zip(frame.iterrows(), line_rows)}
    verdicts = set()
    for parent in (p for p in plan(rows, metric) if p.kind == "line"):
        line = by_cells[frozenset(parent.cells)]
        said = {"yes": 1.0, "no": 0.0}.get(line["still_improving"].split()[0])
        assert parent.metrics.get(f"{metric}/still_improving") == said
        verdicts.add(said)
        assert f"{parent.metrics['train/steps_min']:.0f}" in line["steps_range"] and f"{parent.metrics['train/steps_max']:.0f}" in line["steps_range"]
        means = json.loads(line["curve_means"])
        assert [v for _, v, _, _ in parent.curve] == pytest.approx([means[f][0] for f in sorted(means, key=float)])
        assert all(k == f"curve/val/{metric}" for k, *_ in parent.curve) and [s for *_, s, _ in parent.curve] == sorted(s for *_, s, _ in parent.curve)
        assert all(math.isfinite(v) for v in parent.metrics.values())
    assert verdicts >= {0.0, 1.0}


def test_another_sort_metric_replaces_the_parents_and_keeps_the_children(store, tmp_path):
    """The parents' figures about the old metric cannot be deleted from a run, so those parents are replaced (no stale
    figure, no NaN); the children are kept and gain the new metric's curve."""
    path = write(tmp_path / "resort.jsonl", read_rows(QUICK)[:6])
    assert export(store, "resort", path, extra=["--metric", "verification_roc_auc"]) == 0
    before_parents, before = runs(store, "resort")
    assert export(store, "resort", path, extra=["--metric", "recall_at_1"]) == 0
    parents, children = runs(store, "resort")
    assert {c.info.run_id for c in children} == {c.info.run_id for c in before}
    figured = {p.info.run_id for p in before_parents if any(k.startswith("verification_roc_auc/") for k in p.data.metrics)}
    assert figured and not figured & {p.info.run_id for p in parents} and len(parents) == len(before_parents)  # those replaced
    assert {c.data.tags["mlflow.parentRunId"] for c in children} <= {p.info.run_id for p in parents}
    assert not [k for p in parents for k in p.data.metrics if k.startswith("verification_roc_auc/")]
    curved = {r.cell_id for r in read_rows(path) if r.curve}
    assert curved and all("curve/val/recall_at_1" in c.data.metrics for c in children if c.data.tags["cell_id"] in curved)
    assert MlflowClient(store).get_experiment_by_name("resort").tags["bench.sort_metric"] == "recall_at_1"


def test_a_grown_file_adds_only_its_new_cells(store, tmp_path):
    rows = read_rows(QUICK)[:6]
    path = write(tmp_path / "grown.jsonl", rows[:3])
    assert export(store, "grown", path) == 0
    first = {c.data.tags["cell_id"]: c.info.run_id for c in runs(store, "grown")[1]}
    write(path, rows)
    assert export(store, "grown", path) == 0
    now = {c.data.tags["cell_id"]: c.info.run_id for c in runs(store, "grown")[1]}
    assert len(now) == 6 and {k: now[k] for k in first} == first


def test_a_rerun_row_replaces_its_cells_run(store, tmp_path):
    rows = read_rows(QUICK)[:4]
    path = write(tmp_path / "rerun.jsonl", rows)
    assert export(store, "rerun", path) == 0
    rerun = rows[0].with_(finished_at="2099-01-01T00:00:00+00:00", metrics={**rows[0].metrics, "verification_roc_auc": 0.123})
    write(path, rows + [rerun])
    assert export(store, "rerun", path) == 0
    parents, children = runs(store, "rerun")
    mine = [c for c in children if c.data.tags["cell_id"] == rerun.cell_id]
    assert len(children) == 4 and len(mine) == 1
    assert mine[0].data.metrics["verification_roc_auc"] == 0.123
    assert (
        json.loads(Path(MlflowClient(store).download_artifacts(mine[0].info.run_id, "row.json", str(tmp_path))).read_text())["finished_at"] == rerun.finished_at
    )
    frame, line_rows = ranked(rows[1:] + [rerun], "verification_roc_auc")
    line = next(i for i, seeds in enumerate(line_rows) if rerun.cell_id in {r.cell_id for r in seeds})
    parent = next(p for p in parents if p.info.run_id == mine[0].data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["verification_roc_auc"] == pytest.approx(frame.iloc[line]["verification_roc_auc_mean"])


def test_failed_and_trial_rows_are_exported_with_their_status(store, tmp_path):
    good = read_rows(QUICK)[0]
    failed = good.with_(metrics=None, train=None, curve=None, roc=None)
    failed = failed.with_(cell_id="f" * 16, status="error", error="RuntimeError: boom", config={**good.config, "seed": 99})
    search = read_rows(SEARCH)
    trials = [r for r in search if r.config.get("trial")]
    study = trials[0].search.study
    pruned = next(r for r in trials if r.status == "pruned" and r.search.study == study)
    path = write(tmp_path / "mixed.jsonl", [good, failed, trials[0], pruned])
    assert export(store, "mixed", path) == 0
    parents, children = runs(store, "mixed")
    by_cell = {c.data.tags["cell_id"]: c for c in children}
    assert len(children) == 4
    assert by_cell[failed.cell_id].info.status == "FAILED" and by_cell[failed.cell_id].data.tags["status"] == "error"
    assert by_cell[failed.cell_id].data.tags["error"] == "RuntimeError: boom"
    assert by_cell[pruned.cell_id].info.status == "KILLED" and by_cell[pruned.cell_id].data.tags["status"] == "pruned"
    assert by_cell[pruned.cell_id].data.params["train.lr"] == json.dumps(pruned.config["train"]["lr"])  # the option the study searched
    (study_run,) = [p for p in parents if p.data.tags["bench.kind"] == "study"]
    assert study_run.data.tags["study"] == study and study_run.data.metrics["trials"] == 2 and study_run.data.metrics["trials_pruned"] == 1
    assert {by_cell[r.cell_id].data.tags["mlflow.parentRunId"] for r in (trials[0], pruned)} == {study_run.info.run_id}
    line = by_cell[good.cell_id].data.tags["mlflow.parentRunId"]  # a failed seed stays under its configuration's line
    assert by_cell[failed.cell_id].data.tags["mlflow.parentRunId"] == line


def test_bad_inputs_are_one_line_errors_and_create_no_store(tmp_path, capsys):
    path = copy_rows(QUICK, tmp_path / "q.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "a_file").write_text("")
    assert main(["export", "mlflow", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["export", "mlflow"]) == 2 and main(["export", "mlflow", "--check"]) == 2  # nothing to export, no store to check
    assert main(["export", "mlflow", str(tmp_path / "empty.jsonl")]) == 2
    assert main(["export", "mlflow", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/a_file/mlflow.db"]) == 2
    assert main(["export", "mlflow", str(path), "--metric", "recall_at_99"]) == 2
    assert main(["export", "mlflow", str(path), "--tracking-uri", "results/somewhere"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["export", "mlflow", str(path), "--artifacts", "symlink"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "give the results files" in err and "--check: give the store" in err
    assert "missing.jsonl" in err and "no result rows" in err and "a_file" in err and "recall_at_99" in err
    assert all(line.startswith(("error:", " ")) for line in err.splitlines() if line.strip())
    assert not list(tmp_path.glob("**/mlflow.db")) and not (tmp_path / "mlruns").exists()


def test_a_store_that_cannot_answer_fails_fast_in_one_line(tmp_path, monkeypatch, capsys):
    """Nothing listening, a server that never answers (MLflow's client would retry for minutes) and a scheme MLflow
    does not read: each one line, exit 2, before any run is logged; `bench run --mlflow` stops before training."""
    import socket

    from bench.export import mlflow_access as tracking

    path = copy_rows(QUICK, tmp_path / "q.jsonl")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    monkeypatch.setattr(tracking, "PROBE_SECONDS", 0.5)
    try:
        for uri, said in (
            (refused, "no MLflow server answered within 0.5 s"),
            (f"http://127.0.0.1:{silent.getsockname()[1]}", "no MLflow server answered"),
            ("foo://bar", "'foo' is not a tracking store MLflow reads"),
        ):
            assert main(["export", "mlflow", str(path), "--tracking-uri", uri]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and said in err, err
        (tmp_path / "g.toml").write_text(GRID)
        results = tmp_path / "out" / "g.jsonl"
        assert main(["run", "--grid", str(tmp_path / "g.toml"), "--results", str(results), "--mlflow", refused]) == 2
        assert "no MLflow server answered" in capsys.readouterr().err and not results.exists()
    finally:
        silent.close()


def test_without_mlflow_export_and_run_fail_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    path = copy_rows(QUICK, tmp_path / "q.jsonl")
    assert main(["export", "mlflow", str(path)]) == 2
    (tmp_path / "g.toml").write_text(GRID)
    results = tmp_path / "out" / "g.jsonl"
    assert main(["run", "--grid", str(tmp_path / "g.toml"), "--results", str(results), "--mlflow"]) == 2
    assert capsys.readouterr().err.count("pip install 'metric-bench[mlflow]'") == 2
    assert not results.exists() and not list(tmp_path.glob("**/mlflow.db"))


GRID = """
name = "g"
[budget]
max_steps = 2
[train]
batch_size = 12
[eval]
episodes = 20
n_way = 3
curve = [0.5, 1.0]
[axes]
backbone = ["koch"]
loss = ["triplet"]
[backbone.koch]
image_size = 65
embed_dim = 16
"""


def test_run_logs_each_cell_as_its_row_is_written(store, tmp_path):
    (tmp_path / "g.toml").write_text(GRID)
    results = tmp_path / "tracked.jsonl"
    assert main(["run", "--grid", str(tmp_path / "g.toml"), "--results", str(results), "--device", "cpu", "--mlflow", store]) == 0
    (row,) = read_rows(results)
    (parent,), (child,) = runs(store, "tracked")  # the experiment is the results file's stem
    assert (row.env.git_commit is None) == (row.env.git_dirty is None)  # recorded at run time (None outside a git checkout)
    assert child.data.tags.get("mlflow.source.git.commit") == row.env.git_commit == parent.data.tags.get("mlflow.source.git.commit")
    assert child.data.tags["cell_id"] == row.cell_id and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics["verification_roc_auc"] == row.metrics["verification_roc_auc"]
    assert parent.data.metrics["verification_roc_auc"] == row.metrics["verification_roc_auc"]  # refreshed at the end
    assert parent.data.tags["vs_best"]
    assert export(store, "tracked", results) == 0 and len(runs(store, "tracked")[1]) == 1  # `bench export` finds the same runs


def test_a_line_split_by_speed_environment_moves_its_cells_and_drops_the_empty_parent(store, tmp_path):
    first = read_rows(QUICK)[0]
    seeds = [r for r in read_rows(QUICK) if configuration(r) == configuration(first)][:2]
    seeds = [r.with_(train=replace(r.train, stopped_by="max_seconds"), env=replace(r.env, cpu_model=cpu)) for r, cpu in zip(seeds, ("cpu A", "cpu B"))]
    path = write(tmp_path / "split.jsonl", seeds[:1])
    assert export(store, "split", path) == 0
    ((before,), _) = runs(store, "split")
    write(path, seeds)  # the same configuration on another machine, both stopped by the clock: two lines now
    assert export(store, "split", path) == 0
    parents, children = runs(store, "split")
    assert len(parents) == 2 and before.info.run_id not in {p.info.run_id for p in parents}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}
    assert sorted(p.data.tags["speed_env"] for p in parents) == sorted(ranked(seeds, "verification_roc_auc")[0]["speed_env"])

"""`bench export mlflow` and `bench run --mlflow` against a real SQLite MLflow store, read back with MLflow's own
client: one parent per leaderboard line (agreeing with the leaderboard), one child per cell with its metrics and
learning curve, idempotent exports, a rerun row replacing its run, failed and trial rows kept, and the bad inputs."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="needs the `mlflow` extra (in the test extra)")
from mlflow import MlflowClient  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.report.leaderboard import ranked  # noqa: E402
from bench.report.lines import configuration  # noqa: E402
from bench.results import read_rows  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "results"
QUICK = RESULTS / "seed_question_quick.jsonl"  # 15 ok rows with learning curves, 8 lines
SEARCH = RESULTS / "search.jsonl"  # trials (ok and pruned) of 3 studies, and their finals
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # inside MLflow's SQL store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds); each test has its own experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder}/mlflow.db"


def export(store: str, experiment: str, *files, extra=()) -> int:
    return main(["export", "mlflow", *map(str, files), "--tracking-uri", store, "--experiment", experiment, *extra])


def runs(store: str, experiment: str) -> tuple[list, list]:
    """(parents, children) of the experiment's active runs."""
    client = MlflowClient(store)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return [r for r in found if r.data.tags.get("bench.kind") != "cell"], [r for r in found if r.data.tags.get("bench.kind") == "cell"]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def quick(store, tmp_path_factory):
    path = tmp_path_factory.mktemp("quick") / QUICK.name
    shutil.copy(QUICK, path)
    assert export(store, "quick", path) == 0
    return path, read_rows(path)


def test_one_child_per_cell_under_one_parent_per_leaderboard_line(store, quick):
    _, rows = quick
    parents, children = runs(store, "quick")
    frame, line_rows = ranked(rows, "verification_roc_auc")
    assert len(children) == len(rows) == 15 and len(parents) == len(frame) == 8
    by_cell = {c.data.tags["cell_id"]: c for c in children}
    by_id = {p.info.run_id: p for p in parents}
    for (_, line), seeds in zip(frame.iterrows(), line_rows):  # each line's seeds share the parent that carries its marks
        parent = by_id[by_cell[seeds[0]["cell_id"]].data.tags["mlflow.parentRunId"]]
        assert {by_cell[r["cell_id"]].data.tags["mlflow.parentRunId"] for r in seeds} == {parent.info.run_id}
        assert parent.data.metrics["verification_roc_auc"] == pytest.approx(line["verification_roc_auc_mean"])  # the children's key
        if not math.isnan(line["vs_best_p"]):
            assert parent.data.metrics["verification_roc_auc/vs_best_p"] == pytest.approx(line["vs_best_p"])  # named after its metric
        if not math.isnan(line["verification_roc_auc_std"]):
            assert parent.data.metrics["verification_roc_auc_std"] == pytest.approx(line["verification_roc_auc_std"])
        assert parent.data.tags["vs_best"] == line["vs_best"] and parent.data.tags["comparison_group"] == line["group"]
        assert parent.data.tags["still_improving"] == line["still_improving"]


def test_runs_have_short_unique_names_and_parents_span_their_cells(store, quick):
    _, rows = quick
    parents, children = runs(store, "quick")
    names = [p.info.run_name for p in parents]
    assert len(set(names)) == len(names) and max(map(len, names)) <= 40  # the options that tell lines apart, abbreviated
    assert "lite0 · triplet · frozen" in names and "koch · untrained" in names and "lite0 · triplet · frozen (BN train)" in names
    assert len({c.info.run_name for c in children}) == len(children)  # a child adds its seed
    for parent in parents:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        seeds = {r["cell_id"]: r["config"]["seed"] for r in rows}
        assert {c.info.run_name for c in mine} == {f"{parent.info.run_name} · seed {seeds[c.data.tags['cell_id']]}" for c in mine}
        # a parent runs from its first cell's start to its last cell's end, like a run
        assert parent.info.start_time == min(c.info.start_time for c in mine) and parent.info.end_time == max(c.info.end_time for c in mine)
        assert parent.data.tags["mlflow.source.name"] == f"grid {rows[0]['grid']}"


def test_a_child_holds_its_rows_metrics_params_tags_and_curve(store, quick):
    _, rows = quick
    _, children = runs(store, "quick")
    row = next(r for r in rows if r.get("curve"))
    child = next(c for c in children if c.data.tags["cell_id"] == row["cell_id"])
    assert child.info.status == "FINISHED" and child.data.tags["status"] == "ok"
    assert child.data.tags["finished_at"] == row["finished_at"] and child.data.tags["precision"] == row["precision"]
    assert child.data.tags["env.device"] == row["env"]["device"] and child.data.tags["stopped_by"] == row["train"]["stopped_by"]
    assert child.data.metrics["verification_roc_auc"] == row["metrics"]["verification_roc_auc"]
    assert child.data.metrics["train/steps"] == row["train"]["steps"]
    assert child.data.params["train.lr"] == json.dumps(row["config"]["train"]["lr"]) and child.data.params["backbone"] == row["config"]["backbone"]
    history = MlflowClient(store).get_metric_history(child.info.run_id, "curve/val/verification_roc_auc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(p["steps"], p["metrics"]["verification_roc_auc"]) for p in row["curve"]]


def test_exporting_again_adds_nothing(store, quick):
    path, _ = quick
    before = {r.info.run_id for r in sum(runs(store, "quick"), [])}
    assert export(store, "quick", path) == 0
    assert {r.info.run_id for r in sum(runs(store, "quick"), [])} == before


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
    rerun = {**rows[0], "finished_at": "2099-01-01T00:00:00+00:00", "metrics": {**rows[0]["metrics"], "verification_roc_auc": 0.123}}
    write(path, rows + [rerun])
    assert export(store, "rerun", path) == 0
    parents, children = runs(store, "rerun")
    mine = [c for c in children if c.data.tags["cell_id"] == rerun["cell_id"]]
    assert len(children) == 4 and len(mine) == 1
    assert mine[0].data.metrics["verification_roc_auc"] == 0.123 and mine[0].data.tags["finished_at"] == rerun["finished_at"]
    frame, line_rows = ranked(rows[1:] + [rerun], "verification_roc_auc")
    line = next(i for i, seeds in enumerate(line_rows) if rerun["cell_id"] in {r["cell_id"] for r in seeds})
    parent = next(p for p in parents if p.info.run_id == mine[0].data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["verification_roc_auc"] == pytest.approx(frame.iloc[line]["verification_roc_auc_mean"])


def test_failed_and_trial_rows_are_exported_with_their_status(store, tmp_path):
    good = read_rows(QUICK)[0]
    failed = {k: v for k, v in good.items() if k not in ("metrics", "train", "curve", "roc")}
    failed |= {"cell_id": "f" * 16, "status": "error", "error": "RuntimeError: boom", "config": {**good["config"], "seed": 99}}
    search = read_rows(SEARCH)
    trials = [r for r in search if r["config"].get("trial")]
    study = trials[0]["search"]["study"]
    pruned = next(r for r in trials if r["status"] == "pruned" and r["search"]["study"] == study)
    path = write(tmp_path / "mixed.jsonl", [good, failed, trials[0], pruned])
    assert export(store, "mixed", path) == 0
    parents, children = runs(store, "mixed")
    by_cell = {c.data.tags["cell_id"]: c for c in children}
    assert len(children) == 4
    assert by_cell[failed["cell_id"]].info.status == "FAILED" and by_cell[failed["cell_id"]].data.tags["status"] == "error"
    assert by_cell[failed["cell_id"]].data.tags["error"] == "RuntimeError: boom"
    assert by_cell[pruned["cell_id"]].info.status == "KILLED" and by_cell[pruned["cell_id"]].data.tags["status"] == "pruned"
    (study_run,) = [p for p in parents if p.data.tags["bench.kind"] == "study"]
    assert study_run.data.tags["study"] == study and study_run.data.metrics["trials"] == 2 and study_run.data.metrics["trials_pruned"] == 1
    assert {by_cell[r["cell_id"]].data.tags["mlflow.parentRunId"] for r in (trials[0], pruned)} == {study_run.info.run_id}
    line = by_cell[good["cell_id"]].data.tags["mlflow.parentRunId"]  # a failed seed stays under its configuration's line
    assert by_cell[failed["cell_id"]].data.tags["mlflow.parentRunId"] == line


def test_checkpoints_and_plots_are_linked_or_copied(store, tmp_path):
    row = {**read_rows(QUICK)[0], "checkpoint": {"path": "art_checkpoints/c1", "weights_from": "last", "sha256": "0"}}
    (tmp_path / "art_checkpoints" / "c1").mkdir(parents=True)
    (tmp_path / "art_checkpoints" / "c1" / "checkpoint.json").write_text("{}")
    (tmp_path / "art_plots").mkdir()
    (tmp_path / "art_plots" / "leaderboard.png").write_bytes(b"png")
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    path = write(tmp_path / "art.jsonl", [row])
    assert export(store, "linked", path) == 0 and export(store, "copied", path, extra=["--artifacts", "copy"]) == 0
    (parent,), (child,) = runs(store, "linked")
    assert child.data.tags["checkpoint"] == str((tmp_path / "art_checkpoints" / "c1").resolve())
    assert parent.data.tags["plots"] == str((tmp_path / "art_plots").resolve())
    assert child.data.tags["mlflow.source.git.commit"] == parent.data.tags["mlflow.source.git.commit"] == head
    client = MlflowClient(store)
    (parent,), (child,) = runs(store, "copied")
    assert [a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.json"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "plots")] == ["plots/leaderboard.png"]


def test_bad_inputs_are_one_line_errors_and_create_no_store(tmp_path, capsys):
    path = shutil.copy(QUICK, tmp_path / "q.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "a_file").write_text("")
    assert main(["export", "mlflow", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["export", "mlflow", str(tmp_path / "empty.jsonl")]) == 2
    assert main(["export", "mlflow", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/a_file/mlflow.db"]) == 2
    assert main(["export", "mlflow", str(path), "--metric", "recall_at_99"]) == 2
    assert main(["export", "mlflow", str(path), "--tracking-uri", "results/somewhere"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["export", "mlflow", str(path), "--artifacts", "symlink"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and "no result rows" in err and "a_file" in err and "recall_at_99" in err
    assert all(line.startswith(("error:", " ")) for line in err.splitlines() if line.strip())
    assert not list(tmp_path.glob("**/mlflow.db")) and not (tmp_path / "mlruns").exists()


def test_a_store_that_cannot_answer_fails_fast_in_one_line(tmp_path, monkeypatch, capsys):
    """Nothing listening, a server that never answers (MLflow's client would retry for minutes) and a scheme MLflow
    does not read: each one line, exit 2, before any run is logged; `bench run --mlflow` stops before training."""
    import socket

    from bench.report import mlflow as tracking

    path = shutil.copy(QUICK, tmp_path / "q.jsonl")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    monkeypatch.setattr(tracking, "PROBE_SECONDS", 0.5)
    try:
        for uri, said in ((refused, "no MLflow server answered within 0.5 s"), (f"http://127.0.0.1:{silent.getsockname()[1]}", "no MLflow server answered"),
                          ("foo://bar", "'foo' is not a tracking store MLflow reads")):
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
    path = shutil.copy(QUICK, tmp_path / "q.jsonl")
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
    assert child.data.tags["cell_id"] == row["cell_id"] and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics["verification_roc_auc"] == row["metrics"]["verification_roc_auc"]
    assert parent.data.metrics["verification_roc_auc"] == row["metrics"]["verification_roc_auc"]  # refreshed at the end
    assert parent.data.tags["vs_best"]
    assert export(store, "tracked", results) == 0 and len(runs(store, "tracked")[1]) == 1  # `bench export` finds the same runs


def test_a_line_split_by_speed_environment_moves_its_cells_and_drops_the_empty_parent(store, tmp_path):
    first = read_rows(QUICK)[0]
    seeds = [r for r in read_rows(QUICK) if configuration(r) == configuration(first)][:2]
    seeds = [{**r, "train": {**r["train"], "stopped_by": "max_seconds"}, "env": {**r["env"], "cpu_model": cpu}}
             for r, cpu in zip(seeds, ("cpu A", "cpu B"))]
    path = write(tmp_path / "split.jsonl", seeds[:1])
    assert export(store, "split", path) == 0
    ((before,), _) = runs(store, "split")
    write(path, seeds)  # the same configuration on another machine, both stopped by the clock: two lines now
    assert export(store, "split", path) == 0
    parents, children = runs(store, "split")
    assert len(parents) == 2 and before.info.run_id not in {p.info.run_id for p in parents}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}
    assert sorted(p.data.tags["speed_env"] for p in parents) == sorted(ranked(seeds, "verification_roc_auc")[0]["speed_env"])

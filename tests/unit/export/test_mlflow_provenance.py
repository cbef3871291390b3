"""What an MLflow export says about where its runs came from, read back with MLflow's own client: each cell's config,
row and (when asked) checkpoint and each line's plots in the store's artifacts, the git commit each row was made at
(never the one checked out at export time), and which MLflow reads the store (`--check`, and one-line errors for a
store of another schema)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from paths import ROOT

mlflow = pytest.importorskip("mlflow", reason="needs the `mlflow` extra (in the test extra)")
from mlflow import MlflowClient  # noqa: E402
from mlflow_runs import QUICK, export, raw_rows, runs, write  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.run import rows as run_rows  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # inside MLflow's SQL store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def artifacts(store: str, run, path: str | None = None) -> list[str]:
    return sorted(a.path for a in MlflowClient(store).list_artifacts(run.info.run_id, path))


def test_each_mode_logs_links_or_leaves_the_artifacts(store, tmp_path):
    row = {k: v for k, v in raw_rows(QUICK)[0].items() if k != "items"}  # a row without items: its artifacts are config and row
    row["checkpoint"] = {"path": "art_checkpoints/c1", "weights_from": "last", "sha256": "0"}
    (tmp_path / "art_checkpoints" / "c1").mkdir(parents=True)
    (tmp_path / "art_checkpoints" / "c1" / "checkpoint.json").write_text("{}")
    (tmp_path / "art_plots").mkdir()
    (tmp_path / "art_plots" / "leaderboard.png").write_bytes(b"png")
    path = write(tmp_path / "art.jsonl", [row])
    for mode in ("log", "copy", "link", "none"):
        assert export(store, mode, path, extra=[] if mode == "log" else ["--artifacts", mode]) == 0
    checkpoint, plots = str((tmp_path / "art_checkpoints" / "c1").resolve()), str((tmp_path / "art_plots").resolve())

    (parent,), (child,) = runs(store, "log")  # the default: config, row, plots and line into the store; the checkpoint linked
    assert artifacts(store, child) == ["config.json", "row.json"] and child.data.tags["checkpoint"] == checkpoint
    folder = tmp_path / "down"
    client = MlflowClient(store)
    assert json.loads(Path(client.download_artifacts(child.info.run_id, "config.json", str(folder))).read_text()) == row["config"]
    assert json.loads(Path(client.download_artifacts(child.info.run_id, "row.json", str(folder))).read_text()) == row
    assert artifacts(store, parent) == ["line.json", "plots"] and artifacts(store, parent, "plots") == ["plots/leaderboard.png"]
    line = json.loads(Path(client.download_artifacts(parent.info.run_id, "line.json", str(folder))).read_text())
    assert line["vs_best"] == parent.data.tags["vs_best"] and "vs_best_test" in line  # every mark, those not logged too

    (parent,), (child,) = runs(store, "copy")
    assert artifacts(store, child) == ["checkpoint", "config.json", "row.json"] and artifacts(store, child, "checkpoint") == ["checkpoint/checkpoint.json"]
    assert artifacts(store, parent, "plots") == ["plots/leaderboard.png"]
    (parent,), (child,) = runs(store, "link")  # paths only
    assert artifacts(store, child) == artifacts(store, parent) == [] and child.data.tags["checkpoint"] == checkpoint and parent.data.tags["plots"] == plots
    (parent,), (child,) = runs(store, "none")
    assert artifacts(store, child) == artifacts(store, parent) == [] and "checkpoint" not in child.data.tags and "plots" not in parent.data.tags


def test_the_plots_go_once_to_the_best_line_of_their_group(store, tmp_path):
    """Every line's parent holds line.json; only its group's best line holds the group's figures (not one copy per
    line). When another line becomes the best, the former best's run, whose plots no longer apply, is replaced."""
    quick = raw_rows(QUICK)
    one, other = quick[0], next(r for r in quick if r["config"]["loss"] != quick[0]["config"]["loss"])
    (tmp_path / "best_plots").mkdir()
    (tmp_path / "best_plots" / "roc.png").write_bytes(b"png")
    metric = "verification_roc_auc"
    rows = [{**one, "metrics": {**one["metrics"], metric: 0.9}}, {**other, "metrics": {**other["metrics"], metric: 0.6}}]
    path = write(tmp_path / "best.jsonl", rows)
    assert export(store, "best", path, extra=["--metric", metric]) == 0
    parents, _ = runs(store, "best")
    holding = [p for p in parents if artifacts(store, p) == ["line.json", "plots"]]
    assert len(parents) == 2 and len(holding) == 1 and holding[0].data.metrics[metric] == 0.9
    assert [artifacts(store, p) for p in parents if p is not holding[0]] == [["line.json"]]
    rows[1] = {**rows[1], "finished_at": "2099-01-01T00:00:00+00:00", "metrics": {**other["metrics"], metric: 0.95}}  # a rerun beats it
    write(path, rows)
    assert export(store, "best", path, extra=["--metric", metric]) == 0
    parents, _ = runs(store, "best")
    (now,) = [p for p in parents if artifacts(store, p) == ["line.json", "plots"]]
    assert now.data.metrics[metric] == 0.95 and holding[0].info.run_id not in {p.info.run_id for p in parents}
    assert [artifacts(store, p) for p in parents if p is not now] == [["line.json"]]


def test_runs_carry_the_commit_their_rows_were_made_at_never_the_checked_out_one(store, tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    quick = raw_rows(QUICK)
    made = [
        {**r, "env": {**r["env"], "git_commit": "a" * 40, "git_dirty": True}}
        for r in quick
        if r["config"] == quick[0]["config"] | {"seed": r["config"]["seed"]}
    ]
    other = next(r for r in quick if r["config"]["backbone"] != quick[0]["config"]["backbone"])
    env = {k: v for k, v in other["env"].items() if k not in ("git_commit", "git_dirty")}
    old = {**other, "env": env}  # a row from before commits were recorded
    path = write(tmp_path / "made.jsonl", made + [old])  # the results file sits in a checkout at another commit
    assert len(made) == 2 and export(store, "made", path) == 0
    parents, children = runs(store, "made")
    by_cell = {c.data.tags["cell_id"]: c for c in children}
    for row in made:
        assert by_cell[row["cell_id"]].data.tags["mlflow.source.git.commit"] == "a" * 40 and by_cell[row["cell_id"]].data.tags["env.git_dirty"] == "true"
    assert "mlflow.source.git.commit" not in by_cell[old["cell_id"]].data.tags and "env.git_dirty" not in by_cell[old["cell_id"]].data.tags
    commits = {p.data.tags["mlflow.source.git.commit"] for p in parents if "mlflow.source.git.commit" in p.data.tags}
    assert commits == {"a" * 40} and head not in {v for r in parents + children for v in r.data.tags.values()}


def test_a_row_records_its_checkouts_commit_once_per_process(monkeypatch):
    state = run_rows.source_state()
    assert run_rows.environment(run_rows.torch.device("cpu"), "fp32") | state == run_rows.environment(run_rows.torch.device("cpu"), "fp32")
    if shutil.which("git") and (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "bench"], capture_output=True, text=True
            ).stdout.strip()
        )
        assert state == {"git_commit": head, "git_dirty": dirty}
    calls = []
    monkeypatch.setattr(run_rows.subprocess, "run", lambda *a, **k: calls.append(a) or subprocess.CompletedProcess(a, 128, "", "not a git repository"))
    assert run_rows.source_state.__wrapped__() == {"git_commit": None, "git_dirty": None} and calls  # no checkout: unknown, not a guess
    run_rows.source_state()
    assert len(calls) == 2  # the cached answer: git ran for the uncached call only

    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(run_rows.subprocess, "run", no_git)
    assert run_rows.source_state.__wrapped__() == {"git_commit": None, "git_dirty": None}


@pytest.fixture
def versioned(store, tmp_path):
    """The module's store, with a way to set its schema revision as another MLflow would have left it (put back after)."""
    db = Path(store[len("sqlite:///") :])
    path = write(tmp_path / "v.jsonl", raw_rows(QUICK)[:2])
    assert export(store, "v", path, extra=["--artifacts", "none"]) == 0

    def revision(value: str | None = None) -> str:
        with sqlite3.connect(db) as connection:
            if value:
                connection.execute("UPDATE alembic_version SET version_num = ?", (value,))
        _forget_stores()
        with sqlite3.connect(db) as connection:
            return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]

    head = revision()
    yield path, store, revision
    revision(head)


def _forget_stores() -> None:
    """MLflow opens (and checks) a store once per process; the CLI is one process per command, a test is not."""
    from mlflow.tracking._tracking_service import utils

    utils._tracking_store_registry._get_store_with_resolved_uri.cache_clear()


def test_the_store_records_its_writer_and_check_names_the_mlflow_that_reads_it(versioned, capsys):
    path, uri, revision = versioned
    experiment = MlflowClient(uri).get_experiment_by_name("v")
    assert experiment.tags["bench.mlflow_version"] == mlflow.__version__
    capsys.readouterr()
    assert main(["export", "mlflow", "--check", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert revision() in out and f"mlflow-skinny {mlflow.__version__}" in out and f"pip install 'mlflow>={mlflow.__version__}'" in out


def test_a_store_of_another_schema_is_one_line_naming_the_install(versioned, capsys):
    """MLflow's own message calls any other schema "out-of-date" and asks for `mlflow db upgrade`, which an mlflow older
    than the store cannot do: say which side is older and what to install."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    path, uri, revision = versioned
    head = revision()
    older = ScriptDirectory.from_config(_get_alembic_config(db_url="")).get_revision(head).down_revision
    capsys.readouterr()
    revision("0123456789ab")  # a revision a newer MLflow would have migrated it to
    assert main(["export", "mlflow", str(path), "--tracking-uri", uri, "--experiment", "v"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is newer than this mlflow-skinny" in line and "pip install -U mlflow-skinny" in line
    with sqlite3.connect(uri[len("sqlite:///") :]) as connection:  # a newer mlflow-skinny wrote it last
        connection.execute("UPDATE experiment_tags SET value = '99.1.0' WHERE key = 'bench.mlflow_version'")
    assert main(["export", "mlflow", "--check", "--tracking-uri", uri]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "written by mlflow-skinny 99.1.0" in line and "pip install -U 'mlflow-skinny>=99.1.0'" in line
    revision(older)  # a store an older MLflow made
    assert main(["export", "mlflow", str(path), "--tracking-uri", uri, "--experiment", "v"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is older than this mlflow-skinny" in line and f"mlflow db upgrade {uri}" in line and not re.search(r"Traceback", line)


def test_check_of_a_server_or_a_file_store_says_there_is_no_schema_to_compare(tmp_path, capsys):
    import http.server
    import threading

    class Server(http.server.BaseHTTPRequestHandler):  # MLflow's server answers /health and /version
        def do_GET(self):
            body = {"/health": b"OK", "/version": b"3.99.0"}.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert main(["export", "mlflow", "--check", "--tracking-uri", f"http://127.0.0.1:{server.server_address[1]}"]) == 0
    finally:
        server.shutdown()
    assert main(["export", "mlflow", "--check", "--tracking-uri", (tmp_path / "runs").as_uri()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "an MLflow server, version 3.99.0" in out[0] and "has no database schema" in out[1] and not (tmp_path / "runs").exists()


def test_a_cells_items_file_with_its_roc_is_logged_beside_its_row(store, tmp_path):
    row = raw_rows(QUICK)[0]
    row = {**row, "cell_id": "withitems", "items": {**(row.get("items") or {}), "file": "it_items/withitems.npz"}}
    (tmp_path / "it_items").mkdir()
    (tmp_path / "it_items" / "withitems.npz").write_bytes(b"npz")
    path = write(tmp_path / "it.jsonl", [row])
    assert export(store, "items", path) == 0
    (_,), (child,) = runs(store, "items")
    assert artifacts(store, child) == ["config.json", "row.json", "withitems.npz"]

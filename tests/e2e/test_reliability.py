"""Failures are recorded not fatal, --rerun, hard timeouts, isolation, reproducibility, kill -9 resume, exit codes
and full disks."""

import contextlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from processes import complete_rows, kill_when, launch, run_bench

from bench.cli import main
from bench.run.job import Job

FAULTY = """
import gc, multiprocessing.connection, os, signal, time, torch
from torch import nn
from bench.plugins import BACKBONES, LOSSES, InputSpec

class Faulty(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode, self.embed_dim = mode, 8
        self.input_spec = InputSpec((8, 8), 1, (0.0,), (1.0,))
        self.fc = nn.Linear(64, 8)
    def forward(self, x):
        if self.mode == "raise":
            raise RuntimeError("plugin bug")
        if self.mode == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        if self.mode == "hang":
            time.sleep(600)
        if self.mode == "exit":  # the pipe to the parent closes first and the process lingers, as in a slow teardown
            for obj in gc.get_objects():
                if isinstance(obj, multiprocessing.connection.Connection):
                    obj.close()
            time.sleep(2)
            os._exit(3)
        if self.mode == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        return self.fc(x.flatten(1))

@BACKBONES.register("faulty")
def faulty(mode: str = "ok"):
    return Faulty(mode)

class NanLoss(nn.Module):
    batch, distance = "m_per_class", "euclidean"
    def forward(self, e, labels):
        return e.sum() * float("nan")

@LOSSES.register("nan_loss")
def nan_loss(embed_dim: int):
    return NanLoss()
"""

GRID = """
name = "faults"
[budget]
max_steps = 2
[train]
batch_size = 16
[axes]
backbone = ["faulty"]
loss = ["triplet"]
"backbone.mode" = {modes}
"""


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "faulty_plugin.py").write_text(FAULTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("faulty_plugin", None)


def rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def faulty_run(plugin_dir: Path, name: str, modes: str, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`bench run` of the faulty plugin's cells (one per mode) in a fresh process; its result and rows."""
    (plugin_dir / f"{name}.toml").write_text(GRID.format(modes=modes).replace('"faults"', f'"{name}"'))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--plugin", "faulty_plugin", "--grid", f"{name}.toml", *args],
        cwd=plugin_dir,
        env={**os.environ, "PYTHONPATH": str(plugin_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = plugin_dir / "results" / f"{name}.jsonl"
    return proc, rows(results) if results.exists() else []


def test_failures_are_recorded_and_the_grid_goes_on(plugin_dir):
    from bench.plugins import BACKBONES

    if "faulty" not in BACKBONES:  # the module registers once per interpreter
        import faulty_plugin  # noqa: F401
    (plugin_dir / "g.toml").write_text(GRID.format(modes='["raise", "oom", "ok"]'))
    assert main(["run", "--grid", "g.toml", "--cell-timeout", "120"]) == 1  # every cell ran; a failed one makes the exit code 1
    got = {r["config"]["backbone_args"]["mode"]: r for r in rows(plugin_dir / "results" / "faults.jsonl")}
    assert got["raise"]["status"] == "error" and "plugin bug" in got["raise"]["error"]
    assert got["oom"]["status"] == "oom" and "out of memory" in got["oom"]["error"]
    assert got["ok"]["status"] == "ok"

    # a timeout in-process: the limit is checked at every step
    (plugin_dir / "t.toml").write_text(GRID.replace("max_steps = 2", "max_steps = 100000").format(modes='["ok"]').replace('"faults"', '"slow"'))
    assert main(["run", "--grid", "t.toml", "--cell-timeout", "0.5"]) == 1
    (row,) = rows(plugin_dir / "results" / "slow.jsonl")
    assert row["status"] == "timeout" and "--cell-timeout" in row["error"]

    # --rerun failed reruns exactly the failed cells (appending rows that supersede), default skips all
    before = len(rows(plugin_dir / "results" / "faults.jsonl"))
    assert main(["run", "--grid", "g.toml"]) == 1  # the exit code is the grid's state: its failed rows still stand
    assert len(rows(plugin_dir / "results" / "faults.jsonl")) == before
    assert main(["run", "--grid", "g.toml", "--rerun", "failed"]) == 1
    after = rows(plugin_dir / "results" / "faults.jsonl")
    assert [r["config"]["backbone_args"]["mode"] for r in after[before:]] == ["raise", "oom"]
    assert main(["run", "--grid", "g.toml", "--rerun", "all"]) == 1
    assert len(rows(plugin_dir / "results" / "faults.jsonl")) == before + 2 + 3
    (plugin_dir / "ok.toml").write_text(GRID.format(modes='["ok"]').replace('"faults"', '"fine"'))
    assert main(["run", "--grid", "ok.toml"]) == 0


def test_nan_loss_is_recorded_as_diverged(plugin_dir):
    from bench.plugins import BACKBONES

    if "faulty" not in BACKBONES:
        import faulty_plugin  # noqa: F401
    (plugin_dir / "d.toml").write_text(GRID.format(modes='["ok"]').replace('["triplet"]', '["nan_loss"]').replace('"faults"', '"div"'))
    assert main(["run", "--grid", "d.toml"]) == 0  # diverged is a result of the configuration, not a failure
    (row,) = rows(plugin_dir / "results" / "div.jsonl")
    assert row["status"] == "diverged" and row["train"]["stopped_by"] == "diverged" and row["train"]["steps"] == 0


def test_isolated_hanging_cell_is_killed_at_the_hard_timeout(plugin_dir):
    # spawn, the torch import and the ok cell fit well inside the 10 s the hanging cell pays
    proc, got = faulty_run(plugin_dir, "hang", '["hang", "ok"]', "--isolate", "--cell-timeout", "10")
    assert proc.returncode == 1, proc.stderr
    got = {r["config"]["backbone_args"]["mode"]: r for r in got}
    assert got["hang"]["status"] == "timeout" and "killed" in got["hang"]["error"]
    assert got["ok"]["status"] == "ok"


def test_isolated_crashed_cell_is_an_error_naming_its_exit_code_or_signal(plugin_dir):
    proc, got = faulty_run(plugin_dir, "crash", '["exit", "sigkill"]', "--isolate", "--cell-timeout", "120")
    assert proc.returncode == 1, proc.stderr
    got = {r["config"]["backbone_args"]["mode"]: r for r in got}
    assert got["exit"]["status"] == "error" and "exited with code 3" in got["exit"]["error"]  # not a timeout
    assert got["sigkill"]["status"] == "error" and "killed by SIGKILL" in got["sigkill"]["error"]


def test_same_cell_and_seed_give_the_same_metrics_twice():
    import torch

    from bench.grid import parse_grid
    from bench.plugins import DATASETS
    from bench.run.rows import run_cell

    raw = {
        "budget": {"max_steps": 3},
        "train": {"batch_size": 16},
        "axes": {"backbone": ["conv4"], "loss": ["contrastive"]},
        "backbone": {"conv4": {"image_size": 16}},
    }
    (cell,) = parse_grid(raw, "r.toml").cells
    data = DATASETS.get("digits").factory()
    first = run_cell(cell, Job("r"), data, {}, torch.device("cpu"))
    second = run_cell(cell, Job("r"), data, {}, torch.device("cpu"))
    assert first["status"] == second["status"] == "ok"
    assert json.dumps(first["metrics"], sort_keys=True) == json.dumps(second["metrics"], sort_keys=True)  # NaN-safe
    assert first["train"]["final_loss"] == second["train"]["final_loss"]
    from bench.results import SCHEMA

    assert first["env"]["torch_threads"] >= 1 and first["schema"] == SCHEMA


def test_kill_9_at_several_points_then_resume_equals_an_uninterrupted_run(tmp_path, reference_run):
    (tmp_path / "grid.toml").write_text((reference_run / "grid.toml").read_text())
    ref = rows(reference_run / "ref.jsonl")
    cells = sorted(r["cell_id"] for r in ref)
    assert len(set(cells)) == 4
    path = tmp_path / "killed.jsonl"
    run = ("--grid", "grid.toml", "--results", "killed.jsonl", "--threads", "1")
    for n_rows, delay in [(0, 5.0), (1, 0.0), (2, 1.0)]:  # in cell 1's training; right after a row; mid-cell
        kill_when(launch(tmp_path, *run), path, n_rows, delay)
        assert complete_rows(path) < len(cells)  # the kill left cells to resume
    # a kill while a row is being written leaves a torn last line; make sure there is one (of a cell not done)
    assert ref[-1]["cell_id"] not in {r["cell_id"] for r in rows_ignoring_torn(path)}
    path.write_text(path.read_text() + json.dumps(ref[-1])[:100])
    finish = run_bench(tmp_path, *run)
    assert finish.returncode == 0, finish.stderr
    killed = rows_ignoring_torn(path)
    assert sorted(r["cell_id"] for r in killed) == cells  # each cell exactly once: nothing lost, nothing duplicated
    assert {r["cell_id"]: json.dumps(r["metrics"]) for r in killed} == {r["cell_id"]: json.dumps(r["metrics"]) for r in ref}
    assert (tmp_path / "killed.md").read_text().replace("killed", "ref") == (reference_run / "ref.md").read_text()


def rows_ignoring_torn(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


# --- exit codes: a script or CI job can tell that cells failed ------------------------------------------------


def test_an_all_failed_grid_runs_every_cell_writes_every_row_then_exits_1(plugin_dir):
    proc, got = faulty_run(plugin_dir, "allfail", '["raise", "oom"]')
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(r["status"] for r in got) == ["error", "oom"]
    assert "2 of 2 cells failed" in proc.stderr and "Traceback" not in proc.stderr
    assert (plugin_dir / "results" / "allfail.md").exists()  # the leaderboard is still written


SEARCH_GRID = """
name = "{name}"
[budget]
max_steps = 2
[train]
batch_size = 16
[split]
val_fraction = 0.2
[axes]
backbone = ["faulty"]
loss = ["triplet"]
[search]
trials = 4
sampler = "random"
"backbone.mode" = {{ choices = {modes} }}
"""


def test_a_search_exits_1_only_when_a_configuration_has_no_completed_trial(plugin_dir):
    pytest.importorskip("optuna")
    from bench.plugins import BACKBONES

    if "faulty" not in BACKBONES:
        import faulty_plugin  # noqa: F401
    (plugin_dir / "s.toml").write_text(SEARCH_GRID.format(name="some", modes='["raise", "ok"]'))
    assert main(["run", "--grid", "s.toml"]) == 0  # failed trials are part of the search: its finals ran
    got = rows(plugin_dir / "results" / "some.jsonl")
    assert {r["status"] for r in got if r["config"].get("trial")} == {"error", "ok"}
    assert [r["status"] for r in got if not r["config"].get("trial")] == ["ok"]
    (plugin_dir / "n.toml").write_text(SEARCH_GRID.format(name="none_ok", modes='["raise"]'))
    assert main(["run", "--grid", "n.toml"]) == 1  # the configuration has no result at all
    assert [r["status"] for r in rows(plugin_dir / "results" / "none_ok.jsonl")] == ["error"] * 4


# --- a full disk ---------------------------------------------------------------------------------------------

FROZEN_GRID = """
name = "frozen"
[budget]
max_steps = 3
[train]
batch_size = 12
[model]
freeze = "backbone"
[eval]
episodes = 20
[axes]
backbone = ["koch"]
loss = ["triplet"]
seed = [0, 1]
[backbone.koch]
image_size = 65
embed_dim = 16
"""


@pytest.mark.parametrize("failure", ["safetensors", "oserror"])
def test_a_full_disk_under_the_feature_cache_falls_back_to_memory_with_one_warning(failure, tmp_path, monkeypatch, recwarn):
    import errno

    import safetensors
    import safetensors.torch

    calls = []

    def full_disk(tensors, filename, metadata=None):
        calls.append(filename)
        with open(filename, "wb") as f:  # a partial file, as a full disk leaves
            f.write(b"\0" * 10)
        if failure == "safetensors":
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(FROZEN_GRID)
    assert main(["run", "--grid", "g.toml", "--cache-dir", "cache"]) == 0
    got = rows(tmp_path / "results" / "frozen.jsonl")
    assert [r["status"] for r in got] == ["ok", "ok"] and all(r["train"]["steps"] == 3 for r in got)
    assert len(calls) == 1  # after the first failed write, this run keeps its caches in memory
    warned = [str(w.message) for w in recwarn if "cannot write the feature cache" in str(w.message)]
    assert len(warned) == 1 and "No space left on device" in warned[0], [str(w.message) for w in recwarn]
    assert list((tmp_path / "cache").iterdir()) == []  # no partial entry left behind


class _FullDisk:
    """A results file on a disk that fills up: write number `torn` lands half of its bytes, later ones fail."""

    def __init__(self, file, torn: int):
        self._f, self._left = file, torn

    def write(self, data):
        self._left -= 1
        if self._left < 0:
            raise OSError(28, "No space left on device")
        return self._f.write(data if self._left else bytes(data[: len(data) // 2]))

    def __getattr__(self, name):
        return getattr(self._f, name)


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_under_the_results_file_stops_the_run_in_one_line_and_leaves_no_torn_line(where, plugin_dir, monkeypatch, capsys):
    import bench.results as results_module
    from bench.plugins import BACKBONES

    if "faulty" not in BACKBONES:
        import faulty_plugin  # noqa: F401
    (plugin_dir / "g.toml").write_text(GRID.format(modes='["ok"]').replace('"faults"', '"full"') + "seed = [0, 1, 2]\n")
    path = plugin_dir / "results" / "full.jsonl"
    with monkeypatch.context() as m:
        if where == "write":  # the second row is torn half-way
            m.setattr(results_module, "open", lambda *a, **k: _FullDisk(open(*a, **k), torn=2), raising=False)
        else:  # the second row's fsync reports the full disk
            synced = []

            def fsync(fd):
                synced.append(fd)
                if len(synced) == 2:
                    raise OSError(28, "No space left on device")
                os.fsync(fd)

            m.setattr(results_module, "os", type("os", (), {"fsync": staticmethod(fsync), "SEEK_END": os.SEEK_END, "ftruncate": staticmethod(os.ftruncate)}))
        capsys.readouterr()
        assert main(["run", "--grid", "g.toml"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "error" in line or "Traceback" in line] == err[-1:], err  # one line, the last
    assert err[-1].startswith("error: results/full.jsonl: cannot write a result row (No space left on device)"), err
    assert not path.with_suffix(".md").exists()
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "ok"  # the failed row cut back: no torn line left
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torn")  # the resume finds nothing torn to skip
        assert main(["run", "--grid", "g.toml"]) == 0
    done = rows_ignoring_torn(path)
    assert len(done) == 3 and len({r["cell_id"] for r in done}) == 3  # each cell once, nothing lost

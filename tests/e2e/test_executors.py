"""Scale-out: the same grid through in-process, --workers, a local Ray instance and submitit's local
executor gives the same rows; a dying worker is one error row; a killed coordinator resumes; the disk cache
is reused and never trusted when corrupt; plain progress lines when output is not a terminal."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import kill_when, launch, run_bench

from bench.cli import main

GRID = """
name = "{name}"
[budget]
max_steps = 3
[train]
batch_size = 12
precision = "fp32"
[eval]
episodes = 20
n_way = 3
[model]
freeze = "{freeze}"
[axes]
backbone = ["conv4"]
loss = ["contrastive"]
seed = [0, 1]
[backbone.conv4]
image_size = 16
[resources]
cpus = 1
"""
METRICS = ("verification_roc_auc", "recall_at_1", "map_at_r", "few_shot_3way_1shot_accuracy")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_cell(path: Path) -> dict:
    return {r["cell_id"]: r for r in rows(path)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process run, one torch thread like each worker (thread counts change float sums)."""
    cwd = tmp_path_factory.mktemp("ref")
    (cwd / "g.toml").write_text(GRID.format(name="g", freeze="none"))
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--grid", "g.toml", "--threads", "1"], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return by_cell(cwd / "results" / "g.jsonl")


def run_cli(cwd: Path, *args, env=None) -> subprocess.CompletedProcess:
    return run_bench(cwd, "--grid", "g.toml", *args, env={**os.environ, **(env or {})})


def assert_same_rows(got: dict, reference: dict) -> None:
    assert set(got) == set(reference) and len(got) == 2
    for cell_id, row in got.items():
        assert row["status"] == "ok", row.get("error")
        for key in METRICS:
            assert row["metrics"][key] == reference[cell_id]["metrics"][key], key
        assert row["train"]["final_loss"] == reference[cell_id]["train"]["final_loss"]


@pytest.mark.parametrize(
    "args,env",
    [
        (["--workers", "2"], {}),
        (["--executor", "submitit-local", "--workers", "2", "--threads", "1"], {}),
        (["--executor", "ray"], {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}),
    ],
    ids=["workers", "submitit-local", "ray"],
)
def test_every_executor_gives_the_in_process_rows(args, env, reference, tmp_path):
    if "ray" in args:
        pytest.importorskip("ray")
    if "submitit-local" in args:
        pytest.importorskip("submitit")
    (tmp_path / "g.toml").write_text(GRID.format(name="g", freeze="none"))
    proc = run_cli(tmp_path, *args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = rows(tmp_path / "results" / "g.jsonl")
    assert len(got) == len({r["cell_id"] for r in got})  # one row per cell
    assert_same_rows(by_cell(tmp_path / "results" / "g.jsonl"), reference)
    # output is not a terminal here: plain lines, one per finished cell, never a redrawn bar
    assert "━" not in proc.stderr and proc.stderr.count("[") >= 2 and "[2/2] conv4" in proc.stderr


FAULTY = """
import os, signal
from torch import nn
from bench.plugins import BACKBONES, InputSpec

class Dies(nn.Module):
    def __init__(self, die):
        super().__init__()
        self.die, self.embed_dim = die, 8
        self.input_spec = InputSpec((8, 8), 1, (0.0,), (1.0,))
        self.fc = nn.Linear(64, 8)
    def forward(self, x):
        if self.die:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.fc(x.flatten(1))

@BACKBONES.register("dies")
def dies(die: bool = False):
    return Dies(die)
"""


def test_a_worker_that_dies_is_one_error_row_and_the_grid_goes_on(tmp_path):
    (tmp_path / "dies_plugin.py").write_text(FAULTY)
    (tmp_path / "g.toml").write_text("""
name = "g"
[budget]
max_steps = 2
[train]
batch_size = 12
[axes]
backbone = ["dies"]
loss = ["triplet"]
seed = [0, 1]
"backbone.die" = [false, true]
""")
    proc = run_cli(tmp_path, "--workers", "2", "--plugin", "dies_plugin", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr[-3000:]  # every cell ran; the dead workers' error rows make the exit code 1
    got = rows(tmp_path / "results" / "g.jsonl")
    assert len(got) == 4
    died = [r for r in got if r["config"]["backbone_args"]["die"]]
    assert all(r["status"] == "error" and "worker process was killed by SIGKILL" in r["error"] for r in died)
    assert all(r["status"] == "ok" for r in got if not r["config"]["backbone_args"]["die"])


def test_a_killed_coordinator_resumes_without_duplicates(tmp_path, reference_run):
    """Two workers of one thread each, killed with the coordinator after the first row, then resumed: every cell
    once, each the row the uninterrupted one-thread reference run gave."""
    (tmp_path / "g.toml").write_text((reference_run / "grid.toml").read_text())
    results = tmp_path / "results" / "ref.jsonl"
    kill_when(launch(tmp_path, "--grid", "g.toml", "--workers", "2"), results, 1)
    assert 1 <= len(rows(results)) < 4  # partial: the kill landed mid-grid
    done = run_cli(tmp_path, "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(results)
    assert len(got) == 4 and len({r["cell_id"] for r in got}) == 4 and all(r["status"] == "ok" for r in got)
    want = {r["cell_id"]: json.dumps(r["metrics"]) for r in rows(reference_run / "ref.jsonl")}
    assert {r["cell_id"]: json.dumps(r["metrics"]) for r in got} == want


def test_disk_cache_is_reused_and_a_corrupt_entry_is_recomputed(tmp_path):
    (tmp_path / "g.toml").write_text(GRID.format(name="g", freeze="backbone"))
    first = run_cli(tmp_path, "--threads", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    entries = sorted((tmp_path / "results" / "cache").glob("*.safetensors"))
    assert len(entries) == 3  # fitted images, and the frozen features of each seed's random-init trunk (not pretrained)...
    reference = by_cell(tmp_path / "results" / "g.jsonl")
    stamps = {p: p.stat().st_mtime_ns for p in entries}
    entries[0].write_bytes(entries[0].read_bytes()[: len(entries[0].read_bytes()) // 2])  # a partial write
    again = run_cli(tmp_path, "--threads", "1", "--results", "again.jsonl", "--cache-dir", "results/cache")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cache entry unreadable" in again.stderr
    assert_same_rows(by_cell(tmp_path / "again.jsonl"), reference)
    assert entries[0].stat().st_mtime_ns != stamps[entries[0]]  # rewritten whole
    assert all(p.stat().st_mtime_ns == stamps[p] for p in entries[1:])  # the others were read, not recomputed


def test_a_missing_engine_is_one_line_naming_the_install(tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID.format(name="g", freeze="none"))
    assert main(["run", "--grid", "g.toml", "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'metric-bench[ray]'" in err
    assert not (tmp_path / "results").exists()


def fake_run_cell(seen: list):
    """A run_cell that records the device it was given and returns a row without training."""
    from bench.run.rows import _row_start

    def run_cell(cell, job, data, caches, device, *args, **kwargs):
        seen.append(device)
        return {
            **_row_start(cell, job.grid_name),
            "status": "ok",
            "metrics": {},
            "train": {"steps": 0, "stopped_by": "max_steps"},
            "env": {"device": str(device)},
        }

    return run_cell


def test_the_device_is_resolved_where_the_cell_runs(tmp_path, monkeypatch):
    """A coordinator without CUDA (a login node) hands `--device auto` on as asked; a node that sees CUDA
    trains the cell there on CUDA: through a mocked remote executor (Ray's and Slurm's `_run_remote`), a local
    worker's loop (`_serve`) and the in-process loop."""
    import multiprocessing as mp
    from unittest import mock

    import torch

    import bench.run.executors as executors
    import bench.run.runner as runner
    from bench.grid import load_grid
    from bench.run.cell import data_key

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the coordinator
    seen, jobs = [], []
    monkeypatch.setattr(executors, "run_cell", fake_run_cell(seen))

    class NodeWithGPU:  # what a Ray task or a Slurm job does, on a node that sees CUDA
        def run(self, cells, data, job, tick):
            jobs.append(job)
            for cell in cells:
                yield "started", cell, None
                with mock.patch.object(torch.cuda, "is_available", return_value=True):
                    yield "done", cell, executors._run_remote(cell, data[data_key(cell)], job)

    monkeypatch.setattr(runner, "make_executor", lambda options, path: NodeWithGPU())
    (tmp_path / "g.toml").write_text(GRID.format(name="g", freeze="none"))
    got = runner.run_grid(load_grid(tmp_path / "g.toml"), tmp_path / "r.jsonl", runner.RunOptions(device="auto", executor="ray"))
    assert [j.device for j in jobs] == ["auto"] and seen == [torch.device("cuda")] * 2
    assert [r.env.device for r in got] == ["cuda"] * 2

    cell = load_grid(tmp_path / "g.toml").cells[0]
    data = {data_key(cell): None}
    parent, child = mp.Pipe()
    parent.send(cell)
    parent.send(None)
    seen.clear()
    with mock.patch.object(torch.cuda, "is_available", return_value=True):
        executors._serve(child, data, executors.Job("g", device="auto"))
        events = list(executors.in_process([cell], data, executors.Job("g", device="auto"), False, mock.MagicMock(), print))
    assert parent.recv()["env"]["device"] == "cuda" and events[-1][2]["env"]["device"] == "cuda"
    assert seen == [torch.device("cuda")] * 2
    seen.clear()
    list(executors.in_process([cell], data, executors.Job("g", device="auto"), False, mock.MagicMock(), print))
    assert seen == [torch.device("cpu")]  # auto without CUDA: the CPU, as before


def test_cuda_on_a_node_without_it_is_an_error_row_naming_the_node(tmp_path, monkeypatch):
    import platform

    import torch

    import bench.run.executors as executors
    from bench.grid import load_grid

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen = []
    monkeypatch.setattr(executors, "run_cell", fake_run_cell(seen))
    (tmp_path / "g.toml").write_text(GRID.format(name="g", freeze="none"))
    cell = load_grid(tmp_path / "g.toml").cells[0]
    row = executors._run_remote(cell, None, executors.Job("g", device="cuda"))
    assert row["status"] == "error" and f"node {platform.node()} sees no CUDA device" in row["error"] and not seen


def test_the_cli_leaves_cuda_to_the_ray_or_slurm_node(tmp_path, monkeypatch, capsys):
    """`--device cuda` on a coordinator without CUDA: refused for cells that run here, handed on to Ray/Slurm."""
    import torch

    import bench.run.runner as runner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    asked = []
    monkeypatch.setattr(runner, "run_grid", lambda grid, results, options, console=None, **_: asked.append(options.device) or [])
    (tmp_path / "g.toml").write_text(GRID.format(name="g", freeze="none"))
    base = ["run", "--grid", str(tmp_path / "g.toml"), "--results", str(tmp_path / "r.jsonl"), "--device", "cuda"]
    for executor in ("ray", "slurm"):
        assert main(base + ["--executor", executor]) == 0
    assert asked == ["cuda", "cuda"]
    assert main(base) == 2 and "sees no CUDA device" in capsys.readouterr().err

"""What a seconds-bound row's speed depends on: every row's env names the device, the CPU model, the torch
threads and the precision, and resuming a max_seconds grid on another setup warns in one line."""

import json
from pathlib import Path

import pytest
import torch
from boards import as_row

import bench.run.rows as rows_module
from bench.cli import main
from bench.results import speed_env as speed_environment
from bench.run.rows import cpu_model, speed_difference, this_run_speed
from bench.schema import Row


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)  # --threads sets this process's


def run(capsys, make_grid, name, seeds, threads, seconds=60.0):
    budget = {"max_steps": 1, **({"max_seconds": seconds} if seconds else {})}
    grid = make_grid(name, budget=budget, train={"batch_size": 12}, eval={"episodes": 5, "n_way": 3}, axes={"loss": ["triplet"], "seed": seeds})
    assert main(["run", "--grid", str(grid), "--threads", str(threads)]) == 0
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if "speed environment" in line], [json.loads(l) for l in Path(f"results/{name}.jsonl").read_text().splitlines()]


def test_rows_carry_the_cpu_model_and_resuming_a_seconds_grid_on_other_threads_warns(cwd, capsys, make_grid):
    warned, rows = run(capsys, make_grid, "g", [0], 1)
    assert not warned
    env = rows[0]["env"]
    assert env["cpu_model"] == cpu_model() and env["cpu_model"] and env["torch_threads"] == 1 and env["device"] == "cpu"
    assert speed_environment(Row.from_dict(rows[0])) == {"device": "cpu", "cpu_model": cpu_model(), "torch_threads": 1, "precision": rows[0]["precision"]}
    warned, rows = run(capsys, make_grid, "g", [0, 1], 1)  # the same setup: no warning
    assert not warned and len(rows) == 2
    warned, rows = run(capsys, make_grid, "g", [0, 1, 2], 2)
    assert len(warned) == 1 and "torch_threads 1 → 2" in warned[0] and "max_seconds" in warned[0]
    assert len(rows) == 3 and rows[-1]["env"]["torch_threads"] == 2  # the rows still land


def test_no_warning_for_a_grid_without_a_seconds_budget(cwd, capsys, make_grid):
    run(capsys, make_grid, "steps", [0], 1, seconds=None)
    warned, rows = run(capsys, make_grid, "steps", [0, 1], 2, seconds=None)
    assert not warned and len(rows) == 2


def test_this_runs_threads_and_what_the_node_decides(monkeypatch):
    monkeypatch.setattr(rows_module.os, "cpu_count", lambda: 8)
    cpu = torch.device("cpu")
    row = as_row({"config": {"train": {"precision": "auto"}}})
    assert this_run_speed("local", 2, None, {}, cpu)(row)["torch_threads"] == 4  # --workers 2: cores / 2 each
    assert this_run_speed("local", 2, 3, {}, cpu)(row)["torch_threads"] == 3  # --threads wins
    assert this_run_speed("local", 0, None, {}, cpu)(row)["torch_threads"] == torch.get_num_threads()
    on_ray = this_run_speed("ray", 0, None, {"cpus": 4}, None)
    assert on_ray(row) == {"device": None, "cpu_model": None, "torch_threads": 4, "precision": None}  # decided on the node
    assert on_ray(as_row({"config": {"train": {"precision": "fp32"}}}))["precision"] == "fp32"


def test_speed_difference_names_each_field_and_ignores_unknowns():
    def row(**env):
        precision = env.pop("precision", "fp32")
        return as_row(
            {"grid": "g", "train": {}, "config": {"budget": {"max_seconds": 5.0}, "train": {"precision": "auto"}}, "env": env, "precision": precision}
        )

    here = lambda r: {"device": "cpu", "cpu_model": "B", "torch_threads": 2, "precision": "fp32"}
    same = row(device="cpu", cpu_model="B", torch_threads=2)
    old = row(device="cpu", torch_threads=2)  # a row from before env.cpu_model: unknown, not a difference
    assert speed_difference([same, old], "g", here) is None
    line = speed_difference([same, row(device="cpu", cpu_model="A", torch_threads=1, precision="bf16")], "g", here)
    assert "cpu_model A → B" in line and "torch_threads 1 → 2" in line and "precision bf16 → fp32" in line and "\n" not in line
    assert speed_difference([row(device="cuda:0", cpu_model="A", torch_threads=1)], "other grid", here) is None


def test_cpu_model_falls_back_to_the_platform(monkeypatch):
    class NoCpuinfo:
        def __init__(self, *a):
            pass

        def read_text(self):
            raise OSError("no /proc here")

    monkeypatch.setattr(rows_module, "Path", NoCpuinfo)
    monkeypatch.setattr(rows_module.platform, "processor", lambda: "")
    monkeypatch.setattr(rows_module.platform, "machine", lambda: "arm64")
    assert cpu_model() == "arm64"

"""A busy neighbour beside a seconds-bound cell: real CPU hogs on the cell's one core, a real `bench run`. The row
records what the clock got from the machine, the leaderboard marks the cell *contended* (one seed is enough), the
run says so, and `--rerun contended` runs it again. The clock module's own arithmetic is checked without hogs."""

import json
import os
import subprocess
import sys

import pytest
from boards import as_row

from bench.results import CONTENDED, contended, core_wait
from bench.run.clock import Meter
from bench.schema import Row

HOG = "while True: pass"
pinned = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or not os.path.exists("/proc/self/task"), reason="needs Linux (CPU affinity and per-thread scheduler statistics)"
)


def bench(cwd, *args, cpu: int | None = None):
    """`bench run` in a fresh process, pinned to `cpu` (with one torch thread) when given."""
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.run(
        [sys.executable, "-m", "bench", "run", "--grid", "g.toml", "--results", "r/busy.jsonl", "--threads", "1", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=pin,
    )


@pinned
def test_a_cell_beside_two_hogs_on_its_core_is_marked_contended_and_rerun(tmp_path, make_grid):
    make_grid("g", budget={"max_seconds": 1.5}, train={}, axes={"loss": ["triplet"]})
    cpu = min(os.sched_getaffinity(0))
    # the hogs start once the run has loaded (its imports and data are no part of the clock): they take the core from
    # the cell's build, training and evaluation, not from the interpreter's start
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--grid", "g.toml", "--results", "r/busy.jsonl", "--threads", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    before = []
    for line in proc.stderr:  # "grid g: 1 of 1 cells to run …" comes after the preflight, before the cell
        before.append(line)
        if "cells to run" in line:
            break
    hogs = [subprocess.Popen([sys.executable, "-c", HOG], preexec_fn=lambda: os.sched_setaffinity(0, {cpu})) for _ in range(2)]
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(before) + err)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "r" / "busy.jsonl").read_text().splitlines()[0])
    machine = row["train"]["machine"]
    assert machine["threads"] == 1 and machine["wall_seconds"] >= 1.0 and machine["cpu_seconds"] > 0
    assert machine["core_wait_share"] >= 0.5 and machine["cpu_share"] < 0.5, machine  # a third of one core, not all of it
    assert machine["omp_wait_policy"] == "PASSIVE" and {"load_start", "load_end"} <= set(machine)
    assert contended(Row.from_dict(row)) and row["train"]["stopped_by"] == "max_seconds"
    board = (tmp_path / "r" / "busy.md").read_text()
    assert "waited" in board and ": contended)" in board and "*contended*" in board
    said = " ".join((done.stdout + done.stderr).split())  # rich wraps at the terminal's width
    assert "marked contended in the leaderboard" in said and "--rerun contended" in said
    again = bench(tmp_path, "--rerun", "contended")  # no hogs now; only the contended cell runs, its new row supersedes
    assert again.returncode == 0, again.stderr[-2000:]
    assert len((tmp_path / "r" / "busy.jsonl").read_text().splitlines()) == 2


def test_only_a_seconds_bound_ok_row_that_waited_is_contended():
    def row(share, stopped_by="max_seconds", status="ok"):
        return as_row({"status": status, "train": {"stopped_by": stopped_by, "machine": {"core_wait_share": share}}})

    assert contended(row(CONTENDED)) and not contended(row(CONTENDED - 0.01))
    assert not contended(row(0.9, stopped_by="max_steps"))  # the load cost it time, not steps
    assert not contended(row(0.9, status="error")) and not contended(row(None))
    assert not contended(as_row({"train": {"stopped_by": "max_seconds"}})) and core_wait(as_row({})) is None  # older rows

    # a frozen trunk's extraction is charged to the same clock: its measured wait counts for the seconds it put on the
    # clock. A starved extraction that left the loop no time marks the cell; a short one beside a quiet loop does not.
    def charged(loop_wait, loop_seconds, charge_wait, charge_seconds):
        machine = {"core_wait_share": loop_wait, "wall_seconds": loop_seconds, "charge_core_wait_share": charge_wait}
        return as_row({"train": {"stopped_by": "max_seconds", "charged_seconds": charge_seconds, "machine": machine}})

    assert core_wait(charged(0.0, 0.0003, 0.5, 72.0)) == pytest.approx(0.5, abs=1e-5) and contended(charged(0.0, 0.0003, 0.5, 72.0))
    assert core_wait(charged(0.1, 30.0, 0.5, 2.0)) == pytest.approx((0.1 * 30 + 0.5 * 2) / 32) and not contended(charged(0.1, 30.0, 0.5, 2.0))
    assert core_wait(charged(0.1, 30.0, None, 2.0)) == 0.1  # no measurement of the charge: the loop's alone


@pinned
def test_the_meter_leaves_out_paused_spans_and_counts_cpu_per_thread():
    import time

    begun = time.perf_counter()
    meter = Meter(threads=2)
    x = 0
    for i in range(3_000_000):  # one busy thread of the two counted
        x += i
    meter.stop_span()
    paused = time.perf_counter()
    time.sleep(0.3)  # a paused span (a learning-curve evaluation): not in the record
    resumed = time.perf_counter()
    meter.start_span()
    out = meter.record()
    ended = time.perf_counter()
    assert out["wall_seconds"] <= (ended - begun) - (resumed - paused) + 1e-3  # the paused span left out
    assert out["threads"] == 2 and out["cpu_seconds"] > 0
    assert abs(out["cpu_share"] - out["cpu_seconds"] / (out["wall_seconds"] * 2)) < 2e-3  # CPU ÷ (wall × threads)
    assert out["cpu_share"] <= 0.55  # one of two threads busy: at most about half
    assert 0 <= out["core_wait_share"] < 1


def test_mlflow_children_carry_the_wait_and_the_mark():
    from bench.export.mlflow import cell_metrics

    row = {
        "status": "ok",
        "metrics": {"verification_roc_auc": 0.8},
        "train": {"steps": 5, "samples": 160, "seconds": 1.5, "stopped_by": "max_seconds", "machine": {"core_wait_share": 0.6}},
    }
    got = dict(cell_metrics(as_row(row), "verification_roc_auc"))
    assert got["train/contended"] == 1.0 and got["train/core_wait_share"] == 0.6
    row["train"]["machine"]["core_wait_share"] = 0.01
    assert dict(cell_metrics(as_row(row), "verification_roc_auc"))["train/contended"] == 0.0
    del row["train"]["machine"]  # an older row: nothing said
    assert "train/contended" not in dict(cell_metrics(as_row(row), "verification_roc_auc"))


def test_only_a_grid_with_a_seconds_budget_gets_the_passive_wait(tmp_path, make_grid):
    from bench.run.clock import seconds_bound

    assert seconds_bound(make_grid("a", budget={"max_seconds": 2.0}))
    assert seconds_bound(make_grid("b", axes={"budget.max_seconds": [1.0, 2.0]}))
    assert not seconds_bound(make_grid("c", budget={"max_steps": 3}))
    (tmp_path / "broken.toml").write_text("[budget\n")
    assert not seconds_bound(tmp_path / "broken.toml") and not seconds_bound(tmp_path / "missing.toml")
    # a steps-bound run in a fresh process keeps OpenMP's default wait, and its rows say so
    make_grid("g", budget={"max_steps": 2})
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--grid", "g.toml", "--results", "r/g.jsonl"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "r" / "g.jsonl").read_text().splitlines()[0])
    assert row["train"]["machine"]["omp_wait_policy"] is None

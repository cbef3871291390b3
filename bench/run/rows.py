"""A cell's result row: run a cell and turn whatever happened (a result, a timeout, an OOM, a crash) into
one row with the config, the status and the environment. Any executor calls `run_cell`."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from bench.config import Cell
from bench.plugins import LabelledImages
from bench.results import SPEED_FIELDS, speed_env
from bench.run.cell import CellTimeout, measure, use_bf16
from bench.run.job import Job
from bench.schema import SCHEMA, Row


def run_cell(cell: Cell, job: Job, data: LabelledImages, caches: dict, device: torch.device, report=lambda steps=None, info="": None, warn=print) -> dict:
    """Train and evaluate one cell; any failure becomes the row's status, never an exception. A row whose test
    split was scored carries its per-item outcomes under "_items" (numpy arrays, picklable through every
    executor) for the coordinator, which writes them to the cell's items file (bench.run.runner.items_keeper)."""
    row = _row_start(cell, job.grid_name)
    deadline = time.monotonic() + job.cell_timeout if job.cell_timeout else None
    try:
        row.update(measure(cell, job, data, caches, device, report, warn, deadline))
        if "diverged" in row:  # non-finite embeddings: say why in the row's error
            row["error"] = row.pop("diverged")
        stopped = row["train"]["stopped_by"]
        row["status"] = "diverged" if stopped == "diverged" or "error" in row else ("pruned" if stopped == "pruned" else "ok")
    except CellTimeout as exc:
        row.update(status="timeout", error=str(exc))
    except (torch.OutOfMemoryError, MemoryError) as exc:
        row.update(status="oom", error=f"{type(exc).__name__}: {exc}"[:2000])
    except Exception as exc:  # one broken cell must not cost the rest of the grid
        row.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc(limit=8))
    if cell.trial is not None:
        row["search"] = trial_record(cell, row)
    return _row_end(row, device, row.get("precision", cell.train.precision))


def trial_record(cell: Cell, row: dict) -> dict:
    """A search trial's row part: its study, number, options, objective (the validation metric; None unless ok)
    and the metric at each curve point (what the median rule and a rebuilt study read)."""
    metric = cell.trial.metric
    objective = row.get("metrics", {}).get(metric) if row.get("status") == "ok" else None
    return {
        "study": cell.trial.study,
        "trial": cell.trial.number,
        "params": cell.trial.params,
        "metric": metric,
        "objective": objective,
        "intermediate": [point["metrics"].get(metric) for point in row.get("curve", [])],
    }


def failed_row(cell: Cell, grid_name: str, device: torch.device | str, status: str, error: str) -> dict:
    """A row for a cell that did not report. `device` is where it ran, or the device asked for ("auto", "cuda")
    when it was to be resolved on a Ray or Slurm node that never reported (this process may have no GPU)."""
    row = {**_row_start(cell, grid_name), "status": status, "error": error}
    if cell.trial is not None:
        row["search"] = trial_record(cell, row)
    if isinstance(device, str):
        row = _row_end(row, torch.device("cpu"), cell.train.precision)
        row["env"]["device"] = f"{device} (asked; the node never reported)"
        return row
    return _row_end(row, device, cell.train.precision)


def _row_start(cell: Cell, grid_name: str) -> dict:
    return {"schema": SCHEMA, "grid": grid_name, "cell_id": cell.cell_id, "config": cell.to_dict()}


def _row_end(row: dict, device: torch.device, precision: str) -> dict:
    row["env"] = environment(device, precision)
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return row


def environment(device: torch.device, precision: str) -> dict:
    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    packages = ["metric-bench", "torch", "torchvision", "timm", "pytorch-metric-learning", "scikit-learn", "numpy", "pandas"]
    return {
        "versions": {p: v(p) for p in packages},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name(device),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "precision": precision,
        **source_state(),
    }


@functools.cache  # once per process: every row of a run records the same checkout
def source_state() -> dict:
    """{"git_commit": HEAD of the git checkout whose bench/ runs, "git_dirty": whether its code — bench/, backbones/, losses/ — differs from it}; both
    None when bench does not run from a checkout's tracked files (an installed package, no git)."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    quiet = {"capture_output": True, "text": True, "timeout": 10, "env": {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}}  # never touch the index
    unknown = {"git_commit": None, "git_dirty": None}
    try:
        tracked = subprocess.run(git + ["ls-files", "--error-unmatch", "__init__.py"], **quiet)
        status = subprocess.run(
            git + ["status", "--porcelain=v2", "--branch", "--untracked-files=no", "--", ".", "../backbones", "../losses"], **quiet
        )  # the code, not results files a run is writing
    except (OSError, subprocess.SubprocessError):
        return unknown
    head = [ln.split()[2] for ln in status.stdout.splitlines() if ln.startswith("# branch.oid ")]
    if tracked.returncode or status.returncode or not head or head[0] == "(initial)":
        return unknown
    return {"git_commit": head[0], "git_dirty": any(not ln.startswith("#") for ln in status.stdout.splitlines())}


def device_name(device: torch.device) -> str:
    return str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)


def cpu_model() -> str:
    """ "model name" from /proc/cpuinfo, else platform.processor(), else platform.machine()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def this_run_speed(executor: str, workers: int, threads: int | None, resources: dict, device: torch.device | None) -> Callable[[dict], dict]:
    """This run's speed environment for a row's cell, as a row this run writes would record it; None where the
    node that runs the cell decides (the device, CPU and an "auto" precision on Ray or Slurm: `device` None)."""
    local = executor == "local" and device is not None
    if local:
        threads = threads or (max(1, (os.cpu_count() or 1) // workers) if workers else torch.get_num_threads())
    else:
        threads = threads or int(resources.get("cpus", 1))
    here = {"device": device_name(device) if local else None, "cpu_model": cpu_model() if local else None, "torch_threads": threads}

    def speed(row: Row) -> dict:
        asked = row.config.get("train", {}).get("precision", "auto")
        ran = ("bf16" if use_bf16(asked, device) else "fp32") if local or asked != "auto" else None
        return {**here, "precision": ran}

    return speed


def speed_difference(rows: list[Row], grid_name: str, speed: Callable[[Row], dict]) -> str | None:
    """How the grid's existing max_seconds rows ran on another speed environment than this run's `speed`,
    in one line (field: theirs → this run's; a field unknown on either side is not compared), or None."""
    seconds = [
        r
        for r in rows
        if r.grid == grid_name
        and r.train is not None  # a row that trained
        and (r.config.get("budget") or {}).get("max_seconds") is not None
    ]
    changes: dict[str, set] = {}
    for row in seconds:
        theirs, ours = speed_env(row), speed(row)
        for field in SPEED_FIELDS:
            if theirs[field] is not None and ours[field] is not None and theirs[field] != ours[field]:
                changes.setdefault(field, set()).add(f"{theirs[field]} → {ours[field]}")
    if not changes:
        return None
    named = "; ".join(f"{field} {', '.join(sorted(pairs))}" for field, pairs in changes.items())
    return (
        f"resuming grid {grid_name}: its existing max_seconds rows ran on another speed environment ({named}), so a seconds "
        "budget buys different steps in this run's rows; compare them as separate setups, or rerun with --rerun all on one setup"
    )

"""A cell's result row: run a cell and turn whatever happened (a result, a timeout, an OOM, a crash) into
one row with the config, the status and the environment. Any executor calls `run_cell`."""
from __future__ import annotations

import platform
import time
import traceback
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import torch

from bench.config import Cell
from bench.plugins import LabelledImages
from bench.results import SCHEMA
from bench.run.cell import CellTimeout, measure


def run_cell(cell: Cell, grid_name: str, data: LabelledImages, caches: dict, device: torch.device,
             cell_timeout: float | None = None, report=lambda steps=None, info="": None, feature_cache: bool = True,
             warn=print, checkpoints: str | None = None) -> dict:
    """Train and evaluate one cell; any failure becomes the row's status, never an exception."""
    row = _row_start(cell, grid_name)
    deadline = time.monotonic() + cell_timeout if cell_timeout else None
    try:
        row.update(measure(cell, data, caches, device, report, deadline, feature_cache, warn, checkpoints))
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
    return {"study": cell.trial.study, "trial": cell.trial.number, "params": cell.trial.params, "metric": metric, "objective": objective,
            "intermediate": [point["metrics"].get(metric) for point in row.get("curve", [])]}


def failed_row(cell: Cell, grid_name: str, device: torch.device, status: str, error: str) -> dict:
    row = {**_row_start(cell, grid_name), "status": status, "error": error}
    if cell.trial is not None:
        row["search"] = trial_record(cell, row)
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
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "precision": precision,
    }

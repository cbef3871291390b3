"""Runs a grid: load data, then for each cell build → train under the budget → evaluate → append a row."""
from __future__ import annotations

import json
import platform
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.adapt import freeze
from bench.cell import CellTimeout, data_key, split_for, train_and_evaluate
from bench.config import Cell, Grid
from bench.errors import UserError
from bench.isolation import run_isolated
from bench.plugins import BACKBONES, DATASETS, LOSSES, LabelledImages
from bench.results import SCHEMA, ResultsWriter, latest_rows, read_rows
from bench.sampling import min_batch_size


@dataclass(frozen=True)
class RunOptions:
    """How to run a grid; none of this is part of a cell's identity."""

    device: str = "auto"  # auto | cpu | cuda
    rerun: str = "none"  # none: skip cells with a row; failed: also rerun error/oom/timeout; all: rerun every cell
    cell_timeout: float | None = None  # hard wall-clock limit per cell (build + train + evaluate)
    isolate: bool = False  # each cell in a child process, killed when it outlives cell_timeout
    plugins: tuple[str, ...] = ()  # --plugin modules, imported again in child processes
    feature_cache: bool = True  # frozen, unaugmented backbones embed each image once per grid


FAILED = ("error", "oom", "timeout")  # `diverged` is a result of the config, not a failure to rerun


def run_grid(grid: Grid, results_path: Path, options: RunOptions = RunOptions(), console: Console | None = None) -> list[dict]:
    """Run the cells of `grid` that `options.rerun` selects; returns the latest row of every cell of the grid."""
    console = console or Console(stderr=True)
    dev = torch.device("cuda" if options.device == "auto" and torch.cuda.is_available() else ("cpu" if options.device == "auto" else options.device))
    todo = select_cells(grid, read_rows(results_path), options.rerun)
    data = preflight(todo, console)  # before the results file is touched: bad input leaves nothing behind
    with ResultsWriter(results_path) as writer:  # exclusive: a second `bench run` on this file fails here
        todo = select_cells(grid, read_rows(results_path), options.rerun)  # rows may have landed since
        console.print(f"grid {grid.name}: {len(todo)} of {len(grid.cells)} cells to run → {results_path}", highlight=False)
        if not todo:
            console.print("every cell already has a row; nothing to run (use --rerun failed|all to run again)")
        caches: dict[tuple, object] = {}  # fitted images and frozen features, shared by the grid's cells
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=console, transient=False) as progress:
            grid_task = progress.add_task(f"grid {grid.name}", total=len(grid.cells), completed=len(grid.cells) - len(todo), info="")
            for cell in todo:
                task = progress.add_task(f"  {cell.backbone} · {cell.loss} · seed {cell.seed}", total=cell.budget.max_steps, info="building")
                if options.isolate:
                    row = run_isolated(cell, grid.name, data[data_key(cell)], dev, options)
                else:
                    row = run_cell(cell, grid.name, data[data_key(cell)], caches, dev, options.cell_timeout,
                                   _progress_hook(progress, task), options.feature_cache, _warner(console))
                progress.remove_task(task)
                writer.append(row)
                progress.update(grid_task, advance=1, info=f"last: {cell.backbone} {cell.loss} → {_summary(row)}")
    ids = {c.cell_id for c in grid.cells}
    return [r for cid, r in latest_rows(read_rows(results_path)).items() if cid in ids]


def select_cells(grid: Grid, rows: list[dict], rerun: str) -> list[Cell]:
    latest = latest_rows(rows)
    if rerun == "all":
        return list(grid.cells)
    return [c for c in grid.cells if c.cell_id not in latest or (rerun == "failed" and latest[c.cell_id]["status"] in FAILED)]


def preflight(cells: list[Cell], console: Console) -> dict[str, LabelledImages]:
    """Every check that can fail before the first training step (`bench validate` runs exactly this):
    each backbone and loss builds with its arguments and freeze mode, batches fit the losses, each dataset
    loads, each split is possible. Returns the loaded datasets."""
    check_buildable(cells)
    data = load_datasets(cells, console)
    check_splits(cells, data)
    return data


def check_buildable(cells: list[Cell]) -> None:
    """Build (and freeze) each distinct backbone and loss once, so a bad argument fails before any training."""
    built: dict[str, int] = {}
    for cell in cells:
        key = json.dumps([cell.backbone, cell.backbone_args, asdict(cell.model)], sort_keys=True)
        if key not in built:
            backbone = _build(BACKBONES, "backbone", cell.backbone, cell.backbone_args)
            freeze(backbone, cell.model.freeze, cell.model.unfrozen_stages)
            built[key] = backbone.embed_dim
        loss = _build(LOSSES, "loss", cell.loss, cell.loss_args, built[key])
        need = min_batch_size(loss.batch, cell.train.m_per_class)
        if cell.train.batch_size < need:
            raise UserError(f"train.batch_size = {cell.train.batch_size} is too small for {cell.loss} ({loss.batch} batches) — use at least {need}")


def check_splits(cells: list[Cell], data: dict[str, LabelledImages]) -> None:
    """Compute each distinct split once, so an impossible split (too few classes, unknown names) fails early."""
    seen = set()
    for cell in cells:
        key = (data_key(cell), json.dumps(asdict(cell.split), sort_keys=True))
        if key not in seen:
            seen.add(key)
            split_for(cell, data[data_key(cell)])


def _build(registry, family: str, name: str, args: dict, *positional):
    try:
        return registry.get(name).factory(*positional, **args)
    except UserError:
        raise
    except Exception as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items()) or "no arguments"
        raise UserError(f"{family} {name!r} ({shown}) cannot be built: {type(exc).__name__}: {exc} — fix [{family}.{json.dumps(name)}] in the grid") from None


def load_datasets(cells: list[Cell], console: Console) -> dict[str, LabelledImages]:
    """Every dataset the grid needs, loaded before any training so a bad root fails in seconds."""
    data = {}
    for cell in cells:
        key = data_key(cell)
        if key not in data:
            with console.status(f"loading dataset {cell.dataset}"):
                data[key] = DATASETS.get(cell.dataset).factory(**cell.dataset_args)
    return data


def _warner(console: Console):
    def warn(message: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    return warn


def _progress_hook(progress: Progress, task):
    def hook(steps=None, info=""):
        progress.update(task, completed=steps, info=info)

    return hook


def run_cell(cell: Cell, grid_name: str, data: LabelledImages, caches: dict, device: torch.device,
             cell_timeout: float | None = None, report=lambda steps=None, info="": None, feature_cache: bool = True,
             warn=print) -> dict:
    """Train and evaluate one cell; any failure becomes the row's status, never an exception."""
    row = _row_start(cell, grid_name)
    deadline = time.monotonic() + cell_timeout if cell_timeout else None
    try:
        row.update(train_and_evaluate(cell, data, caches, device, report, deadline, feature_cache, warn))
        if "diverged" in row:  # non-finite embeddings: say why in the row's error
            row["error"] = row.pop("diverged")
        row["status"] = "diverged" if row["train"]["stopped_by"] == "diverged" or "error" in row else "ok"
    except CellTimeout as exc:
        row.update(status="timeout", error=str(exc))
    except (torch.OutOfMemoryError, MemoryError) as exc:
        row.update(status="oom", error=f"{type(exc).__name__}: {exc}"[:2000])
    except Exception as exc:  # one broken cell must not cost the rest of the grid
        row.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc(limit=8))
    return _row_end(row, device, row.get("precision", cell.train.precision))


def failed_row(cell: Cell, grid_name: str, device: torch.device, status: str, error: str) -> dict:
    return _row_end({**_row_start(cell, grid_name), "status": status, "error": error}, device, cell.train.precision)


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


def _summary(row: dict) -> str:
    if row["status"] != "ok":
        return row["status"]
    return f"auc {row['metrics']['verification_roc_auc']:.3f}, r@1 {row['metrics']['recall_at_1']:.3f}"

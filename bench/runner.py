"""Runs a grid: load data, then for each cell build → train under the budget → evaluate → append a row."""
from __future__ import annotations

import json
import platform
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.config import Cell, Grid
from bench.datasets import split_classes
from bench.errors import UserError
from bench.metrics import evaluate
from bench.plugins import BACKBONES, DATASETS, LOSSES, LabelledImages
from bench.preprocess import fit_to_spec
from bench.results import SCHEMA, ResultsWriter, read_rows
from bench.train import embed, train


def run_grid(grid: Grid, results_path: Path, device: str = "auto", console: Console | None = None) -> list[dict]:
    """Run every cell of `grid` not already in `results_path`; returns all rows of this grid's cells."""
    console = console or Console(stderr=True)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    todo = _todo(grid, results_path)
    data = load_datasets(todo, console)  # before the results file is touched: bad data leaves nothing behind
    if not todo:
        console.print("every cell already has a row; nothing to run")
    with ResultsWriter(results_path) as writer:  # exclusive: a second `bench run` on this file fails here
        todo = _todo(grid, results_path)
        fitted: dict[tuple, tuple[torch.Tensor, dict]] = {}
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=console, transient=False) as progress:
            grid_task = progress.add_task(f"grid {grid.name}", total=len(grid.cells), completed=len(grid.cells) - len(todo), info="")
            for cell in todo:
                row = run_cell(cell, grid.name, data[_data_key(cell)], fitted, dev, progress)
                writer.append(row)
                progress.update(grid_task, advance=1, info=f"last: {cell.backbone} {cell.loss} → {_summary(row)}")
    ids = {c.cell_id for c in grid.cells}
    return [r for r in read_rows(results_path) if r["cell_id"] in ids]


def _todo(grid: Grid, results_path: Path) -> list[Cell]:
    done = {r["cell_id"] for r in read_rows(results_path)}
    return [c for c in grid.cells if c.cell_id not in done]


def _data_key(cell: Cell) -> str:
    return json.dumps([cell.dataset, cell.dataset_args], sort_keys=True)


def load_datasets(cells: list[Cell], console: Console) -> dict[str, LabelledImages]:
    """Every dataset the grid needs, loaded before any training so a bad root fails in seconds."""
    data = {}
    for cell in cells:
        key = _data_key(cell)
        if key not in data:
            with console.status(f"loading dataset {cell.dataset}"):
                data[key] = DATASETS.get(cell.dataset).factory(**cell.dataset_args)
    return data


def run_cell(cell: Cell, grid_name: str, data: LabelledImages, fitted: dict, device: torch.device, progress: Progress) -> dict:
    row = {"schema": SCHEMA, "grid": grid_name, "cell_id": cell.cell_id, "config": cell.to_dict()}
    task = progress.add_task(f"  {cell.backbone} · {cell.loss} · seed {cell.seed}", total=cell.budget.max_steps, info="building")
    try:
        row.update(_train_and_evaluate(cell, data, fitted, device, progress, task))
        row["status"] = "diverged" if row["train"]["stopped_by"] == "diverged" else "ok"
    except UserError:
        raise
    except Exception as exc:  # one broken cell must not cost the rest of the grid
        row.update(status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8))
    row["env"] = environment(device, row.get("precision", cell.train.precision))
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    progress.remove_task(task)
    return row


def _train_and_evaluate(cell: Cell, data: LabelledImages, fitted: dict, device: torch.device, progress: Progress, task) -> dict:
    torch.manual_seed(cell.seed)
    np.random.seed(cell.seed)
    backbone = BACKBONES.get(cell.backbone).factory(**cell.backbone_args)
    loss_fn = LOSSES.get(cell.loss).factory(backbone.embed_dim, **cell.loss_args)
    bf16 = use_bf16(cell.train.precision, device)
    backbone.to(device)
    loss_fn.to(device)
    if bf16 and device.type == "cpu":
        backbone.to(memory_format=torch.channels_last)
    spec = backbone.input_spec
    key = (_data_key(cell), tuple(spec.size), spec.channels)
    if key not in fitted:  # resize/convert once per dataset and input shape, shared by all cells
        fitted[key] = fit_to_spec(data.images, spec)
    images, conversion = fitted[key]
    labels = torch.from_numpy(data.labels)
    train_idx, test_idx, split = split_classes(data, cell.split.test_fraction, cell.split.seed)

    def on_step(steps, samples, seconds, loss):
        progress.update(task, completed=steps, info=f"loss {loss:.4f}  {samples / max(seconds, 1e-9):.0f} img/s")

    result = train(backbone, loss_fn, images[train_idx], labels[train_idx], cell.train, cell.budget, cell.seed, device, bf16, on_step)
    progress.update(task, info="evaluating")
    start = time.perf_counter()
    embeddings = embed(backbone, images[test_idx], cell.eval.batch_size, device, bf16)
    metrics = evaluate(embeddings, labels[test_idx], loss_fn.distance, cell.eval.recall_k, cell.eval.max_pairs, cell.split.seed)
    return {
        "metrics": metrics,
        "train": asdict(result),
        "eval_seconds": round(time.perf_counter() - start, 3),
        "split": split,
        "input": {"size": list(spec.size), "channels": spec.channels, "mean": list(spec.mean), "std": list(spec.std), **conversion},
        "model": {
            "embed_dim": backbone.embed_dim,
            "backbone_params": sum(p.numel() for p in backbone.parameters()),
            "trainable_params": sum(p.numel() for m in (backbone, loss_fn) for p in m.parameters() if p.requires_grad),
        },
        "precision": "bf16" if bf16 else "fp32",
    }


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # On CPUs without AMX or AVX512-BF16 autocast bf16 is emulated and many times slower than fp32.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


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

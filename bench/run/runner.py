"""Runs a grid: load data, then for each cell build → train under the budget → evaluate → append a row."""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from bench.config import Cell, Grid
from bench.errors import UserError
from bench.eval.knn import DISTANCES
from bench.eval.metrics import evaluate
from bench.items import write_items
from bench.plugins import BACKBONES, DATASETS, LOSSES, BatchKind, InputSpec, LabelledImages
from bench.results import ResultsWriter, contended, latest_rows, read_rows, require_current_schema
from bench.run.adapt import freeze
from bench.run.cell import data_key, split_for
from bench.run.executors import Job, LocalWorkers, RayCells, SubmititCells, in_process, resolve_device
from bench.run.progress import GridProgress
from bench.run.rows import speed_difference, this_run_speed
from bench.run.sampling import min_batch_size
from bench.run.study import Search, chosen_by_another
from bench.schema import FAILED, Row

BATCH_KINDS = typing.get_args(BatchKind)  # what the Loss Protocol declares


@dataclass(frozen=True)
class RunOptions:
    """How to run a grid; none of this is part of a cell's identity."""

    device: str = "auto"  # auto | cpu | cuda
    rerun: str = "none"  # none: skip cells with a row; failed: also rerun error/oom/timeout; contended: rows a busy neighbour starved; all: every cell
    cell_timeout: float | None = None  # hard wall-clock limit per cell (build + train + evaluate)
    isolate: bool = False  # each cell in a child process, killed when it outlives cell_timeout
    plugins: tuple[str, ...] = ()  # --plugin modules, imported again in child processes
    feature_cache: bool = True  # frozen, unaugmented backbones embed each image once per grid
    executor: str = "local"  # local | ray | slurm | submitit-local
    workers: int = 0  # local: worker processes (0: this process); submitit-local: jobs at once
    threads: int | None = None  # torch threads per worker (default: cores / workers)
    ray_address: str | None = None  # a running cluster ("auto", "ray://host:10001"), else a local one
    cache_dir: str | None = None  # frozen features and fitted images on disk; None: in memory only


def make_executor(options: RunOptions, results_path: Path):
    """The executor, built before anything is loaded or written, so a missing engine is a one-line error."""
    if options.executor == "ray":
        return RayCells(options.ray_address)
    if options.executor in ("slurm", "submitit-local"):
        return SubmititCells(options.executor == "submitit-local", results_path.parent / "submitit", max(1, options.workers))
    return LocalWorkers(options.workers) if options.workers > 0 else None


def run_grid(
    grid: Grid, results_path: Path, options: RunOptions = RunOptions(), console: Console | None = None, on_row: Callable[[dict], None] | None = None
) -> list[dict]:
    """Run the cells of `grid` that `options.rerun` selects; returns the latest row of every cell of the grid.
    `on_row(row)` is called in this process right after each row is written (`bench run --mlflow` logs it).
    With [search] (bench.run.study): first each configuration's trials, scored on validation, then its best
    trial's options on every seed, scored on test; the returned rows are those finals, the untrained baselines
    and (search.defaults) the configurations at their grid values, never the trials."""
    console = console or Console(stderr=True)
    executor = make_executor(options, results_path)
    search = Search(grid) if grid.search else None  # Optuna missing: a one-line error before anything is loaded
    if options.threads and executor is None:  # in this process; workers set their own
        torch.set_num_threads(options.threads)
    existing = read_rows(results_path)
    require_current_schema(existing, results_path)
    plain = list(grid.cells) if search is None else search.plain + ([c for s in search.studies for c in s.cells] if grid.search.defaults else [])
    todo = select_cells(plain, existing, options.rerun)
    data = preflight(todo + (search.preflight_cells() if search else []), console)  # before the results file is touched
    # the device as asked: each cell's process resolves it (a Ray or Slurm node may have a GPU this one lacks)
    job = Job(
        grid.name,
        options.device,
        options.cell_timeout,
        options.feature_cache,
        options.plugins,
        options.cache_dir,
        options.threads,
        grid.resources,
        grid.slurm,
        str(results_path.parent.resolve() / f"{results_path.stem}_checkpoints"),
    )
    try:
        with ResultsWriter(results_path) as writer:  # exclusive: a second `bench run` on this file fails here
            record = [] if options.rerun == "all" else read_rows(results_path)  # rows may have landed since; a search resumes from them
            todo = select_cells(plain, record, options.rerun)
            where = options.executor if options.executor != "local" else (f"{options.workers} local worker(s)" if executor else "this process")
            pending = len(todo) + (search.pending(record) if search else 0)
            total = len(plain) + (search.planned() if search else 0)
            console.print(f"grid {grid.name}: {pending} of {total} cells{' and trials' if search else ''} to run on {where} → {results_path}", highlight=False)
            if not pending:
                console.print("every cell already has a row; nothing to run (use --rerun failed|contended|all to run again)")
            elif difference := speed_difference(
                list(latest_rows(record).values()),
                grid.name,
                this_run_speed(
                    options.executor, options.workers, options.threads, grid.resources, resolve_device(options.device) if options.executor == "local" else None
                ),
            ):
                console.print(f"[yellow]warning:[/] {escape(difference)}", highlight=False, soft_wrap=True)
            finals: list[Cell] = []
            keep_items = items_keeper(results_path, _warner(console))
            with GridProgress(console, grid.name, total, pending) as progress:

                def run(cells: list[Cell], records: dict | None = None) -> None:
                    events = (
                        in_process(cells, data, job, options.isolate, progress, _warner(console))
                        if executor is None
                        else executor.run(cells, data, job, progress.tick)
                    )
                    for kind, cell, row in events:
                        if kind == "started":
                            progress.started(cell)
                            continue
                        if records and cell.cell_id in records:  # a final cell: which search chose its options
                            row = {**row, "search": records[cell.cell_id]}
                        row = keep_items(row)
                        if grid.report:  # how the views judge lines ([report]): with the rows, not in the cell's identity
                            row = {**row, "report": grid.report}
                        row = Row.from_dict(row, strict=True, where=f"the row of cell {cell.cell_id}")  # the schema, checked once
                        writer.append(row)  # only the coordinator writes rows, whatever ran the cell
                        record.append(row)
                        if on_row is not None:
                            on_row(row)
                        progress.finished(cell, row)

                if search is not None:
                    finals = run_search(search, run, record, options.rerun, console)
                run(todo)
    finally:
        if hasattr(executor, "close"):
            executor.close()  # local workers outlive each round of trials
    ids = {c.cell_id for c in plain + finals}
    return [r for cid, r in latest_rows(read_rows(results_path)).items() if cid in ids]


def items_keeper(results_path: Path, warn: Callable[[str], None]) -> Callable[[dict], dict]:
    """What the coordinator does with a returned row's per-item outcomes (`_items`, from whichever process ran
    the cell): writes them to the cell's items file and puts the file's entry under "items". A write that fails
    (a full disk, a read-only folder) keeps the row without "items" and warns once per run."""
    failures: list[OSError] = []

    def failed(exc: OSError) -> None:
        if not failures:
            warn(
                f"items not kept: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''} — rows are written without "
                "their per-item outcomes and ROC, so paired comparisons of those cells fall back to seed-level tests and "
                "`bench plot` draws no ROC for them"
            )
        failures.append(exc)

    def keep(row: dict) -> dict:
        items = row.get("_items")
        row = {k: v for k, v in row.items() if k != "_items"}
        if items:
            entry = write_items(results_path, row["cell_id"], items, on_error=failed)
            if entry is not None:
                row["items"] = entry
        return row

    return keep


def run_search(search: Search, run: Callable, record: list[dict], rerun: str, console: Console) -> list[Cell]:
    """Each study's trials in rounds (`record` grows as their rows land, and the next round is asked from it),
    then each study's best options on every seed; returns those final cells."""
    while trials := search.next_trials(record):
        run(trials)
    finals, records, empty = search.final_cells(record)
    for study in empty:
        console.print(
            f"[yellow]warning:[/] study {study}: no trial finished ok, so its configuration has no final cells — see its trial rows' errors", highlight=False
        )
    todo, latest = select_cells(finals, record, rerun), latest_rows(record)
    ids = {c.cell_id for c in todo}  # and a final whose row another study chose (the same options) runs again under this one
    run(todo + [c for c in finals if c.cell_id not in ids and chosen_by_another(latest.get(c.cell_id), records[c.cell_id]["study"])], records)
    return finals


def select_cells(cells: list[Cell], rows: list[Row], rerun: str) -> list[Cell]:
    latest = latest_rows(rows)
    if rerun == "all":
        return list(cells)
    return [
        c
        for c in cells
        if c.cell_id not in latest or (rerun == "failed" and latest[c.cell_id].status in FAILED) or (rerun == "contended" and contended(latest[c.cell_id]))
    ]


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
            _check_plugin(backbone, "backbone", cell.backbone, embed_dim=int, input_spec=InputSpec)
            freeze(backbone, cell.model.freeze, cell.model.unfrozen_stages)
            built[key] = backbone.embed_dim
        loss = _build(LOSSES, "loss", cell.loss, cell.loss_args, built[key])
        _check_plugin(loss, "loss", cell.loss, batch=str, distance=str)
        if loss.batch not in BATCH_KINDS or loss.distance not in DISTANCES:
            raise UserError(
                f"loss {cell.loss!r} declares batch = {loss.batch!r}, distance = {loss.distance!r} — "
                f"batch must be one of {', '.join(BATCH_KINDS)} and distance one of {', '.join(DISTANCES)}; fix the loss plugin"
            )
        need = min_batch_size(loss.batch, cell.train.m_per_class)
        if cell.train.batch_size < need:
            raise UserError(f"train.batch_size = {cell.train.batch_size} is too small for {cell.loss} ({loss.batch} batches) — use at least {need}")


def _check_roles(roles, test_idx, cell: Cell) -> None:
    """With roles, every test image needs one and both roles must be present (queries searched against a gallery)."""
    if roles is None or not (roles[test_idx] != "").any():
        return
    present = set(roles[test_idx].tolist())
    if "" in present or not {"query", "gallery"} <= present:
        raise UserError(
            f"dataset {cell.dataset!r}: test images have roles {sorted(present - {''})}{' and some none' if '' in present else ''} — "
            "give every test image a role, with both query and gallery images (or none at all)"
        )


def _check_plugin(obj, family: str, name: str, **attributes) -> None:
    """A plugin factory must return an nn.Module with the Protocol's attributes, not just anything."""
    if not isinstance(obj, torch.nn.Module):
        raise UserError(f"{family} {name!r} returned {type(obj).__name__}, not a torch.nn.Module — fix the {family} plugin's factory")
    for attr, kind in attributes.items():
        value = getattr(obj, attr, None)
        if not isinstance(value, kind) or (kind is int and value <= 0):
            raise UserError(
                f"{family} {name!r} has {attr} = {value!r}; the {family} Protocol needs {attr} as {'a positive int' if kind is int else kind.__name__} "
                f"(see bench.plugins) — fix the {family} plugin"
            )


def check_splits(cells: list[Cell], data: dict[str, LabelledImages]) -> None:
    """Compute each distinct split once, so an impossible split (too few classes, unknown names) fails early."""
    seen = set()
    for cell in cells:
        key = (
            data_key(cell),
            json.dumps(asdict(cell.split), sort_keys=True),
            cell.train.select,
            cell.eval.episode_group,
            json.dumps(asdict(cell.eval), sort_keys=True) if cell.trial or cell.train.select == "best" else None,
        )
        if key not in seen:
            seen.add(key)
            _, val_idx, test_idx, _ = split_for(cell, data[data_key(cell)])
            attributes = data[data_key(cell)].attributes
            _check_roles(attributes.get("role"), test_idx, cell)
            if cell.eval.episode_group and cell.eval.episode_group not in attributes:
                raise UserError(
                    f"eval.episode_group = {cell.eval.episode_group!r}: dataset {cell.dataset!r} has no such per-image attribute "
                    f"(it has: {', '.join(attributes) or 'none'}) — use one of those or leave episode_group unset"
                )
            if cell.train.select == "best" and not len(val_idx):
                raise UserError(
                    'train.select = "best" picks the curve point best on validation, and this split has no validation classes '
                    '— set split.val_fraction (or val_classes, or folds), or use select = "last"'
                )
            if cell.train.select == "best":  # else the curve points never offer a value, and "best" scores the last weights in silence
                _check_val_metric(
                    cell,
                    data[data_key(cell)],
                    val_idx,
                    cell.eval.select_metric,
                    'eval.select_metric (with train.select = "best")',
                    'choose a metric the validation split alone gives (e.g. "verification_roc_auc"), a larger split.val_fraction, or train.select = "last"',
                )
            if cell.trial is not None:
                _check_search_metric(cell, data[data_key(cell)], val_idx)


def _check_search_metric(cell: Cell, data: LabelledImages, val_idx) -> None:
    """A search scores its trials on validation: the split must have validation classes, and the search metric
    must come out of them."""
    if not len(val_idx):
        raise UserError(
            "[search] scores every trial on validation, and this split has no validation classes "
            "— set split.val_fraction (or val_classes, or split.folds for the Reality Check's cross-validation)"
        )
    _check_val_metric(cell, data, val_idx, cell.trial.metric, "[search] metric", "choose another metric or a larger split.val_fraction")


def _check_val_metric(cell: Cell, data: LabelledImages, val_idx, metric: str, option: str, fix: str) -> None:
    """`metric` must come out of the validation split as a curve point or a trial scores it (the validation
    images alone, queries against the gallery when they have roles): probed once on random embeddings, so
    that e.g. 20-way episodes with fewer validation classes, or a metric that needs a threshold chosen on
    validation, fail here rather than being skipped in silence."""
    probe = probe_metrics(cell, data, val_idx)
    if not isinstance(probe.get(metric), (int, float)) or not math.isfinite(probe[metric]):
        notes = "; ".join(str(v) for k, v in probe.items() if k.endswith("_note"))
        why = f"validation has {len(set(data.labels[val_idx].tolist()))} classes, {len(val_idx)} images" + (f": {notes}" if notes else "")
        if metric not in probe:
            why += "; it is not among the metrics a validation split alone gives"
        raise UserError(f"{option} = {metric!r} cannot be scored on this validation split ({why}) — {fix}")


def probe_metrics(cell: Cell, data: LabelledImages, idx) -> dict:
    """The metrics the evaluator gives on these images (queries against the gallery when they have roles) for random
    embeddings: which figures come out finite and, for those that cannot, the evaluator's own note saying why."""
    labels = torch.from_numpy(data.labels)
    roles = data.attributes.get("role")
    with_roles = roles is not None and (roles[idx] != "").any()
    queries, gallery = (idx[roles[idx] == "query"], idx[roles[idx] == "gallery"]) if with_roles else (idx, None)
    groups = {"groups": data.attributes[cell.eval.episode_group][queries], "group_name": cell.eval.episode_group} if cell.eval.episode_group else {}
    noise = torch.randn(len(data.labels), 8, generator=torch.Generator().manual_seed(0))
    extra = {"gallery": noise[gallery], "gallery_labels": labels[gallery]} if gallery is not None else {}
    return evaluate(noise[queries], labels[queries], "cosine", replace(cell.eval, episodes=min(cell.eval.episodes, 20)), 0, roc_points=0, **groups, **extra)


def predict_nan(cells: list[Cell], data: dict[str, LabelledImages]) -> dict[tuple[str, str], int]:
    """{(metric, the evaluator's note): cells} for the scores that will be NaN on a cell's test split whatever it
    learns (too few test classes for the episodes, no same-class pair, …): what `bench validate` says before a run."""
    from bench.config.metrics import definition

    found: dict[tuple[str, str], int] = {}
    seen: dict[str, list[tuple[str, str]]] = {}
    for cell in cells:
        key = json.dumps([data_key(cell), asdict(cell.split), asdict(cell.eval)], sort_keys=True, default=str)
        if key not in seen:
            _, _, test_idx, _ = split_for(cell, data[data_key(cell)])
            probe = probe_metrics(cell, data[data_key(cell)], test_idx)
            notes = {k: v for k, v in probe.items() if k.endswith("_note")}
            seen[key] = [
                (m, _note_for(m, notes))
                for m, v in probe.items()
                if (d := definition(m)) is not None and d.direction != "none" and isinstance(v, float) and math.isnan(v)
            ]
        for m, note in seen[key]:
            found[(m, note)] = found.get((m, note), 0) + 1
    return found


def _note_for(metric: str, notes: dict) -> str:
    """The evaluator's note that explains a NaN `metric` (the few-shot within-group note for its metrics, …)."""
    family = (
        ("few_shot_within_note" if "_within_" in metric else "few_shot_note")
        if metric.startswith("few_shot_")
        else "verification_note"
        if metric.startswith("verification_")
        else "retrieval_note"
    )
    return str(notes.get(family, "no note"))


def _build(registry, family: str, name: str, args: dict, *positional):
    try:
        return registry.get(name).factory(*positional, **args)
    except UserError:
        raise
    except Exception as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items()) or "no arguments"
        message = " ".join(str(exc).split())  # one line, whatever the plugin raised
        raise UserError(
            f"{family} {name!r} ({shown}) cannot be built: {type(exc).__name__}: {message} — fix [{family}.{json.dumps(name)}] in the grid, or the plugin"
        ) from None


def load_datasets(cells: list[Cell], console: Console) -> dict[str, LabelledImages]:
    """Every dataset the grid needs, loaded before any training so a bad root fails in seconds."""
    data = {}
    for cell in cells:
        key = data_key(cell)
        if key not in data:
            with console.status(f"loading dataset {cell.dataset}"):
                data[key] = _build(DATASETS, "dataset", cell.dataset, cell.dataset_args)
            if not isinstance(data[key], LabelledImages):
                raise UserError(f"dataset {cell.dataset!r} returned {type(data[key]).__name__}, not bench.plugins.LabelledImages — fix the dataset plugin")
    return data


def _warner(console: Console):
    def warn(message: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    return warn

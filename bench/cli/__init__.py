"""`bench` command line: run a grid, validate it, list plugins, print a leaderboard."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.errors import UserError, check_output_file, finite_float, positive_float, write_atomic

console = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    # Warnings for users (a skipped plugin, a torn results line) are one line, not Python's two with source.
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for module in args.plugin or []:
            _import_plugin(module)
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: finished cells are saved; rerun the same command to continue")
        return 130


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line like every other user error (exit code 2)."""

    def error(self, message: str):
        console.print(f"[bold red]error:[/] {escape(self.prog)}: {escape(message)} — see `{escape(self.prog)} --help`", highlight=False, soft_wrap=True)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bench", description="metric-bench: deep metric learning under one fixed budget")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--plugin", action="append", metavar="MODULE", help="import MODULE first (a plugin under development); repeatable")
    parser.set_defaults(debug=False, plugin=None)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="train and evaluate every cell of a grid")
    run.add_argument("--grid", required=True, type=Path, help="grid TOML file")
    run.add_argument("--results", type=Path, help="results JSONL (default results/<grid name>.jsonl)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--metric", help="leaderboard sort metric (default: the grid's [report] metric, else the [search] metric, else verification_roc_auc)")
    run.add_argument(
        "--rerun",
        default="none",
        choices=["none", "failed", "contended", "all"],
        help="none (default): skip cells that have a row; failed: rerun cells whose row is error/oom/timeout; contended: "
        "rerun cells whose max_seconds clock ran while a busy neighbour held the cores (the leaderboard marks them); "
        "all: rerun every cell",
    )
    run.add_argument("--cell-timeout", type=finite_float, metavar="SECONDS", help="hard wall-clock limit per cell; the cell is recorded as timeout")
    run.add_argument("--isolate", action="store_true", help="run each cell in its own process (kills hung plugins at --cell-timeout)")
    run.add_argument(
        "--no-feature-cache", dest="feature_cache", action="store_false", help="recompute frozen backbones' features in every cell (for measuring the cache)"
    )
    run.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray", "slurm", "submitit-local"],
        help="what runs the cells: local (this process, or --workers processes), a Ray cluster, Slurm through submitit, or submitit's local executor",
    )
    run.add_argument("--workers", type=int, default=0, metavar="N", help="local: N worker processes (default 0: this process); submitit-local: N jobs at once")
    run.add_argument("--threads", type=int, metavar="T", help="torch threads per worker (default: cores / workers; [resources] cpus on Ray and Slurm)")
    run.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (auto, ray://host:10001); default: start a local one")
    run.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="frozen features and fitted images on disk, shared by workers and later runs (default: <results folder>/cache)",
    )
    run.add_argument("--no-disk-cache", dest="disk_cache", action="store_false", help="keep caches in memory only")
    run.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="URI",
        help="also log each cell to MLflow as its row is written (default URI: sqlite:///<results folder>/mlflow.db; "
        "pip install 'metric-bench[mlflow]'), as `bench export mlflow` does",
    )
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", parents=[common], help="check a grid and print its cells, without training")
    val.add_argument("grid", type=Path)
    val.set_defaults(func=cmd_validate)

    ls = sub.add_parser("ls", parents=[common], help="list registered backbones, losses or datasets")
    ls.add_argument("family", choices=["backbones", "losses", "datasets"])
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'timm/resnet*'")
    ls.set_defaults(func=cmd_ls)

    board = sub.add_parser("leaderboard", parents=[common], help="print and write the markdown leaderboard of one or more results files")
    board.add_argument(
        "results",
        type=Path,
        nargs="+",
        metavar="RESULTS.jsonl",
        help="results files, merged into one table by cell_id: a later file's row for a cell supersedes an earlier file's",
    )
    board.add_argument(
        "--metric", help="sort metric (default: the rows' [report] metric, else the metric of a [search] whose rows these are, else verification_roc_auc)"
    )
    board.add_argument("--out", type=Path, help="markdown file (default with one results file: it with .md; required with several)")
    board.add_argument("--csv", type=Path, metavar="FILE.csv", help="also write the leaderboard's full table (every column, unrounded) as CSV")
    board.add_argument(
        "--equivalence",
        type=positive_float,
        metavar="DELTA",
        help="call a line 'equivalent' to the best when its simultaneous interval lies inside ±DELTA (default: the grid's [report] equivalence, else never)",
    )
    board.add_argument(
        "--target", type=positive_float, metavar="DIFF", help="the difference 'seeds to detect' is asked of (default: the grid's [report] target, else 0.02)"
    )
    board.set_defaults(func=cmd_leaderboard)

    from bench.cli.effects import add_parser as add_effects_parser
    from bench.cli.evaluate import add_parser as add_evaluate_parser
    from bench.cli.export import add_parser as add_export_parser

    add_evaluate_parser(sub, common)
    from bench.cli.model import add_parser as add_model_parsers
    from bench.cli.plot import add_parser as add_plot_parser

    add_plot_parser(sub, common)
    add_effects_parser(sub, common)
    add_export_parser(sub, common)
    from bench.cli.report import add_parser as add_report_parser

    add_report_parser(sub, common)

    add_model_parsers(sub, common)
    return parser


def cmd_run(args) -> int:
    from bench.grid import load_grid
    from bench.run.clock import quiet_threads, seconds_bound

    if seconds_bound(args.grid):  # before torch loads: OpenMP's idle threads sleep, so a busy neighbour costs its share
        quiet_threads()

    if args.cell_timeout is not None and args.cell_timeout <= 0:
        raise UserError(f"--cell-timeout {args.cell_timeout:g} must be a positive number of seconds")
    from bench.config.metrics import definition

    if args.metric is not None and ((d := definition(args.metric)) is None or d.direction == "none"):
        raise UserError(
            f"--metric {args.metric!r} is not a score a leaderboard can sort by — see docs/metrics.md (e.g. verification_roc_auc, recall_at_1, few_shot_20way_1shot_accuracy)"
        )
    grid = load_grid(args.grid)
    from bench.run.runner import RunOptions, run_grid  # after the grid's checks: it imports torch and the training code

    metric = args.metric or grid.report.get("metric") or (grid.search.metric if grid.search else "verification_roc_auc")
    results = args.results or Path("results") / f"{grid.name}.jsonl"
    check_output_file(results, "--results")  # before any training: the rows and the leaderboard must land
    check_output_file(results.with_suffix(".md"), "--results (its leaderboard .md)")
    if args.device == "cuda" and args.executor not in ("ray", "slurm"):  # Ray and Slurm check it on the node that runs the cell
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: this torch sees no CUDA device — use --device cpu (or auto)")
    if args.workers < 0 or (args.threads is not None and args.threads < 1):
        raise UserError(f"--workers {args.workers} / --threads {args.threads}: workers must be 0 (this process) or more, threads at least 1")
    if args.isolate and (args.workers or args.executor != "local"):
        raise UserError("--isolate runs each cell in its own process in this one; workers, Ray and Slurm already isolate cells — drop --isolate")
    cache_dir = (args.cache_dir or results.parent / "cache") if args.disk_cache else None
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise UserError(f"{cache_dir}: is not a folder — give a folder to --cache-dir (or --no-disk-cache)")
    tracker = None
    if args.mlflow is not None:  # mlflow missing or a bad store: a one-line error before any training
        from bench.export.live import RunLogger

        tracker = RunLogger(args.mlflow, results, console)
    options = RunOptions(
        args.device,
        args.rerun,
        args.cell_timeout,
        args.isolate,
        tuple(args.plugin or ()),
        args.feature_cache,
        args.executor,
        args.workers,
        args.threads,
        args.ray_address,
        str(cache_dir) if cache_dir else None,
    )
    rows = run_grid(grid, results, options, console=console, on_row=tracker.log if tracker else None)
    failed = [r for r in rows if not r.ok]
    for r in failed:
        console.print(
            f"[yellow]cell {r.cell_id} ({escape(r.config['backbone'])} · {escape(r.config['loss'])}): {r.status}[/] {escape(r.error or '')}",
            highlight=False,
        )
    _write_leaderboard(rows, metric, results.with_suffix(".md"), title=grid.name, sources=[results])
    if tracker:
        tracker.finish(metric)  # the parent runs: each line's mean ± std and marks, as the leaderboard just written
    return _run_exit_code(grid, rows, results)


def _run_exit_code(grid, rows: list, results: Path) -> int:
    """1 when a cell of the grid (its latest row, run now or before) ended error, oom or timeout, or a searched
    configuration has no result because none of its trials completed; else 0. `diverged` and `pruned` are results
    of a configuration, and a search's failed trials are part of its search (counted in its finals' rows)."""
    from bench.results import CONTENDED, contended
    from bench.schema import FAILED

    if busy := sum(map(contended, rows)):  # a warning, not a failure: the rows are kept and marked
        console.print(
            f"[yellow]{busy} of {len(rows)} cells ran their max_seconds clock while their threads waited for a core "
            f"≥ {CONTENDED:.0%} of the time (another process held the cores): marked contended in the leaderboard — "
            "`bench run --rerun contended` runs them again on a quieter machine[/]",
            highlight=False,
            soft_wrap=True,
        )
    failed = sum(r.status in FAILED for r in rows)
    empty = []
    if grid.search is not None:
        from bench.results import read_rows
        from bench.run.study import Search

        empty = Search(grid).final_cells(read_rows(results))[2]
    if not failed and not empty:
        return 0
    console.print(
        f"[bold red]{failed} of {len(rows)} cells failed (error, oom or timeout)"
        + (f"; {len(empty)} searched configuration(s) have no completed trial" if empty else "")
        + "[/] — exit code 1; `bench run --rerun failed` runs the failed cells again",
        highlight=False,
        soft_wrap=True,
    )
    return 1


def cmd_validate(args) -> int:
    from bench.grid import load_grid

    grid = load_grid(args.grid)
    from bench.report.lines import flatten  # after the grid's own checks, as in `bench run`
    from bench.run.runner import predict_nan, preflight

    search = None
    if grid.search is not None:
        from bench.run.study import Search

        search = Search(grid)
    data = preflight(list(grid.cells) + (search.preflight_cells() if search else []), console)  # the same checks `bench run` makes before its first step
    flat = [flatten({k: v for k, v in c.to_dict().items()}) for c in grid.cells]
    varying = [k for k in dict.fromkeys(k for f in flat for k in f) if len({json.dumps(f.get(k)) for f in flat}) > 1]
    columns = ["backbone", "loss", "dataset", "seed"] + [k for k in varying if k not in ("backbone", "loss", "dataset", "seed")]
    table = Table(title=f"{grid.name}: {len(grid.cells)} cells ({grid.excluded} excluded); every check `bench run` makes passed")
    cells = [[cell.cell_id, *(str(f.get(k, "—")) for k in columns)] for cell, f in zip(grid.cells, flat)]
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(("cell_id", *columns))]
    for col, _width in zip(("cell_id", *columns), widths):
        table.add_column(col, min_width=len(col), no_wrap=True)  # whole option names: a truncated one says nothing
    for c in cells:
        table.add_row(*map(escape, c))
    Console(width=max(Console().width, 160, sum(w + 3 for w in widths) + 1)).print(table)
    for (metric, note), count in predict_nan(list(grid.cells), data).items():  # what the run will report as NaN, and why
        console.print(
            f"[yellow]note:[/] {metric} will be NaN in {count} of {len(grid.cells)} cells whatever they learn: {escape(note)}", highlight=False, soft_wrap=True
        )
    if search is not None:
        _print_search(search)
    return 0


def _print_search(search) -> None:
    from bench.config.space import TRIAL_SEED

    spec = search.spec
    table = Table(
        title=escape(
            f"[search]: {len(search.studies)} configurations × {spec.trials} trials ({spec.sampler}, seed {spec.seed}; "
            f"trained on seed {TRIAL_SEED}, which no final cell has), "
            f"each scored on validation {spec.metric}; then each best on every seed, scored on test"
            + (f"; {len(search.plain)} cells searched in nothing (run as they are)" if search.plain else "")
        )
    )
    for col in ("study", "backbone", "loss", "seeds", "searched"):
        table.add_column(col)
    for conf in search.studies:
        table.add_row(
            conf.study,
            escape(conf.base.backbone),
            escape(conf.base.loss),
            str(len(conf.cells)),
            escape("; ".join(f"{d.option} {d.describe()}" for d in conf.dims)),
        )
    Console(width=max(Console().width, 160)).print(table)


def cmd_ls(args) -> int:
    from bench.builtins import load_builtins
    from bench.plugins import REGISTRIES

    load_builtins()
    found = REGISTRIES[args.family].list(args.pattern)
    if not found:
        raise UserError(f"no {args.family} match {args.pattern!r} — try `bench ls {args.family}` for all names")
    table = Table(show_header=True, box=None)
    table.add_column(args.family[:-1] if args.family != "losses" else "loss")
    table.add_column("from")
    for name, source in found:
        table.add_row(name, source)
    Console().print(table)
    return 0


def cmd_leaderboard(args) -> int:
    from bench.results import read_results

    if len(args.results) > 1 and args.out is None:
        raise UserError(f"{len(args.results)} results files need --out FILE.md — the merged leaderboard belongs to none of them")
    out = args.out or args.results[0].with_suffix(".md")
    rows = read_results(args.results)  # a missing file is the first error: nothing is written before the checks below
    check_output_file(out, "--out")
    if args.csv:
        check_output_file(args.csv, "--csv")
    if not rows:
        raise UserError(f"{', '.join(map(str, args.results))}: holds no result rows yet — run the grid first")
    title = args.results[0].stem if len(args.results) == 1 else " + ".join(p.stem for p in args.results)
    from bench.report.table import default_metric

    _write_leaderboard(
        rows, args.metric or default_metric(rows), out, title=title, csv=args.csv, sources=args.results, equivalence=args.equivalence, target=args.target
    )  # a search file: its metric, as `bench run`
    return 0


def _write_leaderboard(
    rows: list[dict],
    metric: str,
    out: Path,
    title: str,
    csv: Path | None = None,
    sources: list[Path] = (),
    equivalence: float | None = None,
    target: float | None = None,
) -> None:
    """The markdown (the table, the cells that are not ok, links to `bench plot`'s PNGs when they exist
    in `<out stem>_plots/` beside it) and, with `csv`, the frame as CSV; nothing is written on a bad metric.
    The rows' per-item files are read from beside `sources` (the results files), for paired comparisons."""
    from bench.report.leaderboard import failures, markdown, plot_links
    from bench.report.plots import figure_files
    from bench.report.rows import items_loader
    from bench.report.table import csv_frame, table

    frame = table(rows, metric, items_loader(sources) if sources else None, equivalence, target)  # an unknown or direction-less --metric is a UserError
    plots = out.parent / f"{out.stem}_plots"
    pngs = [f"{plots.name}/{p.name}" for p in figure_files(plots)]
    text = "\n".join(part for part in (markdown(frame, metric, title), failures(rows), plot_links(pngs)) if part)
    for path in (out, csv) if csv else (out,):
        path.parent.mkdir(parents=True, exist_ok=True)  # check_output_file allowed folders that do not exist yet
    write_atomic(out, text.encode(), "--out")  # never half a leaderboard
    if csv:
        write_atomic(csv, csv_frame(frame).to_csv(index=False).encode(), "--csv")
    print(text)
    console.print(f"leaderboard written to {out}" + (f" and {csv}" if csv else ""), highlight=False)


def _import_plugin(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:
        raise UserError(f"--plugin {module}: import failed ({type(exc).__name__}: {exc}) — check the module name and that it is on PYTHONPATH") from None


if __name__ == "__main__":
    sys.exit(main())

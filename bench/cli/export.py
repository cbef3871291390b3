"""`bench export mlflow RESULTS.jsonl ...`: results files into an MLflow tracking store (bench.export.mlflow), and
the logger behind `bench run --mlflow`, which logs each cell as its row is written."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench.errors import UserError

MERGE = "several files are merged by cell_id: a later file's row for a cell supersedes an earlier file's"
ARTIFACTS = ("log", "copy", "link", "none")  # bench.export.mlflow_store.ARTIFACTS, named here so `bench --help` imports no pandas


def add_parser(sub, common) -> None:
    """Register `export mlflow` on the `bench` subparsers; `common` holds --debug and --plugin."""
    export = sub.add_parser("export", help="export results files to another tool: `bench export mlflow`")
    targets = export.add_subparsers(required=True, metavar="TARGET")
    p = targets.add_parser(
        "mlflow",
        parents=[common],
        help="log results files as MLflow runs (pip install 'metric-bench[mlflow]')",
        description="One parent run per leaderboard line (mean and std of each metric over its seeds, and the "
        "leaderboard's marks as tags) or per search study, and one nested child run per cell (its "
        "varying options and the evaluation's sizes as params, its scores as metrics, its learning curve "
        "by training step, its config and row as artifacts). Exporting again adds only new cells and "
        "replaces rerun ones.",
    )
    p.add_argument("results", type=Path, nargs="*", metavar="RESULTS.jsonl", help=f"results files; {MERGE}")
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="the MLflow store (default: sqlite:///<folder of the first results file>/mlflow.db; also a server, http://HOST:PORT)",
    )
    p.add_argument("--experiment", metavar="NAME", help="the MLflow experiment (default: the results file's stem; several files: their stems joined by ' + ')")
    p.add_argument(
        "--artifacts",
        default="log",
        choices=ARTIFACTS,
        help="log (default): each cell's config.json and row.json, and each line's line.json and its group's `bench plot` "
        "PNGs, into the store's artifacts, and a tag with the checkpoint's path; copy: the checkpoints too; "
        "link: tags with the checkpoint's and plots' paths only; none: nothing",
    )
    p.add_argument("--metric", help="the leaderboard's sort metric, which the parents' marks are on (default: as `bench leaderboard`)")
    p.add_argument(
        "--check",
        action="store_true",
        help="log nothing: say which schema the store has, which mlflow-skinny wrote it, "
        "whether this one reads it, and the `pip install 'mlflow>=X'` a server that reads it needs",
    )
    p.set_defaults(func=cmd_mlflow)


def cmd_mlflow(args: argparse.Namespace) -> int:
    from bench.export import mlflow_access as access

    access.require_mlflow()  # first: without it nothing else is worth checking
    if args.check:
        if not args.results and not args.tracking_uri:
            raise UserError("--check: give the store with --tracking-uri URI, or RESULTS.jsonl to check the one beside it")
        print("\n".join(access.schema_report(access.store_uri(args.tracking_uri, args.results[0] if args.results else Path()))))
        return 0
    if not args.results:
        raise UserError("bench export mlflow: give the results files to export (RESULTS.jsonl ...), or --check")
    return _export(args)


def _export(args: argparse.Namespace) -> int:
    from bench.export import mlflow
    from bench.export.live import plots_folder
    from bench.export.mlflow_access import reader_install, store_uri
    from bench.export.mlflow_store import Store
    from bench.report.rows import items_loader
    from bench.report.table import default_metric
    from bench.results import read_results

    rows = read_results(args.results)  # a missing file is a UserError
    files = ", ".join(map(str, args.results))
    if not rows:
        raise UserError(f"{files}: holds no result rows yet — run the grid first")
    uri = store_uri(args.tracking_uri, args.results[0])
    experiment = args.experiment if args.experiment is not None else " + ".join(p.stem for p in args.results)
    if not experiment.strip() or len(experiment) > 500:
        raise UserError(f"--experiment {experiment[:60]!r}: an experiment name needs 1 to 500 characters — give another --experiment")
    metric = args.metric or default_metric(rows)
    parents = mlflow.plan(rows, metric, items_loader(args.results))  # a bad --metric fails here, before the store is created
    store = Store(uri, experiment, args.artifacts, tuple(p.parent for p in args.results), plots_folder(args.results[0]))
    counts = store.export(rows, parents, metric)
    print(
        f"{sum(counts[k] for k in ('added', 'replaced', 'kept'))} cells in MLflow experiment {experiment!r} at {uri}: "
        f"{counts['added']} added, {counts['replaced']} replaced (rerun), {counts['kept']} already there; {counts['parents']} parent runs"
    )
    Console(stderr=True).print(
        f"view them: mlflow ui --backend-store-uri {escape(uri)}  (the UI comes with {reader_install()})", highlight=False, soft_wrap=True
    )
    return 0

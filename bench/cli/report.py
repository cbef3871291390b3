"""`bench report RESULTS.jsonl ... --out report.html`: one self-contained HTML page of results files (the
leaderboard as sortable tables, effects, plots, failures, quality against cost; bench.report.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import UserError, check_target, write_atomic

MERGE = "several files are merged by cell_id: a later file's row for a cell supersedes an earlier file's"


def add_parser(sub, common) -> None:
    """Register `report` on the `bench` subparsers; `common` holds --debug and --plugin."""
    p = sub.add_parser(
        "report",
        parents=[common],
        help="write one self-contained HTML page of results files",
        description="One HTML file with nothing loaded from the network: the grid, environment and budget; "
        "the leaderboard per comparison group as tables sortable by any column, with its marks "
        "and verdicts; factor effects (with statsmodels: pip install 'metric-bench[stats]'); "
        "ROC, recall@k and learning-curve plots (with matplotlib: pip install "
        "'metric-bench[plot]'); the cells that did not finish; and each line's metric against "
        "its training cost with the Pareto front.",
    )
    p.add_argument("results", type=Path, nargs="+", metavar="RESULTS.jsonl", help=f"results files; {MERGE}")
    p.add_argument(
        "--out", type=Path, metavar="FILE.html", help="the page (default with one results file: it with .html; required with several); its folder must exist"
    )
    p.add_argument(
        "--metric",
        help="ranks the lines (default: the rows' [report] metric, else a search file's search metric, else verification_roc_auc, as `bench leaderboard`)",
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    if len(args.results) > 1 and args.out is None:
        raise UserError(f"{len(args.results)} results files need --out FILE.html — the merged report belongs to none of them")
    out = args.out or args.results[0].with_suffix(".html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: a report is an HTML page — give a file name ending in .html")
    from bench.results import read_results

    rows = read_results(args.results)  # a missing file is a UserError
    if not rows:
        raise UserError(f"{', '.join(map(str, args.results))}: holds no result rows yet — run the grid first")
    check_target(out, "--out")
    from bench.report.html import page
    from bench.report.rows import items_loader
    from bench.report.table import default_metric

    title = " + ".join(p.stem for p in args.results)
    text = page(rows, args.metric or default_metric(rows), title, [str(p) for p in args.results], items_loader(args.results))
    write_atomic(out, text.encode(), "--out")  # through a temporary file: never half a page
    from rich.console import Console

    Console(stderr=True).print(f"report written to {out} ({len(text.encode()) / 1e6:.2f} MB)", highlight=False, soft_wrap=True)
    return 0

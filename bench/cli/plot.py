"""`bench plot RESULTS.jsonl ...`: draw results as PNGs (leaderboard bars, ROC, recall@k, learning curves);
several files merge as in `bench leaderboard` (bench.results.read_results)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import UserError

MERGE = "several files are merged by cell_id: a later file's row for a cell supersedes an earlier file's"


def add_parser(sub, common) -> None:
    """Register `plot` on the `bench` subparsers; `common` holds --debug and --plugin."""
    p = sub.add_parser(
        "plot",
        parents=[common],
        help="draw PNG figures of one or more results files (needs matplotlib)",
        description="Draw leaderboard.png, roc.png, recall_at_k.png and curves.png (when rows carry learning "
        "curves), with configurations grouped and ranked as in `bench leaderboard`. "
        "Needs matplotlib: pip install 'metric-bench[plot]'.",
    )
    p.add_argument("results", type=Path, nargs="+", metavar="RESULTS.jsonl", help=f"results files; {MERGE}")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder for the PNGs (default: <first results file's stem>_plots/ beside it)")
    p.add_argument(
        "--metric",
        help="ranks the configurations and is the bar chart's and the curves' metric "
        "(default: the rows' [report] metric, else a search file's search metric, else verification_roc_auc, as `bench leaderboard`)",
    )
    p.add_argument("--log-fpr", action="store_true", help="draw the ROC's false-accept axis on a log scale (the low-FAR region)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.report import plots
    from bench.results import read_results

    plots.require_matplotlib()  # first: without it nothing else is worth checking
    out = args.out or args.results[0].parent / f"{args.results[0].stem}_plots"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is not a folder — give a folder to --out")
    rows = read_results(args.results)
    if not any(r.ok for r in rows):
        raise UserError(f"{', '.join(map(str, args.results))}: no ok rows, nothing to plot — run the grid (or --rerun failed) first")
    from bench.report.rows import items_loader
    from bench.report.table import default_metric

    drawn, skipped = plots.figures(
        rows,
        args.metric or default_metric(rows),
        args.log_fpr,  # an unknown --metric fails here, before any file
        items=items_loader(args.results),
    )  # new rows keep their ROC in their items files
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in plots.figure_files(out):  # an earlier drawing's figures (e.g. of groups that no longer exist)
            stale.unlink()
        for stem, figure in drawn.items():
            figure.savefig(out / f"{stem}.png", dpi=120, bbox_inches="tight")
    except OSError as exc:
        raise UserError(f"{out}: cannot write the plots ({exc.strerror or exc}) — give a writable folder to --out") from None
    console = Console(stderr=True)
    for stem in drawn:
        print(out / f"{stem}.png")
    for stem, why in skipped.items():
        console.print(f"{stem}.png: not drawn — {why}", highlight=False, soft_wrap=True)
    markdown = out.parent / f"{out.name.removesuffix('_plots')}.md"
    if out.name.endswith("_plots"):  # the folder a leaderboard markdown beside it links
        files = " ".join(map(str, args.results))
        console.print(
            f"to link these plots from {markdown}, run: bench leaderboard {files}"
            + (f" --out {markdown}" if len(args.results) > 1 or markdown != args.results[0].with_suffix(".md") else "")
            + (f" --metric {args.metric}" if args.metric else ""),
            highlight=False,
            soft_wrap=True,
        )
    return 0

"""`bench effects RESULTS.jsonl ...`: the effect of each choice (axis) of a grid with a 95 % interval, from matched
pairs of lines, and each axis's share of the variance; markdown printed, written with --out, a forest plot with --plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import UserError, check_target, write_atomic

MERGE = "several files are merged by cell_id: a later file's row for a cell supersedes an earlier file's"


def add_parser(sub, common) -> None:
    """Register `effects` on the `bench` subparsers; `common` holds --debug and --plugin."""
    p = sub.add_parser(
        "effects",
        parents=[common],
        help="the effect of each choice of a grid with a 95%% interval, and its share of the variance",
        description="For each axis of the grid (an option that varies among the trained lines of a comparison group) "
        "and each level against a reference level: the mean over matched pairs of lines (identical in every "
        "other option) of the difference of their means, with a 95 % interval (paired over the test items "
        "when the rows have per-item files, else from the seeds; random over pairs when they disagree), "
        "p, the contexts it covers and how much its pairs disagree; and a type-II ANOVA of the seed rows "
        "with the replicates' share (statsmodels: pip install 'metric-bench[stats]').",
    )
    p.add_argument("results", type=Path, nargs="+", metavar="RESULTS.jsonl", help=f"results files; {MERGE}")
    p.add_argument(
        "--metric", help="a score (default: the rows' [report] metric, else a search file's search metric, else verification_roc_auc, as `bench leaderboard`)"
    )
    p.add_argument("--axes", nargs="+", metavar="AXIS", help="report only these axes (flattened option names, e.g. loss model.freeze)")
    p.add_argument(
        "--reference",
        nargs="+",
        action="extend",
        default=[],
        metavar="AXIS=LEVEL",
        help="the level an axis's other levels are compared with (default: its first level in grid order)",
    )
    p.add_argument(
        "--interaction",
        nargs="+",
        action="extend",
        default=[],
        metavar="A:B",
        help="fit exactly these interactions of two axes in the variance model, e.g. loss:model.freeze (default: every two-way interaction the design allows)",
    )
    p.add_argument("--out", type=Path, metavar="FILE.md", help="also write the markdown here (its folder must exist)")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="draw a forest plot of the effects (needs matplotlib)")
    p.set_defaults(func=cmd_effects)


def cmd_effects(args: argparse.Namespace) -> int:
    from bench.report.effects import effects, forest, markdown
    from bench.report.variance import require_statsmodels

    require_statsmodels()  # first: without it nothing else is worth checking
    if args.plot:
        from bench.report.plots import require_matplotlib

        require_matplotlib()
    for path, flag in ((args.out, "--out"), (args.plot, "--plot")):
        if path is not None:
            check_target(path, flag)
    references, interactions = parse_references(args.reference), parse_interactions(args.interaction)
    from bench.report.lines import current
    from bench.report.rows import items_loader
    from bench.report.table import check_metric, default_metric
    from bench.results import read_results

    rows = read_results(args.results)  # a missing file is a UserError
    if not any(r.ok for r in current(rows)):
        raise UserError(f"{', '.join(map(str, args.results))}: no ok rows — run the grid (or --rerun failed) first")
    metric = args.metric or default_metric(rows)
    check_metric(current(rows), metric)
    groups = effects(rows, metric, args.axes, references, interactions or None, load=items_loader(args.results))
    title = " + ".join(p.stem for p in args.results)
    text = markdown(groups, metric, title)
    png = _png(forest(groups, metric)) if args.plot else None  # drawn before anything is written: no effect is an error
    if args.out:
        write_atomic(args.out, text.encode(), "--out")
    if png is not None:
        write_atomic(args.plot, png, "--plot")
    print(text, end="")
    written = [str(p) for p in (args.out, args.plot) if p is not None]
    if written:
        from rich.console import Console

        Console(stderr=True).print(f"effects written to {' and '.join(written)}", highlight=False, soft_wrap=True)
    return 0


def _png(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def parse_references(texts: list[str]) -> dict[str, str]:
    """["loss=triplet", …] → {"loss": "triplet"}; a text without "=" is a UserError."""
    out = {}
    for text in texts:
        name, sep, level = text.partition("=")
        if not sep or not name:
            raise UserError(f"--reference {text!r}: give AXIS=LEVEL, e.g. loss=triplet")
        out[name] = level
    return out


def parse_interactions(texts: list[str]) -> list[tuple[str, str]]:
    """["loss:model.freeze", …] → [("loss", "model.freeze")]; anything but two names joined by ":" is a UserError."""
    out = []
    for text in texts:
        parts = text.split(":")
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise UserError(f"--interaction {text!r}: give two different axes as A:B, e.g. loss:model.freeze")
        out.append((parts[0], parts[1]))
    return out

"""Result rows → figures: ROC curves, recall@k, learning curves and the leaderboard as bars. Pure functions of
rows that return matplotlib figures (drawn on the Agg canvas, no display); matplotlib is imported only here,
when a figure is drawn, so the harness runs without it."""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.config.metrics import lower_is_better
from bench.errors import UserError
from bench.items import roc_vertices
from bench.report.lines import curve_of
from bench.report.names import abbreviated, line_names, shared, short_names, varying_columns  # noqa: F401 (the last two: MLflow imports them from here)
from bench.report.table import DEFAULT_METRIC, ranked
from bench.schema import Row

FIGURES = ("leaderboard", "roc", "recall_at_k", "curves")  # the PNGs' stems, in the order a leaderboard links them
LOG_ROC = "roc_log"  # the ROC on a log FPR axis, when a page draws both
MAX_LINES = 12  # more lines than this on one plot cannot be told apart; the best configurations are kept
MAX_BARS = 30
LABEL_CHARS = 60  # a longer legend label is wrapped onto more lines
INSTALL = "pip install 'metric-bench[plot]'"
RECALL = re.compile(r"recall_at_(\d+)\Z")


@dataclass(frozen=True)
class Line:
    """One configuration as the plots draw it: its row of the leaderboard frame (its options; `legend` names it
    among the lines a figure draws), its ok rows (seeds), and the leaderboard's mean and std of the sort metric."""

    options: pd.Series
    rows: list[Row]
    mean: float
    std: float


def require_matplotlib():
    """The `matplotlib` module, or a one-line UserError with the install command."""
    try:
        import matplotlib
        import matplotlib.figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise UserError(f"plots need matplotlib, which is not installed — {INSTALL}") from None
    return matplotlib


def figures(rows: list[Row], metric: str = DEFAULT_METRIC, log_fpr: bool = False, both_fpr_scales: bool = False, items=None) -> tuple[dict, dict[str, str]]:
    """`({name: Figure}, {name: why it was not drawn})`, one figure of each stem in FIGURES per comparison group.
    Lines are grouped and ranked as in the leaderboard sorted by `metric` (best first), and lines of different
    groups (other test material, or scored another way) never share a figure: with one group the names are the
    stems, with several `<stem>_group<n>` (n from 1, in the leaderboard's group order), each titled with its
    group. The ROC's FPR axis is log with `log_fpr`; `both_fpr_scales` adds the log one as LOG_ROC (after the
    linear "roc", for a page that lets its reader switch). `items(row)` gives a row's items (bench.report.rows.
    items_loader), where rows written since the ROC left the row keep it. An unknown metric is a UserError."""
    require_matplotlib()
    frame, groups = ranked(rows, metric)
    if frame.empty:
        raise UserError("no ok rows: nothing to plot — run the grid (or rerun its failed cells) first")
    labels = list(dict.fromkeys(frame["group"]))
    stems = [s for stem in FIGURES for s in ((stem, LOG_ROC) if stem == "roc" and both_fpr_scales else (stem,))]
    drawn, skipped = {}, {}
    for n, group in enumerate(labels, start=1):
        at = [i for i, g in enumerate(frame["group"]) if g == group]
        part = frame.iloc[at].reset_index(drop=True)
        where = f"comparison group {n} of {len(labels)}: {group}" if len(labels) > 1 else ""
        lines = [
            Line(options, [r for r in groups[i] if r.ok], float(options[f"{metric}_mean"]), float(options[f"{metric}_std"]))
            for i, (_, options) in zip(at, part.iterrows())
        ]
        drawers = {
            "leaderboard": lambda: leaderboard_bars(lines, metric, where),
            "roc": lambda: roc_curves(lines, where, log_fpr, items),
            LOG_ROC: lambda: roc_curves(lines, where, True, items),
            "recall_at_k": lambda: recall_at_k(lines, where),
            "curves": lambda: learning_curves(lines, metric, where),
        }
        for stem in stems:
            figure = drawers[stem]()
            name = stem if len(labels) == 1 else f"{stem}_group{n}"
            (skipped if isinstance(figure, str) else drawn)[name] = figure
    return drawn, skipped


def figure_files(folder) -> list:
    """The PNGs `figures` may have written in `folder`, in FIGURES order and then group order."""
    from pathlib import Path

    folder = Path(folder)
    found = []
    for stem in FIGURES:
        found += [p for p in [folder / f"{stem}.png"] if p.is_file()]
        found += sorted(folder.glob(f"{stem}_group*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem.rsplit("_group", 1)[1]) or 0))
    return found


def legend(lines: list[Line], where: str = "") -> tuple[list[str], str]:
    """A label per line drawn, from the options that tell *these* lines apart (bench.report.names, the rule MLflow's
    run names use), and the options they all share as a subtitle, after `where` (the comparison group) when given.
    A long label is wrapped, never cut: the option cut off could be the one that tells two lines apart."""
    frame = pd.DataFrame([line.options for line in lines])
    labels = ["\n".join(textwrap.wrap(name, LABEL_CHARS, break_long_words=False)) for name in line_names(frame)]
    same = shared(frame)
    return labels, f"{where} — {same}" if where and same else where or same


def _figure(title: str, subtitle: str, size: tuple[float, float] = (6.5, 5.5), labels: list[str] = ()):
    """A figure with one axes, titled, `size` inches plus the width of these labels (a legend at its right,
    or a bar chart's tick labels at its left), so long labels widen the figure instead of squeezing the plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = size[0] + (0.3 + 0.075 * max(len(part) for label in labels for part in label.split("\n")) if labels else 0.0)
    figure = Figure(figsize=(width, size[1]), layout="constrained")
    FigureCanvasAgg(figure)  # Agg draws the PNG; no pyplot, so no global figure state or display backend
    axes = figure.add_subplot()
    axes.set_title(textwrap.fill(title, 90) + (f"\n{textwrap.fill(subtitle, 110)}" if subtitle else ""), fontsize="medium")
    axes.grid(alpha=0.3)
    return figure, axes


def _style(i: int) -> dict:
    """Ten colours, then the same ten dashed: up to MAX_LINES lines stay distinguishable."""
    return {"color": f"C{i % 10}", "linestyle": "-" if i < 10 else "--"}


def _legend(axes) -> None:
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def _mean(values) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


# --- the leaderboard as bars ------------------------------------------------------------------------------


def leaderboard_bars(lines: list[Line], metric: str, where: str):
    shown = [line for line in lines if math.isfinite(line.mean)][:MAX_BARS]
    if not shown:
        return f"no configuration has a finite {metric}"
    better = "lower" if lower_is_better(metric) else "higher"
    cut = f" (best {len(shown)} of {len(lines)})" if len(shown) < len(lines) else ""
    names, subtitle = legend(shown, where)
    labels = [f"{name} ({len(line.rows)} seed{'s' * (len(line.rows) != 1)})" for name, line in zip(names, shown)]
    figure, axes = _figure(
        f"{metric} per configuration{cut}: mean ± std over ok seeds, {better} is better", subtitle, (5.5, 1.6 + 0.34 * len(shown)), labels=labels
    )
    y = np.arange(len(shown))
    stds = [line.std if math.isfinite(line.std) else 0.0 for line in shown]  # one seed: no spread to draw
    bars = axes.barh(y, [line.mean for line in shown], xerr=stds, capsize=3, color="C0", alpha=0.8)
    axes.bar_label(bars, labels=[f"{line.mean:.3f}" for line in shown], padding=4, fontsize="small")
    axes.set_yticks(y, labels, fontsize="small")
    axes.invert_yaxis()  # the best on top, as in the markdown
    axes.set_xlabel(metric)
    axes.set_xlim(0, max(max(line.mean + s for line, s in zip(shown, stds)) * 1.12, 1e-9))  # room for the value labels
    return figure


# --- ROC ----------------------------------------------------------------------------------------------------


def roc_of(row: Row, items=None) -> tuple[np.ndarray, np.ndarray] | None:
    """A row's kept ROC vertices, or None: in the row for rows written before the ROC moved to the items file
    (`row.roc`), else from its items (`items(row)`, when given)."""
    roc = row.roc
    if roc is None and items is not None:
        return roc_vertices(items(row))
    if not isinstance(roc, dict) or not roc.get("fpr") or len(roc["fpr"]) != len(roc.get("tpr", ())):
        return None
    return np.asarray(roc["fpr"], dtype=float), np.asarray(roc["tpr"], dtype=float)


def mean_roc(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Vertical averaging: each seed's TPR, linear between its vertices, at the union of the seeds' FPRs,
    averaged. One seed's curve is returned as it is (its vertical steps kept)."""
    if len(curves) == 1:
        return curves[0]
    grid = np.unique(np.concatenate([fpr for fpr, _ in curves]))
    return grid, np.mean([np.interp(grid, fpr, tpr) for fpr, tpr in curves], axis=0)


def roc_curves(lines: list[Line], where: str, log_fpr: bool = False, items=None):
    drawable = []
    for line in lines:  # the best MAX_LINES lines that have a curve; the items of the others are never read
        if len(drawable) == MAX_LINES:
            break
        if curves := [c for r in line.rows if (c := roc_of(r, items)) is not None]:
            drawable.append((line, curves))
    if not drawable:
        return "no row carries an ROC (rows written before metric-bench kept one, verification was NaN, or the items files that keep it are missing)"
    names, subtitle = legend([line for line, _ in drawable], where)
    labels = [
        f"{name} (AUC {_mean(r.metric('verification_roc_auc') for r in line.rows):.3f}, {len(curves)} seed{'s' * (len(curves) != 1)})"
        for name, (line, curves) in zip(names, drawable)
    ]
    figure, axes = _figure("ROC per configuration: mean TPR over ok seeds at each FPR (vertical averaging)", subtitle, labels=labels)
    smallest = 1.0
    for i, ((_line, curves), label) in enumerate(zip(drawable, labels)):
        fpr, tpr = mean_roc(curves)
        axes.plot(fpr, tpr, label=label, **_style(i))
        smallest = min(smallest, fpr[fpr > 0].min(initial=1.0))
    chance = np.geomspace(smallest, 1.0, 50) if log_fpr else np.array([0.0, 1.0])
    axes.plot(chance, chance, color="grey", linewidth=0.8, linestyle=":", label="chance")
    if log_fpr:
        axes.set_xscale("log")
        axes.set_xlim(smallest, 1.0)
    axes.set_xlabel("false-accept rate (FPR)" + (", log scale" if log_fpr else ""))
    axes.set_ylabel("true-accept rate (TPR)")
    axes.set_ylim(0.0, 1.01)
    _legend(axes)
    return figure


# --- recall@k -----------------------------------------------------------------------------------------------


def recall_at_k(lines: list[Line], where: str):
    ks = sorted({int(m.group(1)) for line in lines for r in line.rows for key in r.metrics if (m := RECALL.match(key))})
    if not ks:
        return "no row carries recall_at_<k>"
    names, subtitle = legend(lines[:MAX_LINES], where)
    figure, axes = _figure("recall@k (hit rate: ≥ 1 same-class item in the top k), mean over ok seeds", subtitle, labels=names)
    for i, (line, name) in enumerate(zip(lines[:MAX_LINES], names)):
        points = [(k, _mean(r.metric(f"recall_at_{k}") for r in line.rows)) for k in ks]
        points = [(k, v) for k, v in points if math.isfinite(v)]
        if points:
            axes.plot(*zip(*points), marker="o", label=name, **_style(i))
    if ks[-1] >= 4 * ks[0]:  # k usually doubles (1, 2, 4, 8): even spacing on a log₂ axis
        axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()  # a log axis would add unlabelled (or oddly labelled) ticks between the ks
    axes.set_xlabel("k")
    axes.set_ylabel("recall@k")
    _legend(axes)
    return figure


# --- learning curves ----------------------------------------------------------------------------------------


def curve_points(rows: list[Row], metric: str) -> tuple[dict[float, list[float]], set[str]]:
    """The metric at each budget fraction, one value per seed, and the splits it was scored on. Each row's
    points come from one split, validation first (bench.report.lines.curve_of, as the leaderboard reads them)."""
    at: dict[float, list[float]] = {}
    splits = set()
    for r in rows:
        on, points = curve_of(r, metric)
        if on is None:
            continue
        splits.add(on)
        for f, value in points.items():
            at.setdefault(f, []).append(value)
    return at, splits


def learning_curves(lines: list[Line], metric: str, where: str):
    drawable = [(line, *curve) for line in lines if (curve := curve_points(line.rows, metric))[0]][:MAX_LINES]
    if not drawable:
        return f"no row carries a learning curve with {metric} (set eval.curve in the grid)"
    splits = set().union(*(s for _, _, s in drawable))
    title = f"{metric} during training (on {'/'.join(sorted(splits))}): mean over seeds, shaded ± std"
    names, subtitle = legend([line for line, _, _ in drawable], where)
    labels = [name + (f" [{'/'.join(sorted(split))}]" if len(splits) > 1 else "") for name, (_, _, split) in zip(names, drawable)]
    figure, axes = _figure(title, subtitle, labels=labels)
    for i, ((_, at, _), label) in enumerate(zip(drawable, labels)):
        fractions = sorted(at)
        means = np.array([np.mean(at[f]) for f in fractions])
        stds = np.array([np.std(at[f], ddof=1) if len(at[f]) > 1 else 0.0 for f in fractions])
        axes.plot(fractions, means, marker="o", label=label, **_style(i))
        axes.fill_between(fractions, means - stds, means + stds, color=_style(i)["color"], alpha=0.12, linewidth=0)
    axes.set_xlabel("fraction of the training budget")
    axes.set_ylabel(metric)
    _legend(axes)
    return figure


# --- two axes crossed: the interaction --------------------------------------------------------------------------


def interaction(crossing, metric: str, where: str = ""):
    """An interaction plot of a bench.report.variance.Crossed: the mean `metric` per level of its second axis (the
    loss), one line per level of the first (the backbone), each with its 95 % interval; lines that are not parallel
    are the interaction."""
    require_matplotlib()
    (a, b), (rows, columns) = crossing.axes, crossing.levels
    held = f"{crossing.held} in every cell" if crossing.held else "each cell averages the other options it ran with"
    names = [abbreviated(x) for x in rows]
    figure, axes = _figure(f"{a} × {b}: mean {metric} per cell, 95 % interval (seeds)", f"{where} — {held}" if where else held, (5.0, 4.2), labels=names)
    x = np.arange(len(columns), dtype=float)
    for i, (level, name) in enumerate(zip(rows, names)):
        cells = [crossing.cell(level, y) for y in columns]
        means = np.array([c.mean for c in cells])
        low = np.array([c.mean - c.low if math.isfinite(c.low) else 0.0 for c in cells])  # untested: the point alone
        high = np.array([c.high - c.mean if math.isfinite(c.high) else 0.0 for c in cells])
        shift = 0.06 * (i - (len(rows) - 1) / 2)  # side by side, so overlapping intervals stay readable
        axes.errorbar(x + shift, means, yerr=[low, high], marker="o", capsize=3, label=name, **_style(i))
    axes.set_xticks(x, [abbreviated(y) for y in columns])
    axes.set_xlim(-0.5, len(columns) - 0.5)
    axes.set_xlabel(b)
    axes.set_ylabel(metric)
    _legend(axes)
    return figure

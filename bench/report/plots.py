"""Result rows → figures: ROC curves, recall@k, learning curves and the leaderboard as bars. Pure functions of
rows that return matplotlib figures (drawn on the Agg canvas, no display); matplotlib is imported only here,
when a figure is drawn, so the harness runs without it."""
from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass

import numpy as np

from bench.errors import UserError
from bench.report.leaderboard import ABSENT, DEFAULT_METRIC, FIRST_KEYS, key_columns, lower_is_better, ranked
from bench.report.lines import curve_of

FIGURES = ("leaderboard", "roc", "recall_at_k", "curves")  # the PNGs' stems, in the order a leaderboard links them
MAX_LINES = 12  # more lines than this on one plot cannot be told apart; the best configurations are kept
MAX_BARS = 30
LABEL_CHARS = 80
INSTALL = "pip install 'metric-bench[plot]'"
RECALL = re.compile(r"recall_at_(\d+)\Z")


@dataclass(frozen=True)
class Line:
    """One configuration as the plots draw it: its legend label, its ok rows (seeds), and the leaderboard's
    mean and std of the sort metric."""
    label: str
    rows: list[dict]
    mean: float
    std: float


def require_matplotlib():
    """The `matplotlib` module, or a one-line UserError with the install command."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise UserError(f"plots need matplotlib, which is not installed — {INSTALL}") from None
    return matplotlib


def figures(rows: list[dict], metric: str = DEFAULT_METRIC, log_fpr: bool = False) -> tuple[dict, dict[str, str]]:
    """`({name: Figure}, {name: why it was not drawn})`, one figure of each stem in FIGURES per comparison group.
    Lines are grouped and ranked as in the leaderboard sorted by `metric` (best first), and lines of different
    groups (other test material, or scored another way) never share a figure: with one group the names are the
    stems, with several `<stem>_group<n>` (n from 1, in the leaderboard's group order), each titled with its
    group. An unknown metric is a UserError."""
    require_matplotlib()
    frame, groups = ranked(rows, metric)
    if frame.empty:
        raise UserError("no ok rows: nothing to plot — run the grid (or rerun its failed cells) first")
    labels = list(dict.fromkeys(frame["group"]))
    drawn, skipped = {}, {}
    for n, group in enumerate(labels, start=1):
        at = [i for i, g in enumerate(frame["group"]) if g == group]
        part = frame.iloc[at].reset_index(drop=True)
        names, subtitle = line_labels(part)
        if len(labels) > 1:
            subtitle = f"comparison group {n} of {len(labels)}: {group}" + (f" — {subtitle}" if subtitle else "")
        lines = [Line(name, [r for r in groups[i] if r.get("status") == "ok"], float(m), float(s))
                 for name, i, m, s in zip(names, at, part[f"{metric}_mean"], part[f"{metric}_std"])]
        drawers = {"leaderboard": lambda: leaderboard_bars(lines, metric, subtitle),
                   "roc": lambda: roc_curves(lines, subtitle, log_fpr),
                   "recall_at_k": lambda: recall_at_k(lines, subtitle),
                   "curves": lambda: learning_curves(lines, metric, subtitle)}
        for stem in FIGURES:
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


def varying_columns(frame) -> list[str]:
    """The configuration columns that tell lines apart, in order, leaving out any that follows from one before it."""
    varying: list[str] = []
    for k in key_columns(frame):
        # An option that follows from a column already in the label (image_size from the backbone, an empty
        # curve from loss = none) tells lines apart no better and would push the options that do out of it.
        follows = k not in FIRST_KEYS and any(frame.groupby(v)[k].nunique().max() == 1 for v in varying)
        if frame[k].nunique() > 1 and not follows:
            varying.append(k)
    return varying


def short_names(keys: list[str], among: list[str] | None = None) -> dict[str, str]:
    """Each option's last part ("train.augment" → "augment"), or every full name when two of `among` (default: all
    of `keys`) would read alike (e.g. train.seed and split.seed)."""
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    among = keys if among is None else among
    return short if len({short[k] for k in among}) == len(among) else {k: k for k in keys}


def line_labels(frame) -> tuple[list[str], str]:
    """A legend label per line from the configuration columns that differ between lines (those that follow
    from another left out), and the columns that are the same on every line as one subtitle."""
    keys = key_columns(frame)
    varying = varying_columns(frame) or list(FIRST_KEYS[:2])  # one configuration: name it
    same = [k for k in keys if frame[k].nunique() == 1]
    short = short_names(keys, among=varying)

    def part(key: str, value, named: bool = False) -> str:
        return f"{short[key]}={value}" if named or key not in FIRST_KEYS else str(value)

    labels = [", ".join(part(k, r[k]) for k in varying if r[k] != ABSENT) for _, r in frame.iterrows()]
    labels = [label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…" for label in labels]
    return labels, ", ".join(part(k, frame[k].iloc[0], named=True) for k in same if frame[k].iloc[0] != ABSENT)


def _figure(title: str, subtitle: str, size: tuple[float, float] = (6.5, 5.5), legend: list[str] = ()):
    """A figure with one axes, titled, `size` inches plus the width of these labels (a legend at its right,
    or a bar chart's tick labels at its left), so long labels widen the figure instead of squeezing the plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = size[0] + (0.3 + 0.075 * max(map(len, legend)) if legend else 0.0)
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

def leaderboard_bars(lines: list[Line], metric: str, subtitle: str):
    shown = [line for line in lines if math.isfinite(line.mean)][:MAX_BARS]
    if not shown:
        return f"no configuration has a finite {metric}"
    better = "lower" if lower_is_better(metric) else "higher"
    cut = f" (best {len(shown)} of {len(lines)})" if len(shown) < len(lines) else ""
    labels = [f"{line.label} ({len(line.rows)} seed{'s' * (len(line.rows) != 1)})" for line in shown]
    figure, axes = _figure(f"{metric} per configuration{cut}: mean ± std over ok seeds, {better} is better", subtitle,
                           (5.5, 1.6 + 0.34 * len(shown)), legend=labels)
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

def roc_of(row: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """A row's kept ROC vertices (`row["roc"]`, or `verification_roc` in its metrics), or None."""
    roc = row.get("roc") or row.get("metrics", {}).get("verification_roc")
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


def roc_curves(lines: list[Line], subtitle: str, log_fpr: bool = False):
    drawable = [(line, curves) for line in lines if (curves := [c for r in line.rows if (c := roc_of(r)) is not None])]
    if not drawable:
        return "no row carries an ROC (rows written before metric-bench kept one, or verification was NaN)"
    drawable = drawable[:MAX_LINES]
    labels = [f"{line.label} (AUC {_mean(r['metrics'].get('verification_roc_auc') for r in line.rows):.3f}, "
              f"{len(curves)} seed{'s' * (len(curves) != 1)})" for line, curves in drawable]
    figure, axes = _figure("ROC per configuration: mean TPR over ok seeds at each FPR (vertical averaging)", subtitle, legend=labels)
    smallest = 1.0
    for i, ((line, curves), label) in enumerate(zip(drawable, labels)):
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

def recall_at_k(lines: list[Line], subtitle: str):
    ks = sorted({int(m.group(1)) for line in lines for r in line.rows for key in r["metrics"] if (m := RECALL.match(key))})
    if not ks:
        return "no row carries recall_at_<k>"
    figure, axes = _figure("recall@k (hit rate: ≥ 1 same-class item in the top k), mean over ok seeds", subtitle,
                           legend=[line.label for line in lines[:MAX_LINES]])
    for i, line in enumerate(lines[:MAX_LINES]):
        points = [(k, _mean(r["metrics"].get(f"recall_at_{k}") for r in line.rows)) for k in ks]
        points = [(k, v) for k, v in points if math.isfinite(v)]
        if points:
            axes.plot(*zip(*points), marker="o", label=line.label, **_style(i))
    if ks[-1] >= 4 * ks[0]:  # k usually doubles (1, 2, 4, 8): even spacing on a log₂ axis
        axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()  # a log axis would add unlabelled (or oddly labelled) ticks between the ks
    axes.set_xlabel("k")
    axes.set_ylabel("recall@k")
    _legend(axes)
    return figure


# --- learning curves ----------------------------------------------------------------------------------------

def curve_points(rows: list[dict], metric: str) -> tuple[dict[float, list[float]], set[str]]:
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


def learning_curves(lines: list[Line], metric: str, subtitle: str):
    drawable = [(line, *curve) for line in lines if (curve := curve_points(line.rows, metric))[0]]
    if not drawable:
        return f"no row carries a learning curve with {metric} (set eval.curve in the grid)"
    splits = set().union(*(s for _, _, s in drawable[:MAX_LINES]))
    title = f"{metric} during training (on {'/'.join(sorted(splits))}): mean over seeds, shaded ± std"
    labels = [line.label + (f" [{'/'.join(sorted(split))}]" if len(splits) > 1 else "") for line, _, split in drawable[:MAX_LINES]]
    figure, axes = _figure(title, subtitle, legend=labels)
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

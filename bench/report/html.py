"""Result rows → one self-contained HTML page: the run's grid, environment and budget, the leaderboard per
comparison group as sortable tables with its marks and verdicts, factor effects, the plots, the cells that did not
finish, and quality against training cost. Built from the same pieces as the other views (bench.report.table, bench.report.wording,
effects, plots, pareto); every string from the data is escaped; nothing is loaded from the network."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
from collections import Counter
from html import escape

import pandas as pd

from bench.config import UNTRAINED
from bench.config.metrics import lower_is_better
from bench.errors import UserError
from bench.report import pareto
from bench.report.lines import ABSENT, as_text, current, flatten
from bench.report.table import FIRST_KEYS, HEADERS, VERDICTS, key_columns, metric_columns, ranked, varies
from bench.report.verdicts import signed
from bench.report.wording import group_notes, mark_columns, mean_std, verdict
from bench.report.wording import rules as leaderboard_rules
from bench.results import CONTENDED
from bench.schema import Row, as_rows

PLOT_EXTRA = "pip install 'metric-bench[plot]'"
STATS_EXTRA = "pip install 'metric-bench[stats]'"
NUMERIC_VERDICTS = {"vs_best_delta": "vs_best_delta", "detectable": "detectable", "gain_vs_untrained": "gain_vs_untrained"}
NUM = ' class="num"'
DPI = 100  # the plots' resolution: sharp on screen, and the page stays small enough to mail

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1400px;padding:0 16px;color:#1f2328}
h1{font-size:24px}h2{font-size:19px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}h3{font-size:16px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 7px;vertical-align:top}th{background:#f6f8fa;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.num,.leaderboard td{white-space:nowrap}.leaderboard td.long{white-space:normal;min-width:16em}
.scroll{overflow-x:auto;max-width:100%}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tr.best td{background:#dafbe1;font-weight:600}tr.close td{background:#f0fbf3}tr.baseline td{color:#57606a;font-style:italic}
td.improving{color:#1a7f37;font-weight:600}td.improving::before{content:"\\2191 "}
.verdict{background:#f6f8fa;border-left:4px solid #1a7f37;padding:6px 10px}
.legend{color:#57606a;font-size:13px}.note{color:#9a6700}
figure{display:inline-block;margin:8px 16px 16px 0;vertical-align:top;max-width:100%}img{max-width:100%;height:auto;border:1px solid #d0d7de}
svg.pareto{max-width:100%;height:auto}body{overflow-wrap:anywhere}
.leaderboard .pin{position:sticky;z-index:1;background:#fff}.leaderboard th.pin{background:#f6f8fa}
tr.best td.pin{background:#dafbe1}tr.close td.pin{background:#f0fbf3}.columns{font-size:13px;color:#57606a}.columns label{margin-right:12px}
.hide-metrics .g-metrics,.hide-marks .g-marks,.hide-budget .g-budget{display:none}
figure.roc img.fpr-log,figure.roc.log img.fpr-linear{display:none}figure.roc.log img.fpr-log{display:inline}label.scale{font-size:13px;color:#57606a}
@media (max-width:640px){body{margin:12px auto;padding:0 10px}figure{margin:8px 0 16px}}
pre{white-space:pre-wrap;margin:0;font-size:12px}code{background:#f6f8fa;padding:0 3px}
"""

SCRIPT = """
(function () {
  "use strict";
  function key(cell) {
    var s = cell.getAttribute("data-sort");
    return s === null ? cell.textContent.trim() : s;
  }
  // the number a cell carries: at its start, after an optional "p=" / "p<" / "p≤" (a p-value), with a Unicode
  // minus and thousands commas read as numbers; "p<0.001" sorts just below 0.001. NaN when the cell starts with text.
  function number(s) {
    var m = /^(p\\s*([=<\\u2264])\\s*)?([+\\-\\u2212]?(\\d[\\d,]*\\.?\\d*|\\.\\d+)(e[+\\-]?\\d+)?)/i.exec(s);
    if (!m) { return NaN; }
    var v = parseFloat(m[3].replace("\\u2212", "-").replace(/,/g, ""));
    return m[2] && m[2] !== "=" ? v * (1 - 1e-9) - 1e-300 : v;
  }
  function missing(s) { return s === "" || s === "\\u2014"; }
  // A column sorts by number when at least half of its non-empty cells carry one; cells without a number (a
  // "(baseline)", "untested") then follow the numbers, and empty cells come last, whichever the direction.
  function sortBy(table, th, col) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var keys = rows.map(function (r) { return key(r.cells[col]); });
    var nums = keys.map(number);
    var filled = keys.filter(function (k) { return !missing(k); }).length;
    var counted = nums.filter(function (n, i) { return !isNaN(n) && !missing(keys[i]); }).length;
    var numeric = counted > 0 && 2 * counted >= filled;
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var order = rows.map(function (r, i) { return i; });
    function rank(i) { return missing(keys[i]) ? 2 : (numeric && isNaN(nums[i]) ? 1 : 0); }
    order.sort(function (a, b) {
      var ra = rank(a), rb = rank(b);
      if (ra !== rb) { return ra - rb; }
      if (ra === 2) { return a - b; }
      var c = numeric && ra === 0 ? nums[a] - nums[b] : keys[a].localeCompare(keys[b], undefined, {numeric: true});
      return c !== 0 ? dir * c : a - b;
    });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    order.forEach(function (i) { body.appendChild(rows[i]); });
  }
  // the columns that name a line stay in view while the table scrolls sideways: each pinned column sticks at the
  // summed width of the pinned columns before it
  function pin() {
    Array.prototype.forEach.call(document.querySelectorAll("table.leaderboard"), function (table) {
      var left = 0;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
        if (!th.classList.contains("pin")) { return; }
        Array.prototype.forEach.call(table.rows, function (r) { if (r.cells[col]) { r.cells[col].style.left = left + "px"; } });
        left += th.offsetWidth;
      });
    });
  }
  pin();
  window.addEventListener("resize", pin);
  Array.prototype.forEach.call(document.querySelectorAll("p.columns input"), function (box) {
    box.addEventListener("change", function () {
      var table = box.closest("p").nextElementSibling.querySelector("table");
      table.classList.toggle("hide-" + box.getAttribute("data-group"), !box.checked);
      pin();
    });
  });
  // the ROC's FPR axis, linear or log: both are in the page, the box shows one
  Array.prototype.forEach.call(document.querySelectorAll("input.log-fpr"), function (box) {
    function show() { box.closest("figure").classList.toggle("log", box.checked); }
    box.addEventListener("change", show);
    show();  // a box the browser restored as ticked
  });
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


def page(rows: list[Row], metric: str, title: str, sources: list[str], items=None) -> str:
    """The whole page. `items(row)` gives a row's per-item outcomes (bench.report.rows.items_loader), for paired
    comparisons; an unknown or direction-less `metric` is a UserError (raised before anything is drawn)."""
    if not rows:
        raise UserError(f"{', '.join(sources)}: holds no result rows yet — run the grid first")
    rows = as_rows(rows)
    frame, line_rows = ranked(rows, metric, items)
    groups, why = _effect_groups(rows, metric, items, frame.empty)
    sections = [
        _answer(frame, groups, metric),
        _leaderboard(frame, metric),
        _cost(frame, line_rows, metric),
        _effects(groups, why, metric, frame.empty),
        _plots(rows, metric, frame, frame.empty, items),
        _failures(rows),
        _overview(rows, sources, metric),
        _glossary(),
    ]
    head = [
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network and no script but ours, even if a string escaped the escaping: the browser refuses it.
        f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        f"style-src '{_sha256(STYLE)}'; script-src '{_sha256(SCRIPT)}'\">",
        '<link rel="icon" href="data:,">',
        f"<title>{escape(title)} — metric-bench report</title>",
        f"<style>{STYLE}</style>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n'
        + "\n".join(head)
        + "\n</head>\n<body>\n"
        + f"<h1>{escape(title)} — metric-bench report</h1>\n"
        + "\n".join(s for s in sections if s)
        + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


# --- the run: grid, environment, budget ---------------------------------------------------------------------


def _overview(rows: list[Row], sources: list[str], metric: str) -> str:
    latest = current(rows)
    statuses = Counter(r.status for r in latest)
    grids = Counter(str(r.grid if r.grid is not None else ABSENT) for r in latest)
    trials = sum(1 for r in rows if r.config.get("trial"))
    better = "lower" if lower_is_better(metric) else "higher"
    facts = [
        ("results", ", ".join(sources)),
        ("grid", _counted(grids, "cell")),
        (
            "cells",
            f"{len(latest)} ("
            + ", ".join(f"{n} {s}" for s, n in statuses.most_common())
            + ")"
            + (f"; {trials} search trial rows, scored on validation, are not lines" if trials else ""),
        ),
        ("sorted by", f"{metric} ({better} is better)"),
    ]
    budgets = Counter(_budget_text(r.config.get("budget", {})) for r in latest)
    stopped = Counter(str(r.train.stopped_by) for r in latest if r.ok)
    facts += [("budget", _counted(budgets, "cell")), ("stopped by", _counted(stopped, "ok cell"))]
    env = [flatten(r.env.to_dict()) for r in latest if r.env is not None]
    keys = list(dict.fromkeys(k for e in env for k in e))
    environment = [(k, _counted(Counter(str(e.get(k, ABSENT)) for e in env), "cell")) for k in keys]
    return (
        '<section id="run"><h2>The run</h2>\n'
        + _facts(facts)
        + "<h3>Environment</h3>\n"
        + (_facts(environment) if environment else "<p>The rows record no environment.</p>")
        + "</section>"
    )


def _budget_text(budget: dict) -> str:
    said = [f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in budget.items() if v is not None]
    return ", ".join(said) or "none recorded"


def _counted(counts: Counter, what: str) -> str:
    """ "a" when every one has the same value, else "a (3 cells); b (1 cell)"."""
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{value} ({n} {what}{'s' * (n != 1)})" for value, n in counts.most_common())


def _facts(facts: list[tuple[str, str]]) -> str:
    return '<table class="facts">\n' + "\n".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts) + "\n</table>\n"


# --- the answer, first ----------------------------------------------------------------------------------------

LARGEST = 3  # effects the answer names, largest first
COLUMN_GROUPS = (
    '<p class="columns">Columns: '
    + " ".join(
        f'<label><input type="checkbox" data-group="{g}" checked> {text}</label>'
        for g, text in (("metrics", "other metrics"), ("marks", "verdicts and marks"), ("budget", "seeds and budget"))
    )
    + "</p>\n"
)


def _answer(frame: pd.DataFrame, groups: list | None, metric: str) -> str:
    """What the page concludes, before any table: each comparison group's verdict (the leaderboard's own sentence)
    and the largest factor effects with their 95 % intervals (`bench effects`' numbers)."""
    if frame.empty:
        return ""
    out = ['<section id="answer"><h2>The answer</h2>']
    names = list(dict.fromkeys(frame["group"]))
    for n, group in enumerate(names, 1):
        part = frame.iloc[[i for i, g in enumerate(frame["group"]) if g == group]].reset_index(drop=True)
        lead = f"<b>Group {n} of {len(names)}</b> ({escape(str(group))}): " if len(names) > 1 else ""
        if said := verdict(part, metric):
            out.append(f'<p class="verdict">{lead}{_inline(said)}</p>')
    for g in groups or []:
        tested = [e for e in g.effects if e.pairs and math.isfinite(e.estimate) and math.isfinite(e.low)]
        if not tested:
            continue
        largest = sorted(tested, key=lambda e: -abs(e.estimate))[:LARGEST]
        where = f" in {escape(g.label)}" if len(groups) > 1 else ""
        items = "".join(
            f"<li>{escape(e.axis)} <b>{escape(e.level)}</b> vs {escape(e.reference)}: {signed(e.estimate)} "
            f"[{signed(e.low)}, {signed(e.high)}] over {e.pairs} matched pair{'s' * (e.pairs != 1)}"
            f"{'' if e.low > 0 or e.high < 0 else ' — not shown to differ'}</li>"
            for e in largest
        )
        out.append(
            f"<p>The largest effects on {escape(metric)}{where} (each with its own 95 % interval; Holm-adjusted p "
            f'and every effect under <a href="#effects">Factor effects</a>):</p><ul class="effects">{items}</ul>'
        )
    out.append(
        '<p class="legend">The tables, effects and plots that say why follow; the run, its environment and a '
        "glossary of the protocol's terms are at the end.</p>"
    )
    return "\n".join(out) + "\n</section>"


GLOSSARY = {
    "backbone": "model.freeze: the trunk's weights are frozen and its BatchNorm layers run in eval mode (their running statistics); only the head trains.",
    "backbone_bn_train": "model.freeze: the trunk's weights are frozen but its BatchNorm layers are left in train mode, normalising with each batch's statistics — the Keras trainable = False pitfall.",
    "none": "model.freeze: nothing frozen, the whole network trains (for loss none: no training at all — the untrained baseline).",
    "native": "model.preprocess: the input the backbone's weights expect (its own mean, std and channel order).",
    "caffe": "model.preprocess: BGR channel order minus the ImageNet mean, unscaled, as Caffe-era ResNet50 weights (and Keras' resnet50) expect.",
    "koch": "train.augment: Koch et al. 2015's affine distortions (rotation, shear, scale, translation, each with probability 0.5).",
    "natural": "train.augment: the Reality Check's flip and random resized crop of 16–100 % of the area.",
    "best@": "selected: train.select = best — the curve point (fraction of the budget) best on validation, per seed, is the one scored on test.",
    "untrained": "loss none: the backbone's own features before any training, scored as the trained lines are.",
    "contended": f"stopped by: the seed's max_seconds clock ran while its threads waited for a core at least {CONTENDED:.0%} of the time they were runnable — another process held the cores, so it bought fewer steps than its share of the machine; `bench run --rerun contended` runs it again.",
}


def _glossary() -> str:
    return (
        '<section id="glossary"><h2>Glossary</h2><dl>' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in GLOSSARY.items()) + "</dl></section>"
    )


def _explained(text: str) -> str | None:
    """The glossary's explanation of a table cell's value (a protocol term), else None."""
    if text in GLOSSARY and text not in ("none", "untrained"):
        return GLOSSARY[text]
    if text.endswith(": contended)"):
        return GLOSSARY["contended"]
    return GLOSSARY["best@"] if text.startswith("best@") else None


# --- the leaderboard ------------------------------------------------------------------------------------------

LEGEND = (
    '<p class="legend">Click a column header to sort by it (again to reverse). Row marks: '
    "<b>bold green</b>: the best line of its group; light green: <i>not separated</i> from it or <i>equivalent</i> "
    "within the grid's margin (simultaneous 95 % intervals; not separated is not equal); <i>italic grey</i>: an untrained baseline (loss none); \u2191 in <i>still improving</i>: the "
    "last doubling of the budget still paid. <i>gain vs untrained</i> is the line's metric minus that of its "
    "untrained backbone.</p>\n"
)


def _leaderboard(frame: pd.DataFrame, metric: str) -> str:
    if frame.empty:
        return '<section id="leaderboard"><h2>Leaderboard</h2><p>No finished cells yet.</p></section>'
    rules = leaderboard_rules(frame, metric)  # the markdown view's own explanation of every column
    out = [
        '<section id="leaderboard"><h2>Leaderboard</h2>',
        LEGEND,
        f'<details><summary>How each column is computed</summary><p class="legend">{_inline(rules)}</p></details>',
    ]
    cells = mark_columns(frame)
    groups = list(dict.fromkeys(frame["group"]))
    for n, group in enumerate(groups, 1):
        at = [i for i, g in enumerate(frame["group"]) if g == group]
        part = frame.iloc[at].reset_index(drop=True)
        if len(groups) > 1:
            out.append(f"<h3>Comparison group {n} of {len(groups)}: {escape(str(group))}</h3>")
        if said := verdict(part, metric):
            out.append(f'<p class="verdict">{_inline(said)}</p>')
        out.append(_table(part, {c: [v[i] for i in at] for c, v in cells.items()}, metric))
        out += [f"<p>{_inline(said)}</p>" for said in group_notes(part, metric)]
    return "\n".join(out) + "\n</section>"


def _table(part: pd.DataFrame, cells: dict[str, list[str]], metric: str) -> str:
    """One group's sortable table: the markdown table's columns and cells, each number also as data-sort."""
    metrics = metric_columns(part)
    keys = [k for k in key_columns(part) if k in FIRST_KEYS or varies(part, k)]
    start = "descending" if not lower_is_better(metric) else "ascending"  # the order the rows come in
    pinned = [k for k in keys if k in FIRST_KEYS[:2]]  # what names a line stays in view while the table scrolls sideways
    heads = [
        _th("#", numeric=True, cls="pin"),
        *(_th(HEADERS.get(k, k), cls="pin" if k in pinned else None) for k in keys),
        *(_th(m, numeric=True, sort=start if m == metric else None, cls=None if m == metric else "g-metrics") for m in metrics),
        *(_th(VERDICTS[c], numeric=c in NUMERIC_VERDICTS, cls="g-marks") for c in cells),
        _th("ok / seeds", numeric=True, cls="g-budget"),
        _th("not ok", cls="g-budget"),
        _th("steps", numeric=True, cls="g-budget"),
        _th("stopped by", cls="g-budget"),
    ]
    body = []
    for rank, (_, r) in enumerate(part.iterrows(), 1):
        one = bool(r.get("identical_seeds", False))
        row = [_td(str(rank), rank, "num pin"), *(_td(r[k], cls="pin" if k in pinned else None) for k in keys)]
        row += [
            _td(
                mean_std(r[f"{m}_mean"], math.nan if one else r[f"{m}_std"], r.get(f"{m}_se", math.nan)),
                r[f"{m}_mean"],
                "num" if m == metric else "num g-metrics",
            )
            for m in metrics
        ]
        for c, values in cells.items():
            text = values[rank - 1]
            improving = c == "still_improving" and text.startswith("yes")
            kind = "num" if c in NUMERIC_VERDICTS else "improving" if improving else "long" if c == "tuned" else ""
            row.append(_td(text, r[NUMERIC_VERDICTS[c]] if c in NUMERIC_VERDICTS else None, f"{kind} g-marks".strip()))
        row += [
            _td(f"{r['ok']} / {r['seeds']}" + (" (1 distinct value)" if one else ""), r["ok"], "num g-budget"),
            _td(r["others"], cls="long g-budget"),
            _td(str(r.get("steps_range") or r["steps"]), r["steps"], "num g-budget"),
            _td(r["stopped_by"], cls="long g-budget"),
        ]
        verdict_text = str(r.get("vs_best"))
        mark = "best" if verdict_text == "best" else "close" if verdict_text == "not separated" or verdict_text.startswith("equivalent") else ""
        mark = mark or ("baseline" if r.get("loss") == UNTRAINED else "")
        body.append(f"<tr{_attr('class', mark) if mark else ''}>" + "".join(row) + "</tr>")
    return (
        COLUMN_GROUPS
        + '<div class="scroll"><table class="sortable leaderboard">\n<thead><tr>'
        + "".join(heads)
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table></div>"
    )


def _attr(name: str, value) -> str:
    return f' {name}="{escape(str(value), quote=True)}"'


def _th(text: str, numeric: bool = False, sort: str | None = None, cls: str | None = None) -> str:
    classes = " ".join(c for c in ("num" if numeric else "", cls or "") if c)
    return f"<th{_attr('class', classes) if classes else ''}{_attr('aria-sort', sort) if sort else ''}>{escape(text)}</th>"


def _td(text, sort=None, cls: str | None = None) -> str:
    """A cell showing `text`; `sort`, a finite number, is what the table sorts it by (else its text); a protocol
    term carries its glossary explanation as a tooltip."""
    number = isinstance(sort, (int, float)) and math.isfinite(sort)
    tip = _explained(str(text))
    return (
        f"<td{_attr('class', cls) if cls else ''}{_attr('data-sort', repr(float(sort))) if number else ''}{_attr('title', tip) if tip else ''}>"
        f"{escape(str(text))}</td>"
    )


# --- quality against cost -------------------------------------------------------------------------------------


def _cost(frame: pd.DataFrame, line_rows: list[list[Row]], metric: str) -> str:
    """Per comparison group and cost (seconds, GFLOPs): every line's metric against its training cost per cell, the
    Pareto front marked, and the front as a table: the best line each budget buys."""
    if frame.empty:
        return ""
    from bench.report.names import line_names

    out = [
        '<section id="cost"><h2>Quality against training cost</h2>',
        '<p class="legend">Each point is a line (mean over its ok seeds; hover for its name); filled green: the '
        "Pareto front, the lines no cheaper-or-equal line matches; the staircase is the best "
        f"{escape(metric)} a training cost of at most x buys. Costs are means per cell over the ok seeds; an untrained "
        "baseline costs nothing to train. GFLOPs count the forward and backward pass through what trains "
        "(a frozen trunk's one feature extraction is in the seconds, not the GFLOPs).</p>",
    ]
    groups = list(dict.fromkeys(frame["group"]))
    lower = lower_is_better(metric)
    for n, group in enumerate(groups, 1):
        at = [i for i, g in enumerate(frame["group"]) if g == group]
        part = frame.iloc[at].reset_index(drop=True)
        names = [f"#{k} {name}" for k, name in enumerate(line_names(part), 1)]
        if len(groups) > 1:
            out.append(f"<h3>Comparison group {n} of {len(groups)}: {escape(str(group))}</h3>")
        flat = []
        for kind in pareto.COSTS:
            points = [pareto.Point(name, float(q), pareto.line_cost(line_rows[i], kind)) for name, i, q in zip(names, at, part[f"{metric}_mean"])]
            if not any(math.isfinite(p.cost) and p.cost > 0 for p in points):
                continue  # rows that do not record this cost
            if pareto.spread(points) <= pareto.SPREAD:  # every trained line paid about the same: no trade-off on this axis
                costs = [p.cost for p in points if math.isfinite(p.cost) and p.cost > 0]
                flat.append(f"{escape(pareto.COSTS[kind][0])} ({pareto.short_number(min(costs))}–{pareto.short_number(max(costs))} per trained line)")
                continue
            on_front = pareto.front(points, lower)
            out.append(f"<figure>{pareto.svg(points, on_front, metric, kind)}</figure>")
            out.append(_front_table(points, on_front, metric, kind))
        if flat:
            out.append(f'<p class="legend">Not drawn, as every trained line paid about the same (within {pareto.SPREAD:.0%}): ' + "; ".join(flat) + ".</p>")
    return "\n".join(out) + "\n</section>"


def _front_table(points: list[pareto.Point], on_front: list[int], metric: str, kind: str) -> str:
    rows = "\n".join(
        f"<tr>{_td(f'{points[i].cost:.4g}', points[i].cost, 'num')}{_td(points[i].name)}{_td(f'{points[i].quality:.4f}', points[i].quality, 'num')}</tr>"
        for i in on_front
    )
    unit = pareto.COSTS[kind][0]
    return (
        f'<div class="scroll"><table class="sortable front"><caption>The best line each budget buys ({escape(unit)} per cell, '
        "cheapest first)</caption>\n<thead><tr>"
        + _th(f"{unit} per cell", numeric=True)
        + _th("line")
        + _th(metric, numeric=True)
        + f"</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>"
    )


# --- effects, plots, cells that did not finish --------------------------------------------------------------


def _effect_groups(rows: list[Row], metric: str, items, empty: bool) -> tuple[list | None, str]:
    """`bench effects`' groups of these rows, computed once for the answer and the effects section; (None, why) when
    there are none (no finished cell, no statsmodels, a design without two levels of any axis)."""
    if empty:
        return None, ""
    try:
        from bench.report.variance import require_statsmodels

        require_statsmodels()
    except UserError:
        return None, f"Factor effects need statsmodels, which is not installed: {STATS_EXTRA} adds them."
    from bench.report.effects import effects

    try:
        return effects(rows, metric, load=items), ""
    except UserError as exc:
        return None, f"No effects: {exc}"


def _effects(groups: list | None, why: str, metric: str, empty: bool) -> str:
    head = '<section id="effects"><h2>Factor effects</h2>'
    if empty:
        return ""
    if groups is None:
        return f'{head}<p class="note">{escape(why)}</p></section>'
    from bench.report.effects import forest
    from bench.report.effects import markdown as effects_markdown

    text = effects_markdown(groups, metric).split("\n", 2)[2]  # its own heading is this section's
    figure = ""
    if _has_matplotlib() and any(e.pairs for g in groups for e in g.effects):
        figure = _img(
            forest(groups, metric),
            "effects",
            f"Each factor effect on {metric}: the mean over its matched pairs of lines, with its 95 % interval (colour: how the interval was computed).",
        )
    return f"{head}\n{_markdown_html(text)}\n{figure}{_interactions(groups, metric)}</section>"


def _interactions(groups: list, metric: str) -> str:
    """The interaction plot of each group whose trained lines cross backbone and loss; nothing for the others."""
    if not _has_matplotlib():
        return ""
    from bench.report.plots import interaction

    out = []
    for g in (g for g in groups if g.interaction):
        a, b = g.interaction.axes
        where = f"{g.label}: " if len(groups) > 1 else ""
        held = f"the other options held at {g.interaction.held}" if g.interaction.held else "each cell averaging the other options it ran with"
        out.append(
            _img(
                interaction(g.interaction, metric, g.label if len(groups) > 1 else ""),
                "interaction",
                f"{where}the {a} × {b} interaction on {metric}: the mean per {b}, one line per {a}, with 95 % intervals "
                f"from the seeds ({held}); lines that are not parallel are the interaction.",
            )
        )
    return "".join(out)


CAPTIONS = {
    "leaderboard": "Each line's mean {metric} over its ok seeds, with the seeds' std as error bars, best on top",
    "roc": "Verification ROC of each line: true-accept against false-accept rate, the mean over its seeds",
    "recall_at_k": "Recall@k against k: how often a query's k nearest items hold one of its class, the mean over seeds",
    "curves": "{metric} along the budget on each line's learning-curve split (validation first), the mean over seeds ± std",
}


def caption(name: str, metric: str, frame: pd.DataFrame) -> str:
    """What a figure shows, and how many of its group's lines it draws when not all ("the best 12 of 24 lines")."""
    from bench.report.plots import MAX_BARS, MAX_LINES

    stem, _, group = name.partition("_group")
    groups = list(dict.fromkeys(frame["group"]))
    n = int((frame["group"] == groups[int(group) - 1 if group else 0]).sum()) if groups else 0
    cap = MAX_BARS if stem == "leaderboard" else MAX_LINES
    shown = f"; the best {cap} of {n} lines" if n > cap else f"; all {n} lines" if n else ""
    where = f" (comparison group {group})" if group else ""
    return CAPTIONS.get(stem, name).format(metric=metric) + shown + where + "."


def _plots(rows: list[Row], metric: str, frame: pd.DataFrame, empty: bool, items=None) -> str:
    head = '<section id="plots"><h2>Plots</h2>'
    if empty:
        return ""
    if not _has_matplotlib():
        return f'{head}<p class="note">Plots need matplotlib, which is not installed: {escape(PLOT_EXTRA)} adds them.</p></section>'
    from bench.report.plots import LOG_ROC, figures

    drawn, skipped = figures(rows, metric, both_fpr_scales=True, items=items)  # new rows' ROCs are in their items files
    out = [head]
    for name, figure in drawn.items():
        if name.startswith(LOG_ROC):
            continue  # drawn with its linear twin
        twin = name.replace("roc", LOG_ROC, 1)  # "roc_group2" → "roc_log_group2"
        if name.partition("_group")[0] == "roc" and twin in drawn:
            out.append(_roc_img(figure, drawn[twin], caption(name, metric, frame)))
        else:
            out.append(_img(figure, name, caption(name, metric, frame)))
    out += [f'<p class="note">{escape(name)}: not drawn — {escape(why)}</p>' for name, why in skipped.items() if not name.startswith(LOG_ROC)]
    return "\n".join(out) + "</section>"


def _has_matplotlib() -> bool:
    from bench.report.plots import require_matplotlib

    try:
        require_matplotlib()
    except UserError:
        return False
    return True


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _img(figure, name: str, text: str | None = None) -> str:
    return f"<figure><img{_attr('alt', text or name)}{_attr('src', _png(figure))}><figcaption>{escape(text or name)}</figcaption></figure>"


def _roc_img(linear, log, text: str) -> str:
    """The ROC on a linear FPR axis (shown first) and on a log one, with a checkbox that swaps them: the log axis
    spreads out the low false-accept region a TAR@FAR threshold reads."""
    box = '<label class="scale"><input type="checkbox" class="log-fpr"> log false-accept (FPR) axis: the low-FAR region spread out</label>'
    return (
        f'<figure class="roc">{box}<br>'
        f'<img class="fpr-linear"{_attr("alt", text)}{_attr("src", _png(linear))}>'
        f'<img class="fpr-log"{_attr("alt", text + " Log false-accept axis.")}{_attr("src", _png(log))}>'
        f"<figcaption>{escape(text)}</figcaption></figure>"
    )


def _failures(rows: list[Row]) -> str:
    """The cells whose newest row is not ok (as the leaderboard's list), each with its whole message."""
    failed = [r for r in current(rows) if not r.ok]
    if not failed:
        return '<section id="failures"><h2>Cells that did not finish</h2><p>None: every cell\'s newest row is ok.</p></section>'
    heads = "".join(_th(h) for h in ("cell", *FIRST_KEYS, "seed", "status", "message"))
    body = []
    for r in failed:
        c = r.config
        error = str(r.error or "").strip()
        first = (error.splitlines() or [""])[0]
        message = escape(first) + (f"<details><summary>whole message</summary><pre>{escape(error)}</pre></details>" if error != first else "")
        body.append(
            "<tr>"
            + "".join(_td(v) for v in (r.cell_id, *(as_text(c.get(k, ABSENT)) for k in FIRST_KEYS), as_text(c.get("seed", ABSENT)), r.status))
            + f"<td>{message}</td></tr>"
        )
    return (
        f'<section id="failures"><h2>Cells that did not finish ({len(failed)})</h2>\n'
        f'<div class="scroll"><table class="sortable failures">\n<thead><tr>{heads}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table></div></section>"
    )


# --- the markdown the other views write, as HTML ------------------------------------------------------------------


def _inline(text: str) -> str:
    """One line of the views' markdown (escaped `|`, **bold**, *italic*, `code`) as HTML: the text is escaped first,
    so only these tags can come out of it."""
    out = escape(str(text).replace("\\|", "|"), quote=True)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"<em>\1</em>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _markdown_html(text: str) -> str:
    """The markdown subset the views write (headings, paragraphs, `- ` lists, pipe tables) as HTML; tables sortable."""
    out, table, paragraph = [], [], []

    def flush() -> None:
        if paragraph:
            out.append("<p>" + " ".join(_inline(p) for p in paragraph) + "</p>")
            paragraph.clear()
        if table:
            out.append(_markdown_table(table))
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            if paragraph:
                flush()
            table.append(line)
            continue
        if table:
            flush()
        if not line.strip():
            flush()
        elif heading := re.match(r"(#{1,4}) (.*)", line):
            flush()
            level = min(len(heading.group(1)) + 1, 4)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.startswith("- "):
            flush()
            out.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        else:
            paragraph.append(line)
    flush()
    return "\n".join(out)


def _markdown_table(lines: list[str]) -> str:
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])] for line in lines]
    header, align, body = split[0], split[1] if len(split) > 1 else [], split[2:]
    numeric = [a.endswith(":") for a in align] + [False] * len(header)
    heads = "".join(f"<th{NUM if numeric[i] else ''}>{_inline(h)}</th>" for i, h in enumerate(header))
    rows = "\n".join("<tr>" + "".join(f"<td{NUM if numeric[i] else ''}>{_inline(c)}</td>" for i, c in enumerate(r)) + "</tr>" for r in body)
    return f'<div class="scroll"><table class="sortable">\n<thead><tr>{heads}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>'

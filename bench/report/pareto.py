"""Quality against training cost: each line's metric and what its training cost per cell, the Pareto front of
the lines no cheaper line beats, and that chart as an inline SVG. Pure functions of the leaderboard's lines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import numpy as np

# what a cell's training cost is measured in → (its unit, the axis title, how a row's `train` gives it)
COSTS = {
    "steps": ("steps", "training steps per cell (train.steps)", lambda t: t.steps),
    "images": ("images", "training images per cell (train.samples)", lambda t: t.samples),
    "gflops": (
        "GFLOPs",
        "training GFLOPs per cell (train.gflops_per_image × train.samples)",
        lambda t: t.gflops_per_image * t.samples if t.gflops_per_image is not None and t.samples is not None else None,
    ),
    "seconds": ("seconds", "training seconds per cell (train.seconds: the budget's clock, wall + charged)", lambda t: t.seconds),
}
SPREAD = 0.05  # a cost axis is drawn when the trained lines' costs differ by more than this fraction of the largest
CHAR_WIDTH, LABEL_HEIGHT = 6.2, 11.0  # a 10 px label's width per character and its height, for placing labels apart
WIDTH, HEIGHT = 720, 380
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 48


@dataclass(frozen=True)
class Point:
    """One line on the chart: its name, its mean metric and its mean cost per cell over its ok seeds."""

    name: str
    quality: float
    cost: float


def line_cost(rows: list, kind: str) -> float:
    """The mean over a line's ok rows of one cost per cell (COSTS); NaN when no ok row records it."""
    get = COSTS[kind][2]
    found = [float(v) for r in rows if r.ok and isinstance(v := get(r.train), (int, float))]
    found = [v for v in found if math.isfinite(v)]
    return float(np.mean(found)) if found else math.nan


def spread(points: list[Point]) -> float:
    """How much the trained lines' costs differ, (largest − smallest) / largest over the finite costs above 0 (an
    untrained baseline costs nothing); 0 with fewer than two. An equal-seconds grid's seconds spread ~0: no
    trade-off to draw on that axis."""
    costs = [p.cost for p in points if math.isfinite(p.cost) and p.cost > 0 and math.isfinite(p.quality)]
    return (max(costs) - min(costs)) / max(costs) if len(costs) > 1 else 0.0


def front(points: list[Point], lower_is_better: bool = False) -> list[int]:
    """The indexes of the Pareto front, cheapest first: the lines no other line dominates (costs no more and scores
    at least as well, and is cheaper or better); lines equal in both are on it together. Lines without a finite
    metric or cost are on no front."""
    sign = -1.0 if lower_is_better else 1.0
    shown = [i for i, p in enumerate(points) if math.isfinite(p.quality) and math.isfinite(p.cost)]
    shown.sort(key=lambda i: (points[i].cost, -sign * points[i].quality))  # ties in cost: the best first
    out, best = [], (math.inf, -math.inf)  # the last front line's (cost, signed metric)
    for i in shown:
        here = (points[i].cost, sign * points[i].quality)
        if here[1] > best[1] or here == best:
            out.append(i)
            best = here
    return out


def svg(points: list[Point], on_front: list[int], metric: str, kind: str) -> str:
    """An inline SVG scatter of every line's metric against its cost, the front drawn as the staircase of the best
    metric each budget buys; each point labelled by its rank (#n) and its full name in a tooltip."""
    shown = [i for i, p in enumerate(points) if math.isfinite(p.quality) and math.isfinite(p.cost)]
    if not shown:
        return ""
    xs, ys = [points[i].cost for i in shown], [points[i].quality for i in shown]
    x_ticks, y_ticks = ticks(0.0, max(xs)), ticks(min(ys), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def at(cost: float, quality: float) -> tuple[float, float]:
        x = LEFT + (cost - x0) / ((x1 - x0) or 1.0) * (WIDTH - LEFT - RIGHT)
        y = HEIGHT - BOTTOM - (quality - y0) / ((y1 - y0) or 1.0) * (HEIGHT - TOP - BOTTOM)
        return round(x, 1), round(y, 1)

    title = f"{metric} against {COSTS[kind][1]}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pareto" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for t in x_ticks:
        x, _ = at(t, y0)
        out += [
            f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{HEIGHT - BOTTOM}" stroke="#ddd"/>',
            f'<text x="{x}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11">{short_number(t)}</text>',
        ]
    for t in y_ticks:
        _, y = at(x0, t)
        out += [
            f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#ddd"/>',
            f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end" font-size="11">{short_number(t)}</text>',
        ]
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 10}" text-anchor="middle" font-size="12">{escape(COSTS[kind][1])}</text>')
    out.append(
        f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2})">{escape(metric)}</text>'
    )
    if on_front:  # the staircase: the best metric a cost of at most x buys, flat until the next front line
        corners = []
        for a, b in zip(on_front, on_front[1:] + [None]):
            corners.append(at(points[a].cost, points[a].quality))
            corners.append(at(points[b].cost if b is not None else x1, points[a].quality))
        out.append('<polyline fill="none" stroke="#1a7f37" stroke-width="2" points="' + " ".join(f"{x},{y}" for x, y in corners) + '"/>')
    centres = {i: at(points[i].cost, points[i].quality) for i in shown}
    placed = place_labels([(centres[i], points[i].name.split(" ", 1)[0]) for i in shown], (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM))
    for i, label in zip(shown, placed):
        p, x_y, lead = points[i], centres[i], i in on_front
        fill, stroke = ("#1a7f37", "#1a7f37") if lead else ("#fff", "#777")
        tip = f"{p.name}: {metric} {p.quality:.4f}, {short_number(p.cost)} {COSTS[kind][0]} per cell" + (" (Pareto front)" if lead else "")
        text = f'<text x="{label[0]}" y="{label[1]}" font-size="10">{escape(p.name.split(" ", 1)[0])}</text>' if label else ""
        out.append(
            f'<g class="{"front" if lead else "dominated"}"><title>{escape(tip)}</title>'
            f'<circle cx="{x_y[0]}" cy="{x_y[1]}" r="5" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>{text}</g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def place_labels(points: list[tuple[tuple[float, float], str]], box: tuple[float, float, float, float]) -> list[tuple[float, float] | None]:
    """A text anchor (x, y baseline) per (centre, label), or None: each label goes at the first of eight spots
    around its point whose box overlaps no label placed before it and no point, inside `box` (left, top, right,
    bottom); a point crowded on every side keeps only its tooltip, so no two labels ever overlap."""

    def rect(x: float, y: float, text: str) -> tuple[float, float, float, float]:
        return x, y - LABEL_HEIGHT + 2, x + CHAR_WIDTH * len(text), y + 2

    def clear(a, b) -> bool:
        return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]

    dots = [(cx - 5, cy - 5, cx + 5, cy + 5) for (cx, cy), _ in points]
    taken: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float] | None] = []
    for (cx, cy), text in points:
        width, found = CHAR_WIDTH * len(text), None
        for dx, dy in ((7, -6), (7, 14), (-7 - width, -6), (-7 - width, 14), (-width / 2, -9), (-width / 2, 19), (14, 4), (-14 - width, 4)):
            r = rect(cx + dx, cy + dy, text)
            inside = r[0] >= box[0] - 40 and r[2] <= box[2] + 20 and r[1] >= 0 and r[3] <= box[3] + 20
            if inside and all(clear(r, t) for t in taken) and all(clear(r, d) for d in dots):
                found = (round(cx + dx, 1), round(cy + dy, 1))
                taken.append(r)
                break
        out.append(found)
    return out


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart), at least two."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        low, high = (low - 0.5, high + 0.5) if low == 0 else (low - abs(low) * 0.05, high + abs(high) * 0.05)
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    out = [first]
    while out[-1] < high - 1e-12 * step:
        out.append(out[-1] + step)
    return [round(t, 12) for t in out] if len(out) > 1 else [first, first + step]


def short_number(value: float) -> str:
    return f"{value:.6g}" if abs(value) >= 1 else f"{value:.4g}"  # 15000, not 1.5e+04; 0.0001234

"""Whether a group's ranking holds along the budget: the order of its lines at each learning-curve point (validation
first, mean over seeds) and where two lines' order flips ("#3 triplet led #1 contrastive until 1/4 of the budget,
#1 after"). "Still improving" says whether one line's last doubling paid; this says whether the *ranking* would
have been another at a smaller budget, and so may be another at a larger one. Pure functions of lines."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from bench.report.lines import Line, curve_of
from bench.report.verdicts import better

SHOWN_FLIPS = 4  # flips named in the sentence (those involving the best lines first); the rest are counted


def curve_means(line: Line, metric: str) -> dict[float, float]:
    """The line's metric at each curve fraction, averaged over the ok seeds that have it, each seed's points from
    one split (bench.report.lines.curve_of: validation first)."""
    at: dict[float, list[float]] = {}
    for r in line.ok:
        for f, value in curve_of(r, metric)[1].items():
            at.setdefault(f, []).append(value)
    return {f: float(np.mean(v)) for f, v in sorted(at.items())}


def fraction_text(f: float) -> str:
    """0.125 → "1/8", 1.0 → "the end", 0.3 → "0.3"."""
    if f >= 1.0:
        return "the end"
    q = Fraction(f).limit_denominator(64)
    return f"{q.numerator}/{q.denominator}" if abs(float(q) - f) < 1e-9 else f"{f:g}"


def flips(means: list[dict[float, float]], names: list[str], metric: str) -> tuple[list[str], list[float], int]:
    """(sentences, the fractions compared, number of flips) for lines in rank order (the first is the best), given
    each line's `curve_means` ({} for a line without a curve).

    Fractions compared are those every line with a curve has. For each pair of lines, the order at the end is the
    verdict; a flip is the last fraction at which the order was the other one: "#3 triplet led #1 contrastive
    until 1/4 (+0.012), #1 after (+0.020 at the end)" (differences in the metric's direction, mean over seeds)."""
    curves = [(i, c) for i, c in enumerate(means) if c]
    if len(curves) < 2:
        return [], [], 0
    common = sorted(set.intersection(*(set(c) for _, c in curves)))
    if len(common) < 2:
        return [], common, 0
    sign = better(metric)
    found = []
    for x in range(len(curves)):
        for y in range(x + 1, len(curves)):
            (i, ci), (j, cj) = curves[x], curves[y]
            diffs = [sign * (ci[f] - cj[f]) for f in common]
            if diffs[-1] == 0:
                continue
            other = [k for k, d in enumerate(diffs[:-1]) if d * diffs[-1] < 0]
            if not other:
                continue
            last = other[-1]
            lead, trail = (i, j) if diffs[-1] > 0 else (j, i)
            found.append((min(i, j), f"{names[trail]} led {names[lead]} until {fraction_text(common[last])} "
                                      f"(+{abs(diffs[last]):.3f}), {names[lead]} after (+{abs(diffs[-1]):.3f} at the end)"))
    found.sort(key=lambda t: t[0])
    return [text for _, text in found], common, len(found)


def budget_sentence(means: list[dict[float, float]], names: list[str], metric: str) -> str:
    """One paragraph under a group's table: the ranking along the budget, or "" when fewer than two lines have curves."""
    said, common, count = flips(means, names, metric)
    if len(common) < 2:
        return ""
    points = ", ".join(fraction_text(f) for f in common)
    head = f"**Along the budget** ({metric} on the learning curves' split, mean over seeds, at {points}): "
    if not count:
        return head + "no two lines change order — the ranking at the end holds at every curve point."
    shown = "; ".join(said[:SHOWN_FLIPS]) + (f"; and {count - SHOWN_FLIPS} more" if count > SHOWN_FLIPS else "")
    return head + f"{count} pair{'s' * (count != 1)} of lines changed order: {shown}. A ranking that changed with the budget may change again past it."

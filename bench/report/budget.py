"""Whether a group's ranking holds along the budget: the order of its lines at each learning-curve point (validation
first, mean over seeds) and where two lines' order flipped beyond the seeds' noise ("#3 triplet led #1 contrastive
until 1/4 of the budget, #1 after"). "Still improving" says whether one line's last doubling paid; this says whether
the *ranking* would have been another at a smaller budget, and so may be another at a larger one. Pure functions of
lines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from bench.report.lines import Line, curve_of
from bench.report.verdicts import better

SHOWN_FLIPS = 4  # flips named in the sentence (those involving the best lines first); the rest are counted
NOISE_Z = 1.96  # a margin counts when it exceeds this many se of the difference: beyond its own 95 % interval


def curve_points(line: Line, metric: str) -> dict[float, list[float]]:
    """The line's metric at each curve fraction, one value per ok seed that has it, each seed's points from one split
    (bench.report.lines.curve_of: validation first)."""
    at: dict[float, list[float]] = {}
    for r in line.ok:
        for f, value in curve_of(r, metric)[1].items():
            at.setdefault(f, []).append(value)
    return dict(sorted(at.items()))


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """(mean, its standard error: sample sd / √n); the se is None — unknown — with under 2 values or identical ones."""
    if len(values) < 2 or max(values) == min(values):
        return float(np.mean(values)), None
    return float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))


def curve_means(line: Line, metric: str) -> dict[float, tuple[float, float | None]]:
    """{fraction: (mean over the ok seeds, its se)} along the line's learning curve (`curve_points`, `mean_se`)."""
    return {f: mean_se(values) for f, values in curve_points(line, metric).items()}


def fraction_text(f: float) -> str:
    """0.125 → "1/8", 1.0 → "the end", 0.3 → "0.3"."""
    if f >= 1.0:
        return "the end"
    q = Fraction(f).limit_denominator(64)
    return f"{q.numerator}/{q.denominator}" if abs(float(q) - f) < 1e-9 else f"{f:g}"


def difference_se(a: tuple[float, float | None], b: tuple[float, float | None]) -> float | None:
    """The se of a − b for two independent lines' means: √(se_a² + se_b²); None when either line's spread is unknown."""
    return None if a[1] is None or b[1] is None else math.hypot(a[1], b[1])


def beyond_noise(margin: float, se: float | None) -> bool | None:
    """Whether |margin| > NOISE_Z · se; None when the se is unknown."""
    return None if se is None else abs(margin) > NOISE_Z * se


@dataclass(frozen=True)
class Flips:
    """The order changes between a group's lines along the budget: those asserted (sentences, best lines first), the
    fractions compared, and how many were set aside within the seed noise or for want of a seed spread."""

    said: list[str] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    within_noise: int = 0
    unknown_spread: int = 0


def pair_flip(a: dict, b: dict, common: list[float], sign: int) -> tuple[str, int | None] | None:
    """How lines a and b ({fraction: (mean, se)}) changed order over `common`: None when their order at the end held
    at every earlier point (or they end level); else ("flip", the index of the last earlier point where the other line
    led beyond the noise), ("noise", None) or ("unknown", None) — the rule is `flips`'."""
    diffs = [sign * (a[f][0] - b[f][0]) for f in common]
    ses = [difference_se(a[f], b[f]) for f in common]
    if diffs[-1] == 0 or not any(d * diffs[-1] < 0 for d in diffs[:-1]):
        return None
    end = beyond_noise(diffs[-1], ses[-1])
    if end is None:
        return "unknown", None
    earlier = [(k, beyond_noise(diffs[k], ses[k])) for k in range(len(common) - 1) if diffs[k] * diffs[-1] < 0]
    if end and (clear := [k for k, c in earlier if c]):
        return "flip", clear[-1]
    return ("unknown", None) if end and any(c is None for _, c in earlier) else ("noise", None)


def flip_text(a: dict, b: dict, names: tuple[str, str], until: float, end: float, sign: int) -> str:
    """ "#3 triplet led #1 contrastive until 1/4 (+0.012), #1 after (+0.020 at the end)" for lines a and b."""
    before, after = sign * (a[until][0] - b[until][0]), sign * (a[end][0] - b[end][0])
    lead, trail = names if after > 0 else names[::-1]
    return f"{trail} led {lead} until {fraction_text(until)} (+{abs(before):.3f}), {lead} after (+{abs(after):.3f} at the end)"


def flips(means: list[dict[float, tuple[float, float | None]]], names: list[str], metric: str) -> Flips:
    """The order changes of lines in rank order (the first is the best), given each line's `curve_means` ({} for a line
    without a curve).

    Fractions compared are those every line with a curve has. For each pair of lines the order at the end is the
    verdict; the pair flipped when the other line led at some earlier fraction. A flip is asserted only when it is
    beyond the seeds' noise: the margin at the end and the margin at an earlier fraction where the other line led each
    exceed NOISE_Z (1.96) times the se of the difference of the two means at that fraction (√ of the sum of each line's
    sample variance over its seeds / n). It is named at the last such earlier fraction: "#3 triplet led #1 contrastive
    until 1/4 (+0.012), #1 after (+0.020 at the end)" (differences in the metric's direction, mean over seeds). Other
    flips are counted as within the noise, or as of unknown spread when either line has under 2 seeds or identical
    seed values at a fraction the rule needs (its noise unknown, so nothing is asserted)."""
    curves = [(i, c) for i, c in enumerate(means) if c]
    if len(curves) < 2:
        return Flips()
    common = sorted(set.intersection(*(set(c) for _, c in curves)))
    if len(common) < 2:
        return Flips(fractions=common)
    sign = better(metric)
    found, kinds = [], []
    for x in range(len(curves)):
        for y in range(x + 1, len(curves)):
            (i, ci), (j, cj) = curves[x], curves[y]
            if (got := pair_flip(ci, cj, common, sign)) is None:
                continue
            kinds.append(got[0])
            if got[0] == "flip":
                found.append((min(i, j), flip_text(ci, cj, (names[i], names[j]), common[got[1]], common[-1], sign)))
    found.sort(key=lambda t: t[0])
    return Flips([text for _, text in found], common, kinds.count("noise"), kinds.count("unknown"))


def set_aside_text(found: Flips) -> str:
    """The order changes not asserted, as a clause: "13 more order changes within the seed noise (…) not counted"."""
    more = "more " if found.said else ""
    said = []
    if found.within_noise:
        said.append(f"{found.within_noise} {more}order change{'s' * (found.within_noise != 1)} within the seed noise (a margin under {NOISE_Z:g} se)")
    if found.unknown_spread:
        what = "" if said else f" {more}order change{'s' * (found.unknown_spread != 1)}"
        said.append(f"{found.unknown_spread}{what} between lines whose seed spread is unknown (under 2 seeds, or identical values)")
    return " and ".join(said) + " not counted" if said else ""


def budget_sentence(means: list[dict[float, tuple[float, float | None]]], names: list[str], metric: str) -> str:
    """One paragraph under a group's table: the ranking along the budget, its order changes beyond the seed noise
    (`flips`) and how many were set aside, or "" when fewer than two lines have curves."""
    found = flips(means, names, metric)
    if len(found.fractions) < 2:
        return ""
    points = ", ".join(fraction_text(f) for f in found.fractions)
    head = (
        f"**Along the budget** ({metric} on the learning curves' split, mean over seeds, at {points}; an order change "
        f"counts when both its margins, where the other line led and at the end, exceed {NOISE_Z:g} se of the "
        "difference over seeds): "
    )
    aside, count = set_aside_text(found), len(found.said)
    if not count:
        return head + (
            "no two lines change order — the ranking at the end holds at every curve point."
            if not aside
            else f"no two lines change order beyond the seed noise; {aside}."
        )
    shown = "; ".join(found.said[:SHOWN_FLIPS]) + (f"; and {count - SHOWN_FLIPS} more" if count > SHOWN_FLIPS else "")
    return (
        head
        + f"{count} pair{'s' * (count != 1)} of lines changed order: {shown}"
        + (f"; {aside}" if aside else "")
        + ". A ranking that changed with the budget may change again past it."
    )

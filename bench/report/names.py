"""What to call lines shown together: the options that tell them apart, abbreviated ("lite0 · triplet · frozen ·
caffe"), and what they all share. One rule for the plots' legends, the report's figures and MLflow's run names."""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from bench.report.lines import ABSENT
from bench.report.table import FIRST_KEYS, key_columns

ABBREVIATIONS = ((r"^timm/", ""), (r"^efficientnet_", ""), (r"_imagenet$", ""), (r"^pml/", ""))
FREEZE_NAMES = {"none": "", "backbone": "frozen", "backbone_bn_train": "frozen (BN train)"}
DEFAULTS = ("none", "native")  # option values a name leaves out
SEPARATOR = " · "


def varying_columns(frame: pd.DataFrame) -> list[str]:
    """The configuration columns that tell lines apart, in order, leaving out any that follows from one before it."""
    varying: list[str] = []
    for k in key_columns(frame):
        # An option that follows from a column already in the name (image_size from the backbone, an empty
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


def abbreviated(value: str) -> str:
    """A backbone's or loss's name without the prefixes and suffixes every such name carries ("lite0")."""
    for pattern, to in ABBREVIATIONS:
        value = re.sub(pattern, to, value)
    return value


def line_names(frame: pd.DataFrame) -> list[str]:
    """A short, unique name per line (row) of `frame` (a leaderboard frame, or some of its rows): the values of the
    options that tell these lines apart (those that follow from another left out), abbreviated ("lite0 · frozen ·
    caffe · triplet"; the usual choice — none, native — goes without saying, "augment=koch" names the other), and
    " #k" where two lines would still share a name. Options the lines share are left to `shared`."""
    if not len(frame):
        return []
    varying = varying_columns(frame) or list(FIRST_KEYS[:2])  # one configuration: name it
    short = short_names(varying)
    names = []
    for _, line in frame.iterrows():
        parts = []
        for k in varying:
            value = str(line[k])
            if value in (ABSENT, "null", "None") or (k == "model.freeze" and line.get("loss") == "none"):
                continue
            if k in FIRST_KEYS:
                value = abbreviated(value)
                value = "untrained" if k == "loss" and value == "none" else value
            elif k == "model.freeze":
                value = FREEZE_NAMES.get(value, f"freeze {value}")
            elif value in DEFAULTS:
                value = ""
            elif k != "model.preprocess":
                value = f"{short[k]}={value}"
            if value:
                parts.append(value)
        names.append(SEPARATOR.join(parts) or str(line["backbone"]))
    seen = Counter(names)
    count: Counter = Counter()
    out = []
    for name in names:
        count[name] += 1
        out.append(f"{name} #{count[name]}" if seen[name] > 1 else name)
    return out


def shared(frame: pd.DataFrame) -> str:
    """The options every line of `frame` has alike, "option=value, …" (a figure's subtitle)."""
    if not len(frame):
        return ""
    keys = key_columns(frame)
    same = [k for k in keys if frame[k].nunique() == 1 and frame[k].iloc[0] != ABSENT]
    short = short_names(keys, among=varying_columns(frame) or list(FIRST_KEYS[:2]))
    return ", ".join(f"{short[k]}={frame[k].iloc[0]}" for k in same)

"""Untrained baselines (loss = "none"): which trained cells a baseline serves, and one baseline per distance
those cells are scored with. One definition for the grid (which baselines run) and the leaderboard (which
baseline a line's gain is measured against: same key, same scored distance `metrics.distance`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable

from bench.config import HEAD_ARGS, UNTRAINED, Cell

# eval options a baseline is not matched on: the curve and the selection metric act only while training, and the
# distance is matched on what each row was scored with (a grid runs one baseline per distance its lines use)
NOT_MATCHED_EVAL = ("curve", "select_metric", "distance")


def untrained_key(config: dict) -> str:
    """What an untrained baseline shares with the configurations it is the baseline of (a cell's or row's config).

    The backbone and its arguments except the head's, its preprocessing, the data, split, evaluation (but the
    options in NOT_MATCHED_EVAL) and the requested precision: what the backbone's own features depend on. The
    loss, the rest of train, the budget and what is frozen only describe training, which the baseline has none of.
    """
    key = {k: v for k, v in config.items() if k in ("backbone", "dataset", "dataset_args", "split")}
    key["eval"] = {k: v for k, v in config.get("eval", {}).items() if k not in NOT_MATCHED_EVAL}
    if "backbone_args" in config:
        key["backbone_args"] = {k: v for k, v in config["backbone_args"].items() if k not in HEAD_ARGS}
    key["model"] = {k: v for k, v in config.get("model", {}).items() if k == "preprocess"}
    key["train"] = {k: v for k, v in config.get("train", {}).items() if k == "precision"}
    return json.dumps(key, sort_keys=True)


def with_baseline_per_distance(cells: Iterable[Cell], scored: Callable[[Cell], str | None], own: str) -> list[Cell]:
    """`cells` with each untrained cell replaced by one per distance its trained counterparts (same untrained_key)
    are scored with (`scored(cell)`: eval.distance, else the loss's; None when unknown), in place and in order.

    The untrained loss scores with `own` distance: a baseline at eval.distance None stays as it is (same cell id)
    where `own` is needed, the others get eval.distance set. A baseline whose distance was set in the grid stays;
    one that serves no trained cell stays too. Duplicates (the same cell id twice) are kept once."""
    cells = list(cells)
    needed: dict[str, set[str]] = {}
    for cell in cells:
        if cell.loss != UNTRAINED and (distance := scored(cell)) is not None:
            needed.setdefault(untrained_key(cell.to_dict()), set()).add(distance)
    out: dict[str, Cell] = {}
    for cell in cells:
        distances = needed.get(untrained_key(cell.to_dict()), set()) if cell.loss == UNTRAINED else set()
        current = cell.eval.distance or own
        keep = cell.loss != UNTRAINED or not distances or cell.eval.distance is not None or current in distances
        for made in ([cell] if keep else []) + [
            dataclasses.replace(cell, eval=dataclasses.replace(cell.eval, distance=d)) for d in sorted(distances - {current})
        ]:
            out.setdefault(made.cell_id, made)
    return list(out.values())

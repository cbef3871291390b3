"""Reading what a view needs beside the rows: each row's per-item outcomes, from the items folder of whichever
results file holds them. Every view (leaderboard, effects) loads items through here."""

from __future__ import annotations

import json
from pathlib import Path

from bench.schema import Row


def items_loader(paths: list[Path]):
    """`load(row)`: the row's per-item arrays (bench.items.read_items), read from the items folder of whichever of
    `paths` (results files) holds its items file — rows merged from several files do not say which — once per row;
    None for a row without items (older rows, trial rows) or whose file is missing or changed (read_items warns)."""
    from bench.items import items_path, read_items

    paths = [Path(p) for p in paths]
    cache: dict[str, dict | None] = {}

    def load(row: Row):
        if row.items is None:
            return None
        key = json.dumps([row.cell_id, row.items.to_dict()], sort_keys=True)
        if key not in cache:
            found = [p for p in paths if (f := items_path(p, row.items)) is not None and f.is_file()]
            cache[key] = read_items(found[0] if found else paths[0], row.items)  # none found: read_items says so, once
        return cache[key]

    return load

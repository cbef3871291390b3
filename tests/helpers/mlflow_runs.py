"""Exports into a throwaway MLflow store and reads its runs back."""

from __future__ import annotations

import json
from pathlib import Path

from boards import raw_rows  # noqa: F401 (the tests import it from here too)
from mlflow import MlflowClient
from paths import ROOT, link_items

from bench.cli import main
from bench.schema import Row

RESULTS = ROOT / "results"


QUICK = RESULTS / "seed_question_quick.jsonl"  # 15 ok rows with learning curves, 8 lines


def export(store: str, experiment: str, *files, extra=()) -> int:
    return main(["export", "mlflow", *map(str, files), "--tracking-uri", store, "--experiment", experiment, *extra])


def runs(store: str, experiment: str) -> tuple[list, list]:
    """(parents, children) of the experiment's active runs."""
    client = MlflowClient(store)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return [r for r in found if r.data.tags.get("bench.kind") != "cell"], [r for r in found if r.data.tags.get("bench.kind") == "cell"]


def write(path: Path, rows: list) -> Path:
    """Rows (`Row`s or their dicts) into a results file, beside the committed items."""
    path.write_text("".join(json.dumps(r.to_dict() if isinstance(r, Row) else r) + "\n" for r in rows))
    link_items(path.parent)
    return path

"""The `[search]` table of a grid: how many trials, which validation metric, which sampler, and the searched
options as ranges. Structure only; config.py checks each range against the options and plugins it sets."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

from bench.config.metrics import definition
from bench.errors import UserError, did_you_mean
from bench.typecheck import matches, type_name

KINDS = ("log", "range", "choices")
# Every trial trains on this seed, which no final replicate may use, so the seeds scored on test are runs the
# selection never saw (a grid whose axes.seed lists it is refused). Part of a study's identity: a study of an
# earlier rule (trials on the grid's first seed) is not continued.
TRIAL_SEED = 1_000_000
SEARCHABLE = ("train", "model", "loss", "backbone")  # what is trained and how; never the data, the split, the budget or the evaluation
NOT_SEARCHABLE_WHY = {
    "budget": "the budget is what every configuration shares",
    "split": "the split decides what is measured",
    "eval": "evaluation options decide what is measured",
    "dataset": "the data is what every configuration shares",
}


@dataclass(frozen=True)
class Dimension:
    """One searched option: `kind` "log" or "range" between `low` and `high` (ints when `integer`), or "choices"."""

    option: str  # "train.lr", "loss.margin"
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    integer: bool = False

    @property
    def section(self) -> str:
        return self.option.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.option.split(".", 1)[1]

    def edge_values(self) -> tuple:
        """The values that validation checks against the option: both ends of a range, or every choice."""
        return self.choices if self.kind == "choices" else (self.low, self.high)

    def describe(self) -> str:
        if self.kind == "choices":
            return f"one of {list(self.choices)}"
        return f"{'log-uniform' if self.kind == 'log' else 'uniform'} {'integer ' if self.integer else ''}in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class SearchSpec:
    trials: int  # per configuration (every combination of the non-searched axes, seeds aside)
    metric: str = "verification_roc_auc"  # scored on validation (averaged over split.folds when set)
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0  # trial n's sampler is seeded from (seed, n): a resumed search asks what an uninterrupted one would
    prune: bool = True  # Optuna's median rule on learning-curve points (acts only with eval.curve)
    parallel: int = 1  # trials of one configuration in flight at once (raise with --workers / Ray / Slurm)
    defaults: bool = False  # also run every configuration at its unsearched values on every seed, for comparison
    dims: tuple[Dimension, ...] = ()

    def identity(self) -> dict:
        """What makes a study: everything but the trial count (raising `trials` continues a study) and `parallel`;
        with the seed its trials train on."""
        return {
            "trial_seed": TRIAL_SEED,
            "metric": self.metric,
            "sampler": self.sampler,
            "seed": self.seed,
            "prune": self.prune,
            "space": {d.option: [d.kind, d.low, d.high, list(d.choices), d.integer] for d in self.dims},
        }


def parse_search(table: Any, where: str) -> SearchSpec | None:
    """The [search] table's own rules (kinds, bounds, settings); None when the grid has none."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise UserError(f"{where}: [search] must be a table, e.g. [search] trials = 20")
    settings = {k: v for k, v in table.items() if "." not in k}
    hints = typing.get_type_hints(SearchSpec)
    allowed = [f.name for f in dataclasses.fields(SearchSpec) if f.name != "dims"]
    for key, value in settings.items():
        if key not in allowed:
            raise UserError(
                f'{where}: unknown key {key!r} in [search]; {did_you_mean(key, allowed)}allowed: {", ".join(allowed)}, or a searched option such as "train.lr" = {{ log = [1e-5, 1e-2] }}'
            )
        if not matches(value, hints[key]):
            raise UserError(f"{where}: [search] {key} = {value!r} should be {type_name(hints[key])}")
    if "trials" not in settings:
        raise UserError(f"{where}: [search] has no trials — set how many trials each configuration gets, e.g. trials = 20")
    for key in ("trials", "parallel"):
        if key in settings and settings[key] < 1:
            raise UserError(f"{where}: [search] {key} = {settings[key]} must be at least 1")
    if settings.get("seed", 0) < 0:
        raise UserError(f"{where}: [search] seed = {settings['seed']} must be 0 or more")
    spec = SearchSpec(**settings)
    d = definition(spec.metric)
    if d is None or d.direction == "none" or spec.metric.endswith("_val_threshold"):
        why = "needs a threshold from a validation split of its own" if d is not None and spec.metric.endswith("_val_threshold") else "is not a score"
        raise UserError(
            f'{where}: [search] metric = {spec.metric!r} {why} — use a validation score such as "verification_roc_auc", "recall_at_1" or "few_shot_20way_1shot_accuracy"'
        )
    dims = tuple(_dimension(key, value, where) for key, value in table.items() if "." in key)
    if not dims:
        raise UserError(f'{where}: [search] searches no option — add one, e.g. "train.lr" = {{ log = [1e-5, 1e-2] }}')
    return dataclasses.replace(spec, dims=dims)


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    head = key.split(".", 1)[0]
    if head in NOT_SEARCHABLE_WHY:
        raise UserError(f"{where}: [search] {key!r} cannot be searched: {NOT_SEARCHABLE_WHY[head]} — search {', '.join(s + '.*' for s in SEARCHABLE)} options")
    if head not in SEARCHABLE or not key.split(".", 1)[1]:
        raise UserError(f"{where}: [search] {key!r} is not an option — searched options are {', '.join(s + '.<option>' for s in SEARCHABLE)}")
    example = f'"{key}" = {{ log = [1e-5, 1e-2] }}, {{ range = [0.0, 1.0] }} or {{ choices = [a, b] }}'
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise UserError(f"{where}: [search] {key!r} must be a table with one of {', '.join(KINDS)}, e.g. {example}")
    kind, value = next(iter(spec.items()))
    if kind == "choices":
        if not isinstance(value, list) or not value or any(isinstance(v, (list, dict)) for v in value):
            raise UserError(f"{where}: [search] {key!r} choices must be a non-empty list of plain values, e.g. choices = [0, 1e-4]")
        if len({repr(v) for v in value}) != len(value):
            raise UserError(f"{where}: [search] {key!r} choices = {value!r} repeat a value — list each once")
        return Dimension(key, kind, choices=tuple(value))
    numbers = isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers or not all(math.isfinite(v) for v in value) or value[0] >= value[1]:
        raise UserError(f"{where}: [search] {key!r} {kind} = {value!r} must be two finite numbers [low, high] with low < high")
    if kind == "log" and value[0] <= 0:
        raise UserError(f"{where}: [search] {key!r} log = {value!r}: a log range needs low > 0 — use range = [...] to include 0")
    return Dimension(key, kind, low=value[0], high=value[1], integer=all(isinstance(v, int) for v in value))

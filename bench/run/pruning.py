"""The median rule of Optuna's MedianPruner, split where a search runs: the coordinator computes a trial's bar
when it sends the trial (`median_bar`), and the cell applies it at each curve point (`Pruner`), because a cell on
a worker, Ray or Slurm cannot ask the study."""

from __future__ import annotations

import math

import numpy as np

from bench.config import Cell
from bench.config.metrics import lower_is_better

STARTUP_TRIALS = 5  # MedianPruner's n_startup_trials: completed trials before any pruning


def median_bar(completed: list[list], steps: int) -> tuple:
    """The bar at each curve point but the last (a trial that finished training is not discarded): the median of
    the completed trials' finite values there, None where none has one; () before STARTUP_TRIALS have completed.
    `completed`: each completed trial's metric at its curve points, in order."""
    if steps < 2 or len(completed) < STARTUP_TRIALS:
        return ()
    bar = []
    for step in range(steps - 1):
        values = [v[step] for v in completed if len(v) > step and v[step] is not None and math.isfinite(v[step])]
        bar.append(float(np.median(values)) if values else None)
    return tuple(bar)


class Pruner:
    """Applies a trial's bar (cell.trial.prune_at) to the values it reports, across folds in turn: prune when its
    best value so far is worse than the bar at its latest point, or when it has no finite value at all. A fold
    whose last point prunes has trained its budget; the trial then stops before the next fold (bench.run.cell)."""

    def __init__(self, cell: Cell):
        self.bar = cell.trial.prune_at if cell.trial else ()
        self.metric = cell.trial.metric if cell.trial else ""
        self.lower = bool(cell.trial) and lower_is_better(self.metric)
        self.values: list[float] = []
        self.pruned = False  # the rule said stop: also at a fold's last point, where that fold's training had ended

    def report(self, metrics: dict) -> bool:
        """True: stop this trial now (steps are numbered across folds, as Optuna's are)."""
        self.values.append(float(metrics.get(self.metric, math.nan)))
        self.pruned = self.pruned or self._prune(len(self.values) - 1)
        return self.pruned

    def _prune(self, step: int) -> bool:
        if step >= len(self.bar):
            return False
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return True
        best = min(finite) if self.lower else max(finite)
        return self.bar[step] is not None and (best > self.bar[step] if self.lower else best < self.bar[step])

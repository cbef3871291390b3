"""Trials ⇄ Optuna. The result rows are the record: before each ask the study is rebuilt from the finished trial
rows, and trial n's sampler is seeded from (search seed, n), so a killed search resumes asking exactly what an
uninterrupted one would have, and a finished one asks nothing. Optuna is imported only here (`[search]` extra).

A configuration is one combination of the grid's non-searched axes, seeds aside; its study has `trials` trials,
each trained on TRIAL_SEED (never a grid seed) and scored on validation (bench.run.cell). Then its best trial's
options run on every seed of the grid, scored on test: those rows are the leaderboard's, and none of them is a
run the selection saw.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace

from bench.config import Cell, Grid, Trial
from bench.config.metrics import lower_is_better
from bench.config.space import TRIAL_SEED, Dimension, SearchSpec
from bench.errors import UserError
from bench.grid import searched_in, with_params
from bench.results import latest_rows
from bench.run.pruning import median_bar
from bench.run.train import curve_points
from bench.schema import Row


@dataclass(frozen=True)
class Configuration:
    """One study: the grid cells that differ only by seed, and the options searched in them."""

    study: str
    cells: tuple[Cell, ...]  # one per seed of the grid, searched options at their grid values
    dims: tuple[Dimension, ...]

    @property
    def base(self) -> Cell:
        """The cell every trial starts from: the configuration on TRIAL_SEED, a seed none of its final cells has."""
        return replace(self.cells[0], seed=TRIAL_SEED)


def configurations(grid: Grid) -> tuple[list[Configuration], list[Cell]]:
    """(the studies, the grid cells that nothing is searched in: the untrained baselines, or a configuration
    whose plugins take none of the searched arguments)."""
    spec = grid.search
    studies: dict[str, list[Cell]] = {}
    dims: dict[str, tuple[Dimension, ...]] = {}
    plain = []
    for cell in grid.cells:
        acting = searched_in(cell, spec.dims)
        if not acting:
            plain.append(cell)
            continue
        key = study_id(cell, acting, spec)
        studies.setdefault(key, []).append(cell)
        dims[key] = acting
    return [Configuration(key, tuple(cells), dims[key]) for key, cells in studies.items()], plain


def study_id(cell: Cell, dims: tuple[Dimension, ...], spec: SearchSpec) -> str:
    """The configuration's canonical config without its seed and without the searched options' grid values,
    plus the search's identity (its space, metric, sampler, seed): changing any of them starts a new study."""
    config = cell.identity()
    config.pop("seed")
    for dim in dims:
        config[dim.section if dim.section in ("train", "model") else f"{dim.section}_args"].pop(dim.name, None)
    canonical = json.dumps({"config": config, "search": spec.identity()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def trial_rows(rows: list[Row], study: str) -> dict[int, Row]:
    """The newest row of each finished trial of `study`, by trial number."""
    found = {}
    for row in latest_rows(rows).values():
        trial = row.config.get("trial")
        if trial and trial.get("study") == study:
            found[trial["number"]] = row
    return dict(sorted(found.items()))


def curve_steps(cell: Cell) -> int:
    """Intermediate values a trial reports: each curve point (1.0 included) of each fold in turn."""
    return len(curve_points(cell.eval.curve)) * max(cell.split.folds, 1)


class Search:
    """Asks each study's next trials and, once a study has all its trials, names its final cells."""

    def __init__(self, grid: Grid):
        self.spec = grid.search
        self.studies, self.plain = configurations(grid)
        self.lower = lower_is_better(self.spec.metric)
        self.optuna = _optuna()

    def next_trials(self, rows: list[Row]) -> list[Cell]:
        """Up to `parallel` unfinished trials of each study (lowest numbers first); [] when every study is done."""
        cells = []
        for conf in self.studies:
            done = trial_rows(rows, conf.study)
            missing = [n for n in range(self.spec.trials) if n not in done][: self.spec.parallel]
            if missing:
                cells += self._ask(conf, done, missing)
        return cells

    def planned(self) -> int:
        """Trials and final cells of a whole search."""
        return sum(self.spec.trials + len(conf.cells) for conf in self.studies)

    def pending(self, rows: list[Row]) -> int:
        """Trials and final cells still to run (a study's finals count until it has chosen and run them)."""
        latest = latest_rows(rows)
        count = 0
        for conf in self.studies:
            done = trial_rows(rows, conf.study)
            missing = sum(n not in done for n in range(self.spec.trials))
            if missing:
                count += missing + len(conf.cells)
            elif (best := self.best(rows, conf)) is not None:
                ids = [with_params(c, best["params"]).cell_id for c in conf.cells]
                count += sum(i not in latest or chosen_by_another(latest[i], conf.study) for i in ids)
        return count

    def preflight_cells(self) -> list[Cell]:
        """Trial cells with each searched option, one at a time, at each end of its range and at each choice: a
        value that cannot build fails before the first trial, and the split check sees cells scored on validation."""
        cells = []
        for conf in self.studies:
            for dim in conf.dims:
                for value in dim.edge_values():
                    cell = with_params(conf.base, {dim.option: value})
                    cells.append(replace(cell, trial=Trial(conf.study, -1, {dim.option: value}, self.spec.metric)))
        return cells

    def _ask(self, conf: Configuration, done: dict[int, dict], numbers: list[int]) -> list[Cell]:
        optuna = self.optuna
        distributions = {d.option: _distribution(optuna, d) for d in conf.dims}
        study = optuna.create_study(direction="minimize" if self.lower else "maximize")
        for row in done.values():
            study.add_trial(self.frozen_trial(optuna, row, distributions))
        bar = self.prune_bar(done, conf.base) if self.spec.prune else ()
        cells = []
        for number in numbers:
            study.sampler = self._sampler(optuna, number)
            params = study.ask(distributions).params
            cell = with_params(conf.base, params)  # a trial's weights are not kept (train.save): the final cells' are
            cells.append(replace(cell, trial=Trial(conf.study, number, params, self.spec.metric, bar), train=replace(cell.train, save="none")))
        return cells

    def _sampler(self, optuna, number: int):
        digest = hashlib.sha256(f"{self.spec.seed}:{number}".encode()).digest()
        seed = int.from_bytes(digest[:4], "little")
        return optuna.samplers.TPESampler(seed=seed) if self.spec.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)

    def frozen_trial(self, optuna, row: Row, distributions: dict):
        """A finished trial row as an Optuna trial: COMPLETE with its objective, PRUNED, or FAIL."""
        params = {k: v for k, v in row.config["trial"]["params"].items() if k in distributions}
        found = (row.search.intermediate if row.search else None) or []
        intermediate = {i: v for i, v in enumerate(found) if v is not None and math.isfinite(v)}
        state = optuna.trial.TrialState
        objective = row.search.objective if row.search else None
        if row.ok and objective is not None and math.isfinite(objective):
            return optuna.trial.create_trial(
                state=state.COMPLETE, value=objective, params=params, distributions=distributions, intermediate_values=intermediate
            )
        kind = state.PRUNED if row.status == "pruned" else state.FAIL
        return optuna.trial.create_trial(state=kind, params=params, distributions=distributions, intermediate_values=intermediate)

    def prune_bar(self, done: dict[int, Row], cell: Cell) -> tuple:
        """The median rule's bar for the study's next trials, from its completed trials' curve values."""
        complete = [r.search.intermediate for r in done.values() if completed(r)]
        return median_bar(complete, curve_steps(cell))

    def best(self, rows: list[Row], conf: Configuration) -> dict | None:
        """The study's best completed trial: {trial, params, objective, trials, pruned, failed}; None if none completed."""
        done = trial_rows(rows, conf.study)
        complete = [(n, r) for n, r in done.items() if completed(r)]
        if not complete:
            return None
        sign = 1 if self.lower else -1
        number, row = min(complete, key=lambda nr: (sign * nr[1].search.objective, nr[0]))
        pruned = sum(r.status == "pruned" for r in done.values())
        return {
            "study": conf.study,
            "trial": number,
            "params": row.config["trial"]["params"],
            "metric": self.spec.metric,
            "objective": row.search.objective,
            "trials": len(done),
            "pruned": pruned,
            "failed": len(done) - len(complete) - pruned,
        }

    def final_cells(self, rows: list[Row]) -> tuple[list[Cell], dict[str, dict], list[str]]:
        """(every study's best options on every seed, scored on test; the `search` record each of their rows
        carries, by cell id; the studies with no completed trial)."""
        cells, records, empty = [], {}, []
        for conf in self.studies:
            best = self.best(rows, conf)
            if best is None:
                empty.append(conf.study)
                continue
            for cell in conf.cells:
                final = with_params(cell, best["params"])
                cells.append(final)
                records[final.cell_id] = {**best, "role": "final"}
        return cells, records, empty


def chosen_by_another(row: Row | None, study: str) -> bool:
    """Whether a final cell's row was left by another study (of another space or rule, which chose the same
    options from other trials): it runs again, so that its `search` record names the trials that chose it."""
    return row is not None and row.search is not None and row.search.study != study


def completed(row: Row) -> bool:
    """A trial that finished ok with a finite objective."""
    return row.ok and row.search is not None and _finite(row.search.objective)


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _distribution(optuna, dim: Dimension):
    d = optuna.distributions
    if dim.kind == "choices":
        return d.CategoricalDistribution(list(dim.choices))
    if dim.integer:
        return d.IntDistribution(int(dim.low), int(dim.high), log=dim.kind == "log")
    return d.FloatDistribution(float(dim.low), float(dim.high), log=dim.kind == "log")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("[search] needs Optuna, which is not installed — pip install 'metric-bench[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna

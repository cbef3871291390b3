"""grid.toml → validated, frozen cells. Everything a cell needs is checked here, before any training."""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import itertools
import json
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from bench.baselines import with_baseline_per_distance
from bench.builtins import load_builtins
from bench.config import HEAD_ARGS, NOT_IDENTITY, SECTIONS, UNTRAINED, Budget, Cell, Grid, ModelConfig, TrainConfig
from bench.config.metrics import definition
from bench.config.space import TRIAL_SEED, Dimension, SearchSpec, parse_search
from bench.errors import UserError, did_you_mean, nonfinite_numbers, read_text
from bench.plugins import BACKBONES, DATASETS, LOSSES
from bench.registry import Registry
from bench.typecheck import check_call_args, matches, resolved_hints, type_name

RESOURCES = {"cpus": int, "gpus": float, "mem_gb": float}
SLURM = {"partition": str, "time_min": int, "account": str, "qos": str, "constraint": str}


MAY_BE_ZERO = {"weight_decay", "val_fraction", "folds", "fold", "seed", "warmup"}
FRACTIONS = {"tar_far", "warmup"}  # numbers that must lie below 1
UP_TO_ONE = {"curve"}  # list elements in (0, 1]
# options that act only in some cells: (section, option, the condition under which it acts, why)
INERT = (
    ("split", "fold", lambda cell, kind: cell.split.folds > 0, "it acts only with split.folds > 0"),
    ("model", "unfrozen_stages", lambda cell, kind: cell.model.freeze == "all_but_last_n", 'it acts only with model.freeze = "all_but_last_n"'),
    ("train", "m_per_class", lambda cell, kind: kind in ("m_per_class", None), "it acts only with losses that take m-per-class batches (pml/*)"),
)
FAMILIES: dict[str, Registry] = {"backbone": BACKBONES, "loss": LOSSES, "dataset": DATASETS}
TOP_KEYS = ("name", "axes", "exclude", *SECTIONS, *FAMILIES, "resources", "slurm", "search", "report")
REPORT = {
    "metric": "the score every view ranks lines by unless --metric says otherwise (default: a search's metric, else verification_roc_auc)",
    "equivalence": "the margin δ within which a line is 'equivalent' to the best (its simultaneous interval inside ±δ); none by default",
    "target": "the difference 'seeds to detect' is asked of (default 0.02)",
}
CALL_SKIP = {"backbone": (), "loss": ("embed_dim",), "dataset": ()}  # arguments the runner passes itself


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    text = read_text(path, "grid file", "give the path of a grid .toml file (see docs/grids.md)")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}) — fix the syntax") from None
    return parse_grid(raw, str(path), default_name=path.stem)


def parse_grid(raw: dict, where: str, default_name: str = "grid") -> Grid:
    bad = nonfinite_numbers(raw)
    if bad:  # checked once for the whole file: a budget, an option, an axis value or a plugin argument
        raise UserError(f"{where}: {bad[0]} is not a finite number — every number in a grid must be finite (use a large finite value)")
    _no_unknown(raw, TOP_KEYS, where, "top level")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise UserError(f"{where}: name = {name!r} must be a non-empty string of letters, digits, '-', '_', '.'")
    sections = {k: _section(raw.get(k, {}), cls, where, k) for k, cls in SECTIONS.items()}
    _check_budget(sections["budget"], where)
    load_builtins()  # only now: the checks above need no plugin, and importing the built-ins imports torch (seconds)
    axes = _axes(raw.get("axes"), where)
    static = {fam: _plugin_tables(raw.get(fam, {}), fam, axes, where) for fam in FAMILIES}
    excludes = _excludes(raw.get("exclude", []), axes, where)

    cells: dict[str, Cell] = {}
    excluded = 0
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)):
        point = dict(zip(keys, combo))
        if any(_excluded(point, ex) for ex in excludes):
            excluded += 1
            continue
        cell = _without_inert_options(_make_cell(point, static, sections, where))
        _check_cell(cell, where)
        cells.setdefault(cell.cell_id, cell)  # axis args a plugin doesn't take make duplicates: keep one
    if not cells:
        raise UserError(f"{where}: [[exclude]] removes every cell — loosen the excludes")
    _check_inert_axes(axes, cells.values(), where)
    resources, slurm = (_run_table(raw.get(k, {}), spec, where, k) for k, spec in (("resources", RESOURCES), ("slurm", SLURM)))
    search = parse_search(raw.get("search"), where)
    if search is not None:
        search = _check_search(search, axes, list(cells.values()), where)
    cells = with_baseline_per_distance(cells.values(), _scored_distance, _loss_facts(UNTRAINED, {})[1])  # after [search]: it tunes no baseline
    return Grid(name, where, tuple(cells), excluded, resources, slurm, search, _report(raw.get("report", {}), where))


def _report(table: Any, where: str) -> dict:
    """[report]: the views' metric (a score) and positive finite numbers for the other keys of REPORT (what the
    leaderboard, report, effects, plots and MLflow read from the rows)."""
    if not isinstance(table, dict):
        raise UserError(f'{where}: [report] must be a table, e.g. [report] metric = "recall_at_1"')
    _no_unknown(table, tuple(REPORT), where, "[report]")
    for key, value in table.items():
        if key == "metric":
            if not isinstance(value, str) or (d := definition(value)) is None or d.direction == "none":
                raise UserError(f'{where}: [report] metric = {value!r} is not a score (see docs/metrics.md), e.g. "recall_at_1"')
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UserError(f"{where}: [report] {key} = {value!r} must be a positive number — {REPORT[key]}")
    return {k: v if k == "metric" else float(v) for k, v in table.items()}


def _run_table(table: Any, spec: dict, where: str, name: str) -> dict:
    """[resources] and [slurm]: how to run cells, checked as strictly as the rest (numbers positive, gpus ≥ 0)."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: [{name}] must be a table")
    _no_unknown(table, list(spec), where, f"[{name}]")
    for key, value in table.items():
        if not matches(value, spec[key]):
            raise UserError(f"{where}: [{name}] {key} = {value!r} should be {type_name(spec[key])}")
        if spec[key] is not str and (value < 0 or (value == 0 and key != "gpus")):
            raise UserError(f"{where}: [{name}] {key} = {value!r} must be positive")
    return dict(table)


def _no_unknown(table: dict, allowed, where: str, what: str) -> None:
    for key in table:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r} in {what}; {did_you_mean(key, allowed)}allowed: {', '.join(allowed)}")


def _section(table: Any, cls, where: str, name: str):
    if not isinstance(table, dict):
        raise UserError(f"{where}: [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    _no_unknown(table, [f.name for f in dataclasses.fields(cls)], where, f"[{name}]")
    for key, value in table.items():
        if not matches(value, hints[key]):
            raise UserError(f"{where}: [{name}] {key} = {value!r} should be {type_name(hints[key])}")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if item <= 0 and not (key in MAY_BE_ZERO and item == 0):
                    raise UserError(f"{where}: [{name}] {key} = {value!r} must be positive{' (every element)' if isinstance(value, list) else ''}")
                if key in FRACTIONS and item >= 1:
                    raise UserError(f"{where}: [{name}] {key} = {value!r}: every element must be a fraction between 0 and 1")
                if key in UP_TO_ONE and item > 1:
                    raise UserError(f"{where}: [{name}] {key} = {value!r}: every element must be a fraction of the budget in (0, 1]")
        if key in UP_TO_ONE and list(value) != sorted(set(value)):
            raise UserError(f"{where}: [{name}] {key} = {value!r} must be increasing, without repeats, e.g. [0.125, 0.25, 0.5, 1.0]")
        if key == "episode_group" and value and not all(c.isalnum() or c == "_" for c in value):
            raise UserError(f"{where}: [{name}] episode_group = {value!r} must be letters, digits and '_' (it names metrics), e.g. \"alphabet\"")
        if key == "select_metric" and ((d := definition(value)) is None or d.direction == "none"):
            raise UserError(f'{where}: [{name}] select_metric = {value!r} is not a score (see docs/metrics.md), e.g. "verification_roc_auc"')
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return cls(**values)


def _check_budget(budget: Budget, where: str) -> None:
    if all(v is None for v in asdict(budget).values()):
        raise UserError(f"{where}: [budget] sets no limit — set max_steps, max_samples or max_seconds")


def _axes(table: Any, where: str) -> dict[str, list]:
    if not isinstance(table, dict):
        raise UserError(f"{where}: missing [axes] table — add at least axes.backbone and axes.loss")
    axes = {"dataset": ["digits"], "seed": [0], **table}
    for required in ("backbone", "loss"):
        if required not in table:
            raise UserError(f"{where}: [axes] has no {required!r} — list at least one {required} (see `bench ls {required}s`)")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}: [axes] {key} must be a non-empty list, e.g. {key} = [...]")
        if key in FAMILIES:
            for v in values:
                if not isinstance(v, str):
                    raise UserError(f"{where}: [axes] {key} entries must be names (strings), got {v!r}")
                _get(FAMILIES[key], v, where)
        elif key == "seed":
            if not all(matches(v, int) for v in values):
                raise UserError(f"{where}: [axes] seed = {values!r} must be a list of integers")
        else:
            head, dot, arg = key.partition(".")
            if not dot or head not in (*SECTIONS, *FAMILIES) or head == "budget":
                raise UserError(
                    f"{where}: [axes] unknown axis {key!r}; axes are backbone, loss, dataset, seed, "
                    f"train.<option>, model.<option>, split.<option>, eval.<option> or <backbone|loss|dataset>.<argument>"
                )
            if head in SECTIONS:
                for v in values:
                    _section({arg: v}, SECTIONS[head], where, f"{head} (axis {key!r})")
    for family in FAMILIES:
        for key in [k for k in axes if k.startswith(family + ".")]:
            arg = key.split(".", 1)[1]
            if not any(_takes(FAMILIES[family].get(n).factory, arg) for n in axes[family]):
                raise UserError(f"{where}: [axes] {key!r}: no {family} in axes.{family} takes argument {arg!r}")
    return axes


def _get(registry: Registry, name: str, where: str):
    try:
        return registry.get(name)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _takes(factory, arg: str) -> bool:
    params = inspect.signature(factory).parameters
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _plugin_tables(table: Any, family: str, axes: dict, where: str) -> dict[str, dict]:
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise UserError(f'{where}: [{family}] must hold one table per {family} name, e.g. [{family}."NAME"]')
    for name in table:
        if name not in axes[family]:
            raise UserError(f"{where}: [{family}.{name!r}] sets arguments for a {family} not in axes.{family} — add it there or remove the table")
    return table


def _excludes(entries: Any, axes: dict, where: str) -> list[dict]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{where}: exclude must be an array of tables, [[exclude]]")
    for i, entry in enumerate(entries):
        if not entry:
            raise UserError(f"{where}: [[exclude]] #{i + 1} is empty — name axis values to exclude")
        _no_unknown(entry, list(axes), where, f"[[exclude]] #{i + 1}")
    return entries


def _excluded(point: dict, rule: dict) -> bool:
    def hit(value, pattern) -> bool:
        if isinstance(pattern, list):
            return any(hit(value, p) for p in pattern)
        if isinstance(pattern, str) and isinstance(value, str):
            return fnmatch.fnmatchcase(value, pattern)
        return value == pattern

    return all(hit(point[k], v) for k, v in rule.items())


def _make_cell(point: dict, static: dict, sections: dict, where: str) -> Cell:
    args = {}
    for family, registry in FAMILIES.items():
        name = point[family]
        factory = registry.get(name).factory
        a = dict(static[family].get(name, {}))
        for key, value in point.items():
            if key.startswith(family + ".") and _takes(factory, key.split(".", 1)[1]):
                a[key.split(".", 1)[1]] = value
        _check_args_once(factory, a, f"{where}: [{family}.{json.dumps(name)}]", CALL_SKIP[family])
        args[family] = a
    overrides = {s: {k.split(".", 1)[1]: v for k, v in point.items() if k.startswith(s + ".")} for s in SECTIONS}
    made = {s: dataclasses.replace(sections[s], **{k: tuple(v) if isinstance(v, list) else v for k, v in o.items()}) for s, o in overrides.items()}
    return Cell(
        backbone=point["backbone"],
        loss=point["loss"],
        dataset=point["dataset"],
        seed=point["seed"],
        backbone_args=args["backbone"],
        loss_args=args["loss"],
        dataset_args=args["dataset"],
        **made,
    )


def _check_cell(cell: Cell, where: str) -> None:
    """Checks that involve more than one option of a cell."""
    if cell.train.select == "best" and not cell.eval.curve:
        raise UserError(f'{where}: train.select = "best" chooses among curve points and eval.curve is empty — set e.g. eval.curve = [0.25, 0.5, 1.0]')


def _without_inert_options(cell: Cell) -> Cell:
    """Reset options that cannot act in this cell to their defaults, so they neither make duplicate cells
    (identical training under different ids) nor appear in the row as if they had mattered."""
    if cell.loss == UNTRAINED:  # nothing trains: only the trunk, its input and its precision matter
        # train.save stays: the untrained trunk can win, and `bench embed`/`verify` then need its checkpoint (save is
        # not part of a cell's identity, so keeping it makes no new cell)
        train = TrainConfig(precision=cell.train.precision, save=cell.train.save)
        return dataclasses.replace(
            cell,
            train=train,
            model=ModelConfig(preprocess=cell.model.preprocess),
            eval=dataclasses.replace(cell.eval, curve=()),
            backbone_args={k: v for k, v in cell.backbone_args.items() if k not in HEAD_ARGS},
            split=cell.split if cell.split.folds > 0 else dataclasses.replace(cell.split, fold=0),
        )  # split.fold as in trained cells
    kind = _batch_kind(cell.loss, cell.loss_args)
    for section, option, acts, _ in INERT:
        if not acts(cell, kind):
            default = getattr(SECTIONS[section](), option)
            cell = dataclasses.replace(cell, **{section: dataclasses.replace(getattr(cell, section), **{option: default})})
    return cell


def _check_inert_axes(axes: dict, cells, where: str) -> None:
    """An axis over an option that acts in no cell of the grid is an error (it would only relabel cells)."""
    for section, option, _, why in INERT:
        key = f"{section}.{option}"
        if len(axes.get(key, [])) > 1 and len({getattr(getattr(c, section), option) for c in cells}) <= 1:
            raise UserError(f"{where}: [axes] {key!r} changes nothing in any cell: {why} — remove the axis or add that setting")


_LOSS_FACTS: dict[str, tuple] = {}


def _loss_facts(loss: str, args: dict) -> tuple:
    """(batch, distance) a loss declares, built once with a small embed_dim (a plugin may set them per instance);
    (None, None) if it cannot be built here (the runner's preflight then reports the build error)."""
    key = json.dumps([loss, args], sort_keys=True)
    if key not in _LOSS_FACTS:
        try:
            built = LOSSES.get(loss).factory(16, **args)
            _LOSS_FACTS[key] = (getattr(built, "batch", None), getattr(built, "distance", None))
        except Exception:
            _LOSS_FACTS[key] = (None, None)
    return _LOSS_FACTS[key]


def _batch_kind(loss: str, args: dict) -> str | None:
    return _loss_facts(loss, args)[0]


def _scored_distance(cell: Cell) -> str | None:
    """The distance a cell's metrics are computed with: eval.distance, else its loss's own."""
    return cell.eval.distance or _loss_facts(cell.loss, cell.loss_args)[1]


def searched_in(cell: Cell, dims: tuple[Dimension, ...]) -> tuple[Dimension, ...]:
    """The searched options that act in this cell: its plugin takes the argument, the option is not inert
    here, and something trains (the untrained baseline has nothing to tune)."""
    if cell.loss == UNTRAINED:
        return ()
    kind = _batch_kind(cell.loss, cell.loss_args)
    inert = {f"{s}.{o}" for s, o, acts, _ in INERT if not acts(cell, kind)}
    return tuple(
        d for d in dims if d.option not in inert and (d.section in SECTIONS or _takes(FAMILIES[d.section].get(getattr(cell, d.section)).factory, d.name))
    )


def with_params(cell: Cell, params: dict, **changes) -> Cell:
    """`cell` with searched options set to `params` ({"train.lr": 3e-4, "loss.margin": 0.2})."""
    for option, value in params.items():
        section, name = option.split(".", 1)
        if section in SECTIONS:
            cell = dataclasses.replace(cell, **{section: dataclasses.replace(getattr(cell, section), **{name: value})})
        else:
            cell = dataclasses.replace(cell, **{f"{section}_args": {**getattr(cell, f"{section}_args"), name: value}})
    return dataclasses.replace(cell, **changes)


def _check_search(spec: SearchSpec, axes: dict, cells: list[Cell], where: str) -> SearchSpec:
    """Each searched option against what it sets, as an axis value would be checked: both ends of a range and
    every choice must be valid values (so a float range over an integer option is an error). Returns the spec
    with each range's integer-ness taken from the option's type."""
    if len(axes.get("split.fold", [])) > 1:
        raise UserError(f"{where}: [search] with a split.fold axis — a trial scores every fold of split.folds in turn; remove the axis")
    if TRIAL_SEED in axes["seed"]:
        raise UserError(
            f"{where}: [axes] seed lists {TRIAL_SEED}, the seed [search] trials train on — "
            "a final replicate must be a run the search never saw; use another seed"
        )
    dims = []
    for dim in spec.dims:
        at = f"{where}: [search] {dim.option!r}"
        if dim.option in axes:
            raise UserError(f"{at} is also an axis — an option is either listed (axes) or searched ([search]), not both")
        if (dim.section, dim.name) in NOT_IDENTITY:
            raise UserError(f"{at} changes what is kept, not what is measured — it cannot be searched")
        takers = [c for c in cells if dim in searched_in(c, spec.dims)]
        if not takers:
            raise UserError(
                f"{at} acts in no trained cell of this grid (no {dim.section} in axes.{dim.section} takes {dim.name!r}, or the option is inert) — remove it"
            )
        if dim.section in SECTIONS:
            if dim.name not in {f.name for f in dataclasses.fields(SECTIONS[dim.section])}:
                raise UserError(f"{at}: [{dim.section}] has no option {dim.name!r}")
            hint = typing.get_type_hints(SECTIONS[dim.section])[dim.name]
            for value in dim.edge_values():
                _section({dim.name: value}, SECTIONS[dim.section], where, f"search {dim.option!r}")
        else:
            for cell in takers:
                factory = FAMILIES[dim.section].get(getattr(cell, dim.section)).factory
                for value in dim.edge_values():
                    _check_args_once(
                        factory, {**getattr(cell, f"{dim.section}_args"), dim.name: value}, f"{at} ({getattr(cell, dim.section)})", CALL_SKIP[dim.section]
                    )
            hint = resolved_hints(factory, inspect.signature(factory).parameters, at).get(dim.name, inspect.Parameter.empty)
        if dim.option == "train.precision":
            raise UserError(f"{at} cannot be searched: precision is a property of the machine a run is on, not of the method — set train.precision in [train]")
        if dim.option == "train.batch_size" and any(c.budget.max_steps is not None for c in takers):
            raise UserError(
                f"{at} cannot be searched under budget.max_steps: a larger batch buys more images with the same steps — "
                "budget by max_samples (or max_seconds) alone, or list batch sizes as an axis"
            )
        if dim.kind != "choices" and hint is not inspect.Parameter.empty:
            # the option's type decides (its bounds passed the type check above); an unannotated one follows its bounds
            dim = dataclasses.replace(dim, integer=not matches(0.5, hint))
        dims.append(dim)
    return dataclasses.replace(spec, dims=tuple(dims))


def _check_args_once(factory, args: dict, where: str, skip) -> None:
    try:
        check_call_args(factory, args, where, skip=skip)
    except ValueError as exc:
        raise UserError(str(exc)) from None

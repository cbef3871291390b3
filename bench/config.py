"""grid.toml → validated, frozen cells. Everything a cell needs is checked here, before any training."""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import inspect
import itertools
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from bench.builtins import load_builtins
from bench.errors import UserError, nonfinite_numbers, read_text
from bench.eval.definitions import definition
from bench.plugins import BACKBONES, DATASETS, LOSSES
from bench.registry import Registry
from bench.typecheck import check_call_args, matches, type_name


@dataclass(frozen=True)
class Budget:
    """Limits enforced by the training loop alone; the first one reached stops the cell (`stopped_by`)."""

    max_steps: int | None = None  # optimizer steps
    max_samples: int | None = None  # images through the backbone (fair across batch sizes)
    max_seconds: float | None = None  # wall-clock training time, evaluation excluded


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # images per step, whatever the loss's batch shape (pairs use batch_size/2 pairs)
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    precision: Literal["fp32", "bf16", "auto"] = "auto"  # auto: bf16 autocast + channels_last where the hardware has fast bf16, else fp32
    m_per_class: int = 4  # images per class in m_per_class batches
    augment: Literal["none", "koch", "flip_crop"] = "none"  # training images only; koch: Koch et al.'s affine
    schedule: Literal["constant", "cosine"] = "constant"  # lr schedule over the fraction of the binding budget limit
    warmup: float = 0.0  # fraction of the budget with a linear lr warm-up from 0 (any schedule)
    select: Literal["last", "best"] = "last"  # best: the curve point best on validation (eval.select_metric) is scored on test
    save: Literal["none", "last", "best"] = "none"  # a checkpoint: the last weights, or those scored on test (not part of the cell's identity)


@dataclass(frozen=True)
class SplitConfig:
    """Class-disjoint train / val / test; a dataset's own split (Omniglot, a CSV `split` column) wins."""

    test_fraction: float = 0.4  # of all classes, held out for evaluation
    seed: int = 0  # fixed across training seeds, so seed variance is training variance
    val_fraction: float = 0.0  # of all classes; a validation split picks the verification threshold
    test_classes: tuple[str, ...] = ()  # explicit class names instead of test_fraction
    val_classes: tuple[str, ...] = ()
    folds: int = 0  # k-fold over the non-test classes ("A Metric Learning Reality Check"); 0 = off
    fold: int = 0  # which fold validates: make it an axis, "split.fold" = [0, 1, 2, 3]


@dataclass(frozen=True)
class ModelConfig:
    """How the backbone is fed and what of it trains (the pretrained-vs-scratch factors)."""

    preprocess: Literal["native", "unit", "raw", "caffe"] = "native"  # see bench.run.adapt.apply_preprocess
    freeze: Literal["none", "bn", "backbone", "backbone_bn_train", "all_but_last_n"] = "none"
    unfrozen_stages: int = 1  # with freeze = "all_but_last_n"


@dataclass(frozen=True)
class EvalConfig:
    recall_k: tuple[int, ...] = (1, 2, 4, 8)
    max_pairs: int = 2_000_000  # verification uses all pairs up to this many, else a seeded stratified sample
    batch_size: int = 256
    tar_far: tuple[float, ...] = (1e-2, 1e-3)  # verification_tar_at_far_<f> for each f
    n_way: int = 20  # few-shot episodes: Koch's 20-way one-shot by default
    k_shot: int = 1
    episodes: int = 1000
    memory_mb: int = 1024  # working memory of the chunked kNN and pair distances (chooses the chunk size)
    distance: Literal["cosine", "euclidean", "l1"] | None = None  # None: the distance the loss was trained for
    curve: tuple[float, ...] = ()  # fractions of the budget at which the cell is scored (validation, else test); 1.0 is implied
    select_metric: str = "verification_roc_auc"  # what train.select = "best" follows (the leaderboard judges curves by its own metric)
    episode_group: str = ""  # a per-image attribute (Omniglot: "alphabet"): also score N-way episodes drawn within one value


@dataclass(frozen=True)
class Cell:
    backbone: str
    loss: str
    dataset: str
    seed: int
    backbone_args: dict = field(default_factory=dict)
    loss_args: dict = field(default_factory=dict)
    dataset_args: dict = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    budget: Budget = Budget()
    model: ModelConfig = ModelConfig()
    split: SplitConfig = SplitConfig()
    eval: EvalConfig = EvalConfig()

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples become lists, as in the JSONL row

    def identity(self) -> dict:
        """The config minus what cannot change the result (whether a checkpoint is saved)."""
        config = self.to_dict()
        for section, option in NOT_IDENTITY:
            config[section].pop(option, None)
        return config

    @property
    def cell_id(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


NOT_IDENTITY = (("train", "save"),)  # options that change what is kept, never what is measured


@dataclass(frozen=True)
class Grid:
    name: str
    path: str
    cells: tuple[Cell, ...]
    excluded: int  # combinations removed by [[exclude]]
    resources: dict = field(default_factory=dict)  # [resources]: what one cell asks of Ray or Slurm (not its identity)
    slurm: dict = field(default_factory=dict)  # [slurm]: where and how long submitit's Slurm jobs run


RESOURCES = {"cpus": int, "gpus": float, "mem_gb": float}
SLURM = {"partition": str, "time_min": int, "account": str, "qos": str, "constraint": str}


UNTRAINED = "none"  # the loss name of the untrained baseline (losses/untrained.py)
SECTIONS = {"budget": Budget, "train": TrainConfig, "model": ModelConfig, "split": SplitConfig, "eval": EvalConfig}
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
TOP_KEYS = ("name", "axes", "exclude", *SECTIONS, *FAMILIES, "resources", "slurm")
CALL_SKIP = {"backbone": (), "loss": ("embed_dim",), "dataset": ()}  # arguments the runner passes itself


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    text = read_text(path, "grid file", "give the path of a grid .toml file (see README 'Writing a grid')")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}) — fix the syntax") from None
    return parse_grid(raw, str(path), default_name=path.stem)


def parse_grid(raw: dict, where: str, default_name: str = "grid") -> Grid:
    load_builtins()
    bad = nonfinite_numbers(raw)
    if bad:  # checked once for the whole file: a budget, an option, an axis value or a plugin argument
        raise UserError(f"{where}: {bad[0]} is not a finite number — every number in a grid must be finite (use a large finite value)")
    _no_unknown(raw, TOP_KEYS, where, "top level")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise UserError(f"{where}: name = {name!r} must be a non-empty string of letters, digits, '-', '_', '.'")
    sections = {k: _section(raw.get(k, {}), cls, where, k) for k, cls in SECTIONS.items()}
    _check_budget(sections["budget"], where)
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
    return Grid(name, where, tuple(cells.values()), excluded, resources, slurm)


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
            raise UserError(f"{where}: unknown key {key!r} in {what}; allowed: {', '.join(allowed)}")


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
            raise UserError(f"{where}: [{name}] select_metric = {value!r} is not a score (see README 'What is measured'), e.g. \"verification_roc_auc\"")
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
        backbone=point["backbone"], loss=point["loss"], dataset=point["dataset"], seed=point["seed"],
        backbone_args=args["backbone"], loss_args=args["loss"], dataset_args=args["dataset"], **made,
    )


def _check_cell(cell: Cell, where: str) -> None:
    """Checks that involve more than one option of a cell."""
    if cell.train.select == "best" and not cell.eval.curve:
        raise UserError(f"{where}: train.select = \"best\" chooses among curve points and eval.curve is empty — set e.g. eval.curve = [0.25, 0.5, 1.0]")


HEAD_ARGS = ("head", "embed_dim", "sigmoid")  # backbone arguments that only shape the trained head


def _without_inert_options(cell: Cell) -> Cell:
    """Reset options that cannot act in this cell to their defaults, so they neither make duplicate cells
    (identical training under different ids) nor appear in the row as if they had mattered."""
    if cell.loss == UNTRAINED:  # nothing trains: only the trunk, its input and its precision matter
        return dataclasses.replace(
            cell, train=TrainConfig(precision=cell.train.precision), model=ModelConfig(preprocess=cell.model.preprocess),
            eval=dataclasses.replace(cell.eval, curve=()), backbone_args={k: v for k, v in cell.backbone_args.items() if k not in HEAD_ARGS})
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


_BATCH_KINDS: dict[str, str | None] = {}


def _batch_kind(loss: str, args: dict) -> str | None:
    """The batch shape a loss declares (built once with a small embed_dim); None if it cannot be built here
    (the runner's preflight then reports the build error)."""
    key = json.dumps([loss, args], sort_keys=True)
    if key not in _BATCH_KINDS:
        try:
            _BATCH_KINDS[key] = LOSSES.get(loss).factory(16, **args).batch
        except Exception:
            _BATCH_KINDS[key] = None
    return _BATCH_KINDS[key]


def _check_args_once(factory, args: dict, where: str, skip) -> None:
    try:
        check_call_args(factory, args, where, skip=skip)
    except ValueError as exc:
        raise UserError(str(exc)) from None

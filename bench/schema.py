"""The result row, typed: what one line of a results file holds (`Row`, its `TrainRecord` with the clock's `Machine`
record, its `CurvePoint`s, its `Env`, a search's `SearchRecord`, its `ItemsRef` and a trial's `Fold`s), the schema version, and the one
place an old row is upgraded. Rows travel as plain dicts only on the wire (JSON lines, worker processes);
everything that reads a results file reads `Row`s through `Row.from_dict`.

Sections whose keys are open-ended stay dicts: `config` (typed by bench.config.Cell), `metrics` (named by the
evaluator), `split`, `input`, `model`. A key this version does not know is kept in the record's `extra` and
written back, so a row read and written again is unchanged; the writer (`strict`) refuses unknown keys."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bench.typecheck import matches, type_name

SCHEMA = 2  # 2: precision defaults to "auto" (cell ids changed), balanced verification accuracy, charged cache time
# Within schema 2 the test ROC left the row (`roc`) for the cell's items file (bench.items.ROC_FPR): no bump, as it
# is no part of a cell's identity and files holding both kinds of row still resume; the plots read either place.

OK, PRUNED, DIVERGED = "ok", "pruned", "diverged"
FAILED = ("error", "oom", "timeout")  # a failure to rerun; `diverged` and `pruned` are results of the config
STATUSES = (OK, PRUNED, DIVERGED, *FAILED)


class RowError(ValueError):
    """A row that does not fit the schema: the message names the key and what it should hold."""


class Record:
    """A typed part of a row: built from its JSON dict (`from_dict`), written back as one (`to_dict`). A field whose
    value is None is left out of the dict unless the field is marked `keep_none` (None that says "unknown")."""

    extra: dict

    @classmethod
    def from_dict(cls, raw: dict, strict: bool = False, where: str = "row"):
        if not isinstance(raw, dict):
            raise RowError(f"{where}: expected a table (dict), got {type(raw).__name__}")
        known = _fields(cls)
        unknown = {k: v for k, v in raw.items() if k not in known}
        if strict and unknown:
            raise RowError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} — not part of results schema {SCHEMA}")
        values = {}
        for name, (convert, required) in known.items():
            if name not in raw:
                if required:
                    raise RowError(f"{where}: no {name!r}")
                continue
            values[name] = convert(raw[name], strict, f"{where}.{name}")
        return cls(**values, extra=unknown)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and not f.metadata.get("keep_none"):
                continue
            out[f.name] = _plain(value)
        return dict(sorted({**out, **self.extra}.items()))  # in the order the writer puts them (sort_keys)


def keep_none(default: Any = None) -> Any:
    """A field whose None is written (it says "unknown"), not left out."""
    return field(default=default, metadata={"keep_none": True})


def _extra() -> Any:
    return field(default_factory=dict, repr=False, compare=True)


@dataclass(frozen=True)
class Machine(Record):
    """What the budget clock's spans got from the machine (bench.run.clock.Meter.record)."""

    wall_seconds: float | None = keep_none()  # the Meter writes each of these, None where unknown
    cpu_seconds: float | None = keep_none()
    cpu_share: float | None = keep_none()  # CPU ÷ (wall × threads)
    threads: int | None = keep_none()
    load_start: float | None = keep_none()
    load_end: float | None = keep_none()
    core_wait_share: float | None = keep_none()  # of the threads' runnable time, spent waiting for a core (None: no scheduler statistics)
    omp_wait_policy: str | None = keep_none()  # None: the harness left OpenMP's wait policy alone
    charge_core_wait_share: float | None = None  # a frozen trunk's measured extraction, charged to the same clock
    extra: dict = _extra()


@dataclass(frozen=True)
class Selected(Record):
    """train.select = "best": the curve point whose weights were scored on test."""

    fraction: float
    steps: int
    metric: str | None = None
    value: float | None = None
    extra: dict = _extra()


@dataclass(frozen=True)
class TrainRecord(Record):
    """What the budget bought (steps, samples, seconds and what stopped it), at what speed and cost."""

    steps: int
    stopped_by: str  # max_steps | max_samples | max_seconds | diverged | pruned
    samples: int | None = None
    seconds: float | None = None  # the budget's clock: wall time plus charged time
    final_loss: float | None = None
    data_seconds: float | None = None
    compute_seconds: float | None = None
    wall_seconds: float | None = None
    charged_seconds: float | None = None
    curve_seconds: float | None = None
    warmup_seconds: float | None = None
    data_time_per_step: float | None = None
    compute_time_per_step: float | None = None
    augment: dict | None = None
    feature_cache: bool | None = None
    cost_model: str | None = None
    charged_images: int | None = None
    charged_seconds_per_image: float | None = None
    m_per_class_short_classes: int | None = None
    images_per_second: float | None = None
    gflops_per_image: float | None = None
    gflop_per_second: float | None = None
    schedule: dict | None = None
    machine: Machine | None = None  # unknown: no scheduler statistics (older rows wrote None)
    selected: Selected | None = None
    extra: dict = _extra()


@dataclass(frozen=True)
class CurvePoint(Record):
    """A learning-curve point: the validation (or test) metrics at a fraction of the budget."""

    fraction: float
    metrics: dict
    steps: int | None = None
    samples: int | None = None
    seconds: float | None = None
    progress: float | None = None
    on: str | None = None  # the split it was scored on
    fold: int | None = None  # a cross-validated search trial's fold
    extra: dict = _extra()


@dataclass(frozen=True)
class Env(Record):
    """Where the row ran: package versions, machine, device, torch threads, precision and source checkout."""

    versions: dict | None = None
    python: str | None = None
    platform: str | None = None
    device: str | None = None
    cpu_model: str | None = None
    torch_threads: int | None = None
    precision: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    extra: dict = _extra()


@dataclass(frozen=True)
class SearchRecord(Record):
    """A search row's record: its study and trial; on a final row (`role` "final") the trial chosen and the study's counts."""

    study: str
    trial: int
    params: dict | None = None
    metric: str | None = None
    objective: float | None = keep_none()  # the validation metric; None unless the trial finished ok
    intermediate: list | None = None  # the metric at each curve point
    role: str | None = None
    trials: int | None = None
    pruned: int | None = None
    failed: int | None = None
    extra: dict = _extra()


@dataclass(frozen=True)
class ItemsRef(Record):
    """The cell's per-item outcomes file (bench.items), beside the results file."""

    file: str
    sha256: str | None = None
    bytes: int | None = None
    extra: dict = _extra()


@dataclass(frozen=True)
class Fold(Record):
    """One fold of a cross-validated search trial."""

    fold: int
    metrics: dict | None = None
    split: dict | None = None
    steps: int | None = None
    stopped_by: str | None = None
    extra: dict = _extra()


@dataclass(frozen=True)
class Row(Record):
    """One cell's result: its config and status; for a cell that trained, what it measured."""

    cell_id: str
    config: dict
    status: str
    schema: int = 0  # rows written before the schema was numbered
    grid: str | None = None
    error: str | None = None
    traceback: str | None = None
    metrics: dict | None = None
    train: TrainRecord | None = None
    curve: list[CurvePoint] | None = None
    folds: list[Fold] | None = None
    eval_seconds: float | None = None
    split: dict | None = None
    input: dict | None = None
    model: dict | None = None
    precision: str | None = None  # the precision that ran (fp32 | bf16)
    items: ItemsRef | None = None
    checkpoint: dict | None = None
    roc: dict | None = None  # older rows: the test ROC, since moved to the items file
    search: SearchRecord | None = None
    report: dict | None = None  # the grid's [report] table: how the views judge lines
    env: Env | None = None
    finished_at: str | None = None
    extra: dict = _extra()

    OK_KEYS: ClassVar[tuple[str, ...]] = ("metrics", "train")  # what an ok row also has

    @classmethod
    def from_dict(cls, raw: dict, strict: bool = False, where: str = "row") -> Row:
        """A row from its JSON dict: checked against the schema and upgraded (`upgrade`); `strict` (the writer)
        also refuses keys the schema does not know."""
        row = super().from_dict(upgrade(raw), strict, where)
        if strict and row.status not in STATUSES:
            raise RowError(f"{where}.status: {row.status!r} is none of {', '.join(STATUSES)}")
        if row.status == OK and (missing := [k for k in cls.OK_KEYS if getattr(row, k) is None]):
            raise RowError(f"{where}: an ok row with no {', '.join(missing)}")
        return row

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def seed(self) -> int:
        return self.config.get("seed", 0)

    def metric(self, name: str, default: Any = None) -> Any:
        """A test (or, for a search trial, validation) metric; `default` when the row has none."""
        return (self.metrics or {}).get(name, default)

    def with_(self, **changes) -> Row:
        """This row with some fields replaced (rows are frozen)."""
        return dataclasses.replace(self, **changes)


def upgrade(raw: dict) -> dict:
    """An older row in today's shape, as a dict: the one place old layouts are read.
    - no `precision` (before rows recorded the precision that ran): the environment's;
    - a ROC under `metrics.verification_roc` (before it had its own key): moved to `roc`."""
    out = dict(raw)
    env = out.get("env")
    if "precision" not in out and isinstance(env, dict) and env.get("precision") is not None:
        out["precision"] = env["precision"]
    metrics = out.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("verification_roc"), dict):
        out["metrics"] = {k: v for k, v in metrics.items() if k != "verification_roc"}
        out.setdefault("roc", metrics["verification_roc"])
    return out


def as_rows(rows) -> list[Row]:
    """Rows as `Row`s: a view's entry point takes rows read from a file or plain dicts (tests, tools)."""
    return [r if isinstance(r, Row) else Row.from_dict(r) for r in rows]


@functools.cache
def _fields(cls) -> dict[str, tuple[Callable, bool]]:
    """Each field's converter (`_converter` of its annotation) and whether the field is required; once per class."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (_converter(hints[f.name]), f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls)
        if f.name != "extra"
    }


FAST = {int: (int,), float: (float, int), str: (str,), bool: (bool,), dict: (dict,), list: (list,)}  # bool is no int here


def _converter(hint: Any) -> Callable[[Any, bool, str], Any]:
    """`convert(value, strict, where)` for a field annotated `hint`: None where the hint allows it, a nested Record (or
    a list of them) built from its dict, any other value checked with bench.typecheck.matches; a value that does not
    fit is a RowError naming `where`. Built once per field: reading a row is its hot path."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    nullable = type(None) in options
    record = next((o for o in options if isinstance(o, type) and issubclass(o, Record)), None)
    listed = next((typing.get_args(o)[0] for o in options if typing.get_origin(o) is list and typing.get_args(o)), None)
    listed = listed if isinstance(listed, type) and issubclass(listed, Record) else None
    plain = FAST.get(next((o for o in options if o is not type(None)), None), ())  # JSON's own types, checked by type

    def convert(value: Any, strict: bool, where: str) -> Any:
        if value is None and nullable:
            return None
        if record is not None and isinstance(value, dict):
            return record.from_dict(value, strict, where)
        if listed is not None and isinstance(value, list):
            return [listed.from_dict(v, strict, f"{where}[{i}]") for i, v in enumerate(value)]
        if type(value) in plain or (record is None and listed is None and matches(value, hint)):
            return value
        raise RowError(f"{where}: expected {type_name(hint)}, got {value!r:.60}")

    return convert


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value

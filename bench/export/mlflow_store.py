"""The MLflow store that `bench export mlflow` and `bench run --mlflow` write (bench.export.mlflow decides what): the
runs metric-bench logged in one experiment, found again by their tags, so that exporting again writes only what
changed. Opening it (URI, probe, versions): bench.export.mlflow_access."""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from bench.errors import UserError
from bench.export.mlflow import Parent, cell_files, cell_items, cell_run, content_key, provisional
from bench.export.mlflow_access import SQL, WRITER, import_mlflow, schema_error, sqlite_file
from bench.report.plots import FIGURES, figure_files
from bench.report.table import FIRST_KEYS
from bench.results import latest_rows
from bench.schema import Row, as_rows

ARTIFACTS = ("log", "copy", "link", "none")  # bench.cli.export.ARTIFACTS says what each does
KEY_CHARS, PARAM_CHARS, TAG_CHARS = 250, 500, 5000  # the smallest limits MLflow versions and servers enforce
KIND, KEY, STATE, CELL = "bench.kind", "bench.key", "bench.state", "cell_id"  # a cell's KEY is its content_key, set last
PARENT = "mlflow.parentRunId"
SORT_METRIC = "bench.sort_metric"  # an experiment tag
OWN = (KIND, KEY, STATE, CELL)


# --- the store ----------------------------------------------------------------------------------------------


class Store:
    """One MLflow experiment and the runs metric-bench logged in it, indexed by their tags (a cell's id and content
    key, a parent's kind and key), so that each write adds, replaces or keeps what is already there."""

    def __init__(self, uri: str, experiment: str, artifacts: str = "log", folders: tuple[Path, ...] = (), plots: Path | None = None):
        mlflow = import_mlflow()
        from mlflow import MlflowClient

        self.uri, self.artifacts, self.folders, self.plots = uri, artifacts, [Path(f) for f in folders], plots
        self._figures: dict[int, list[Path]] = {}
        db = sqlite_file(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:  # a SQLite store's artifacts go beside it, not into ./mlruns of wherever this runs
                location = (db.parent / "mlruns").resolve().as_uri() if db is not None else None
                self.experiment_id, self.experiment_tags = self.client.create_experiment(experiment, artifact_location=location), {}
            elif found.lifecycle_stage != "active":
                raise UserError(f"{uri}: experiment {experiment!r} is deleted — restore it (mlflow experiments restore) or give another --experiment")
            else:
                self.experiment_id, self.experiment_tags = found.experiment_id, dict(found.tags)
            self.tag_experiment(WRITER, mlflow.__version__)
            self.cells: dict[str, list] = {}
            self.parents: dict[tuple[str, str], object] = {}
            for run in self._runs():
                tags = run.data.tags
                if tags.get(KIND) == "cell":
                    self.cells.setdefault(tags.get(CELL, ""), []).append(run)
                elif tags.get(KIND) in ("line", "study"):
                    self.parents[(tags[KIND], tags.get(KEY, ""))] = run
        except UserError:
            raise
        except Exception as exc:  # not an MLflow store, a server that does not answer, a locked database, another schema
            if "database schema" in str(exc) and urlparse(uri).scheme.split("+", 1)[0] in SQL:
                raise UserError(schema_error(uri)) from exc
            raise UserError(
                f"{uri}: cannot open the MLflow store ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}) — give another --tracking-uri"
            ) from exc

    def _runs(self):
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def tag_experiment(self, key: str, value: str) -> None:
        if self.experiment_tags.get(key) != value:
            self.client.set_experiment_tag(self.experiment_id, key, value)
            self.experiment_tags[key] = value

    def export(self, rows: list[Row], parents: list[Parent], metric: str) -> Counter:
        """Every cell's newest row under its parent (`plan` with `metric`): counts of cells "added", "replaced" and
        "kept". Parents are created, refreshed in place or replaced; one metric-bench logged that now holds no cell is
        deleted."""
        latest, counts = latest_rows(as_rows(rows)), Counter()
        self.tag_experiment(SORT_METRIC, metric)
        for parent in parents:
            run_id = self.parent(parent, refresh=True)
            for cell_id in parent.cells:
                line_name = parent.name if parent.kind == "line" else None
                counts[self.log_cell(latest[cell_id], run_id, metric, parent.options, line_name)] += 1
        keys = {(p.kind, p.key) for p in parents}
        held = {run.data.tags.get(PARENT) for runs in self.cells.values() for run in runs}
        for key, run in list(self.parents.items()):
            if key not in keys and run.info.run_id not in held:
                self.client.delete_run(run.info.run_id)
                del self.parents[key]
        counts["parents"] = len(parents)
        return counts

    def log_row(self, row: Row) -> str:
        """One row as it lands (`bench run --mlflow`), under its provisional parent; `export` later places and marks it."""
        return self.log_cell(row, self.parent(provisional(row), refresh=False))

    def log_cell(self, row: Row, parent_id: str, metric: str | None = None, options: tuple[str, ...] = FIRST_KEYS, line_name: str | None = None) -> str:
        """ "kept" when the cell's run was logged from this very row (its content key), brought up to date where the
        plan changed (its parent, name, the options and curves it names); else logs it: "added", or "replaced" when
        an older run (a superseded row, an earlier format, a run cut short before its key) was there and is deleted."""
        key = content_key(row, self.artifacts)
        found = self.cells.get(row.cell_id, [])
        same = next((r for r in found if r.data.tags.get(KEY) == key), None)
        for run in found:
            if run is not same:
                self.client.delete_run(run.info.run_id)
        spec = cell_run(row, self.folders, metric, options, line_name)
        name = _cut(spec.name, KEY_CHARS)
        if same is not None:
            self.cells[row.cell_id] = [same]
            self._update(same, spec, parent_id, name if line_name is not None else None)
            return "kept"
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(self.experiment_id, start_time=spec.start_ms, run_name=name, tags={KIND: "cell", CELL: row.cell_id, PARENT: parent_id})
        run_id = run.info.run_id
        tags = dict(spec.tags)
        if spec.checkpoint is not None and self.artifacts in ("log", "link"):
            tags["checkpoint"] = str(spec.checkpoint)
        self.client.log_batch(
            run_id,
            metrics=[Metric(_key(k), v, ts, step) for k, v, step, ts in spec.metrics],
            params=[Param(k, v) for k, v in _params(spec.params).items()],
            tags=[RunTag(k, v) for k, v in _tags(tags).items()],
        )
        if self.artifacts in ("log", "copy"):
            for path, text in cell_files(row).items():
                self.client.log_text(run_id, text, path)
            if (items := cell_items(row, self.folders)) is not None:  # per-item outcomes and the ROC
                self.client.log_artifact(run_id, str(items))
        if self.artifacts == "copy" and spec.checkpoint is not None and spec.checkpoint.is_dir():
            self.client.log_artifacts(run_id, str(spec.checkpoint), "checkpoint")
        self.client.set_terminated(run_id, spec.status, end_time=spec.end_ms)
        self.client.set_tag(run_id, KEY, key)  # last: a run without it was cut short, and the next export redoes it
        self.cells[row.cell_id] = [self.client.get_run(run_id)]
        return "replaced" if found else "added"

    def _update(self, run, spec, parent_id: str, name: str | None) -> None:
        """A kept cell's run, moved under `parent_id`, renamed, and given the params and metrics the plan now names
        that it lacks (an option that varies now, the curve of another sort metric); nothing is written when none."""
        from mlflow.entities import Metric, Param

        if run.data.tags.get(PARENT) != parent_id:  # its line changed (speed environments split, a study chose again)
            self.client.set_tag(run.info.run_id, PARENT, parent_id)
            run.data.tags[PARENT] = parent_id
        if name is not None and run.info.run_name != name:  # the lines' names changed with the grid
            self.client.update_run(run.info.run_id, name=name)
        params = {k: v for k, v in _params(spec.params).items() if k not in run.data.params}
        metrics = [Metric(_key(k), v, ts, step) for k, v, step, ts in spec.metrics if _key(k) not in run.data.metrics]
        if params or metrics:
            self.client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
            run.data.params.update(params)
            run.data.metrics.update({m.key: m.value for m in metrics})

    def parent(self, parent: Parent, refresh: bool) -> str:
        """The run id of `parent`, created when missing. With `refresh`, a parent whose content changed is brought up
        to date in place (changed metrics logged again, later; tags, name, times and artifacts), or replaced by a new
        run when a metric, curve or param it holds is no longer right (MLflow deletes neither metrics nor params)."""
        run = self.parents.get((parent.kind, parent.key))
        if run is not None and not refresh:
            return run.info.run_id
        if self.artifacts == "link" and parent.kind == "line" and self.plots is not None and figure_files(self.plots):
            parent = replace(parent, tags=parent.tags | {"plots": str(self.plots.resolve())})
        files = self._parent_files(parent)
        state = {
            "content": _digest([parent.name, parent.params, parent.metrics, parent.tags, parent.start_ms, parent.end_ms]),
            "curve": _digest(parent.curve),
            "files": _digest({p: _file_digest(f) for p, f in files.items()}),
            "plots": any(p.startswith("plots/") for p in files),
        }
        old = _state(run)
        if run is not None and all(old.get(k) == v for k, v in state.items()):
            return run.info.run_id  # nothing changed: nothing written
        if run is not None and _stale(run, parent, old, state):
            self.client.delete_run(run.info.run_id)
            run, old = None, {}
        now = max(int(time.time() * 1000), int(old.get("refreshed", 0)) + 1)
        if run is None:
            run = self.client.create_run(
                self.experiment_id, start_time=parent.start_ms or now, run_name=_cut(parent.name, KEY_CHARS), tags={KIND: parent.kind, KEY: parent.key}
            )
        elif run.info.run_name != _cut(parent.name, KEY_CHARS):
            self.client.update_run(run.info.run_id, name=_cut(parent.name, KEY_CHARS))
        self._write_parent(run, parent, files, state, old, now)
        self.parents[(parent.kind, parent.key)] = self.client.get_run(run.info.run_id)
        return run.info.run_id

    def _write_parent(self, run, parent: Parent, files: dict, state: dict, old: dict, now: int) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id, data = run.info.run_id, run.data
        metrics = [Metric(_key(k), v, now, 0) for k, v in parent.metrics.items() if data.metrics.get(_key(k)) != v]
        if old.get("curve") != state["curve"]:
            metrics += [Metric(_key(k), v, ts, step) for k, v, step, ts in parent.curve]
        tags = _tags(parent.tags)
        params = [Param(k, v) for k, v in _params(parent.params).items() if k not in data.params]
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in tags.items() if data.tags.get(k) != v])
        for k in data.tags:  # tags an earlier refresh (or an earlier format) set that say nothing now
            if k not in tags and k not in OWN and (not k.startswith("mlflow.") or k.startswith("mlflow.source.")):
                self.client.delete_tag(run_id, k)
        if self.artifacts in ("log", "copy") and old.get("files") != state["files"]:
            for path, source in files.items():
                if isinstance(source, Path):
                    self.client.log_artifact(run_id, str(source), posixpath.dirname(path) or None)
                else:
                    self.client.log_text(run_id, source, path)
        end = parent.end_ms or now
        if run.info.status != "FINISHED" or (parent.end_ms is not None and run.info.end_time != end):
            self.client.set_terminated(run_id, "FINISHED", end_time=end)
        self.client.set_tag(run_id, STATE, json.dumps({**state, "refreshed": now}))  # last: a parent cut short is written again

    def _parent_files(self, parent: Parent) -> dict[str, Path | str]:
        """A parent's artifacts: its text files (line.json) and, for its group's best line, the group's `bench plot` PNGs."""
        if self.artifacts not in ("log", "copy"):
            return {}
        files: dict[str, Path | str] = dict(parent.files)
        if parent.figures and self.plots is not None:
            files |= {f"plots/{p.name}": p for p in self._group_figures(parent.group)}
        return files

    def _group_figures(self, group: int) -> list[Path]:
        """The PNGs `bench plot` drew for comparison group `group` (from 1; 0: the only group, unsuffixed)."""
        if group not in self._figures:
            suffix = f"_group{group}" if group else ""
            self._figures[group] = [p for p in figure_files(self.plots) if p.stem in {f"{s}{suffix}" for s in FIGURES}]
        return self._figures[group]


def _state(run) -> dict:
    """What a parent run was last written from (its STATE tag); {} for none, or one of an earlier format."""
    if run is None:
        return {}
    try:
        state = json.loads(run.data.tags.get(STATE, "{}"))
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _stale(run, parent: Parent, old: dict, state: dict) -> bool:
    """Whether a parent's run holds what refreshing in place cannot take back: a metric the parent no longer has (or a
    NaN of an earlier format), a curve other than its current one, plots it no longer holds, or a param with another
    value."""
    keys = {_key(k) for k in parent.metrics} | {_key(k) for k, *_ in parent.curve}
    if any(k not in keys or not math.isfinite(v) for k, v in run.data.metrics.items()):
        return True
    if old.get("curve") not in (None, state["curve"]) and parent.curve or old.get("plots") and not state["plots"]:
        return True  # another curve; plots of a group this line is no longer the best of
    return any(run.data.params.get(k, v) != v for k, v in _params(parent.params).items())


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(source: Path | str) -> str:
    return hashlib.sha256(source.read_bytes() if isinstance(source, Path) else source.encode()).hexdigest()[:16]


def _key(name: str) -> str:
    """`name` as an MLflow key: only the characters every platform accepts, no path that resolves to another name, at
    most KEY_CHARS (a cut name keeps a hash of the whole, so two long names stay apart)."""
    key = re.sub(r"[^/\w.\- ]", "_", name)
    if key in ("", ".") or posixpath.normpath(key) != key or key.startswith(("/", "..")):
        key = key.replace("/", "_").replace("..", "__") or "_"
    if len(key) > KEY_CHARS:
        key = key[: KEY_CHARS - 9] + "~" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return key


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _params(params: dict[str, str]) -> dict[str, str]:
    """Params as MLflow takes them: valid keys (the first of two that map to one key wins), values cut to PARAM_CHARS."""
    out: dict[str, str] = {}
    for k, v in params.items():
        out.setdefault(_key(k), _cut(v, PARAM_CHARS))
    return out


def _tags(tags: dict[str, str]) -> dict[str, str]:
    return {_key(k): _cut(v, TAG_CHARS) for k, v in tags.items()}

"""Result rows → an MLflow tracking store: one parent run per leaderboard line (mean ± std over its seeds, and the
leaderboard's marks) or per search study (its trials), and one nested child run per cell. Runs are found again by
their tags, so exporting again adds only the cells not logged yet and replaces a rerun's. mlflow is imported lazily."""
from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import posixpath
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from bench.config import NOT_IDENTITY
from bench.errors import UserError, check_output_file
from bench.eval.definitions import definition, lower_is_better
from bench.report.leaderboard import ABSENT, FIRST_KEYS, STATS, ranked
from bench.report.lines import as_text, configuration, current, flatten, lines_of
from bench.report.plots import figure_files, short_names, varying_columns
from bench.results import latest_rows

INSTALL = "pip install 'metric-bench[mlflow]'"
ARTIFACTS = ("link", "copy", "none")  # link: a tag with the path; copy: into the run's artifacts; none
SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")  # the stores MLflow's client opens
PROBE_SECONDS = 5.0  # how long a tracking server gets to answer before the export (or run) stops
KEY_CHARS, PARAM_CHARS, TAG_CHARS = 250, 500, 5000  # the smallest limits MLflow versions and servers enforce
KIND, KEY, REFRESHED, CELL, FINISHED = "bench.kind", "bench.key", "bench.refreshed_ms", "cell_id", "finished_at"
PARENT = "mlflow.parentRunId"
RUN_STATUS = {"ok": "FINISHED", "pruned": "KILLED"}  # every other status (error, oom, timeout, diverged) is FAILED
MARKS = {"group": "comparison_group", "vs_best": "vs_best", "vs_best_test": "vs_best_test", "still_improving": "still_improving",
         "selected": "selected", "tuned": "tuned", "others": "other_seeds", "stopped_by": "stopped_by", "steps_range": "steps_range",
         "distance": "distance", "speed_env": "speed_env", "identical_seeds": "identical_seeds", "curve_means": "curve_means"}


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
        import sqlalchemy  # noqa: F401  (the SQLite store; mlflow-skinny does not bring it)
    except ImportError:
        raise UserError(f"MLflow export needs mlflow — {INSTALL}") from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its "Creating initial MLflow database tables..." lines


def store_uri(uri: str | None, results: Path, flag: str = "--tracking-uri") -> str:
    """The tracking URI: `uri` (a bare PATH.db is SQLite), by default a SQLite file beside the first results file.
    A SQLite file that cannot be written is a UserError here, before anything is created."""
    uri = uri or f"sqlite:///{(Path(results).parent / 'mlflow.db').as_posix()}"
    if len(urlparse(uri).scheme) < 2:  # no scheme (or a Windows drive letter): a path
        if not uri.endswith(".db"):
            raise UserError(f"{flag} {uri!r}: not a URI — give sqlite:///PATH.db (a file), file:///FOLDER or http://HOST:PORT")
        uri = f"sqlite:///{Path(uri).as_posix()}"
    scheme = urlparse(uri).scheme.split("+", 1)[0]  # postgresql+psycopg2 is postgresql
    if scheme not in SCHEMES:
        raise UserError(f"{flag} {uri!r}: {scheme!r} is not a tracking store MLflow reads — give sqlite:///PATH.db (a file), "
                        "file:///FOLDER or http(s)://HOST:PORT (an MLflow server)")
    db = sqlite_file(uri)
    if db is not None:
        check_output_file(db, flag)
        if db.exists() and not os.access(db, os.W_OK):
            raise UserError(f"{db}: cannot write the MLflow store (permission denied) — give a writable {flag}")
    if scheme in ("http", "https"):
        probe_server(uri, flag)
    return uri


def probe_server(uri: str, flag: str) -> None:
    """A one-line UserError within PROBE_SECONDS when no server answers at `uri` (MLflow's own client retries for
    minutes before it gives up). Any HTTP answer, even an error status, means a server is there."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_SECONDS):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        raise UserError(f"{flag} {uri}: no MLflow server answered within {PROBE_SECONDS:g} s ({type(why).__name__}: "
                        f"{' '.join(str(why).split())[:120]}) — start one (mlflow server --host HOST --port PORT) or give another "
                        f"{flag}") from None


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative with three slashes, absolute with four), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


# --- what to log: pure functions of rows ------------------------------------------------------------------------

@dataclass
class Parent:
    """A parent run: a leaderboard line ("line") or a search study ("study"), and the cells nested under it."""
    kind: str
    key: str
    name: str
    cells: list[str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    start_ms: int | None = None  # its first cell's start and its last cell's end (None: when it is logged)
    end_ms: int | None = None


COMPARISON = {*STATS, "gain_vs_untrained", "resolve_target"}  # the leaderboard's figures about the sort metric: <metric>/<figure>
ABBREVIATIONS = ((r"^timm/", ""), (r"^efficientnet_", ""), (r"_imagenet$", ""), (r"^pml/", ""))
FREEZE_NAMES = {"none": "", "backbone": "frozen", "backbone_bn_train": "frozen (BN train)"}
DEFAULTS = ("none", "native")  # option values a run name leaves out


def run_names(frame: pd.DataFrame) -> list[str]:
    """A short name per line for MLflow's runs table: the values of the options that tell lines apart (those that
    follow from another left out, as the plots' legends), abbreviated ("lite0 · frozen · caffe · triplet"), and
    " #k" where two lines would still share a name."""
    if not len(frame):
        return []
    varying = varying_columns(frame) or list(FIRST_KEYS[:2])  # the options the plots' legends name
    short = short_names(varying)
    names = []
    for _, line in frame.iterrows():
        parts = []
        for k in varying:
            value = str(line[k])
            if value in (ABSENT, "null", "None") or (k == "model.freeze" and line.get("loss") == "none"):
                continue
            if k in FIRST_KEYS:
                for pattern, to in ABBREVIATIONS:
                    value = re.sub(pattern, to, value)
                value = "untrained" if k == "loss" and value == "none" else value
            elif k == "model.freeze":
                value = FREEZE_NAMES.get(value, f"freeze {value}")
            elif value in DEFAULTS:  # the usual choice goes without saying: "augment=koch" names the other
                value = ""
            elif k != "model.preprocess":
                value = f"{short[k]}={value}"
            if value:
                parts.append(value)
        names.append(" · ".join(parts) or str(line["backbone"]))
    seen = Counter(names)
    count: Counter = Counter()
    out = []
    for name in names:
        count[name] += 1
        out.append(f"{name} #{count[name]}" if seen[name] > 1 else name)
    return out


def line_key(row: dict, speed_env: str = "") -> str:
    return hashlib.sha256(f"{configuration(row)}\n{speed_env}".encode()).hexdigest()[:16]


def study_of(row: dict) -> str:
    trial = row.get("config", {}).get("trial")
    return str((row.get("search") or {}).get("study") or (trial.get("study") if isinstance(trial, dict) else "") or "unknown")


def plan(rows: list[dict], metric: str, items=None) -> list[Parent]:
    """The parent runs of these rows: one per leaderboard line (its rows grouped, ranked and marked by `ranked`, as
    `bench leaderboard` does), then one per search study holding the rows no line holds (its trials, and the finals of
    an earlier choice). Every cell's newest row is under exactly one parent; a bad `metric` is a UserError. `items`
    (bench.report.rows.items_loader) as the leaderboard's: comparisons paired over test items where rows kept them."""
    frame, line_rows = ranked(rows, metric, items)
    ids = [frozenset(r["cell_id"] for r in rs) for rs in line_rows]
    marks = dict(zip(ids, (mark for _, mark in frame.iterrows())))
    labels = dict(zip(ids, run_names(frame)))
    parents = []
    for line in lines_of(current(rows)):
        cells = frozenset(r["cell_id"] for r in line.rows)
        parents.append(line_parent(line, metric, marks.get(cells), labels.get(cells)))
    placed = {c for p in parents for c in p.cells}
    studies: dict[str, list[dict]] = {}
    for cell_id, row in latest_rows(rows).items():
        if cell_id not in placed:
            studies.setdefault(study_of(row), []).append(row)
    chosen = {r["search"]["study"]: r["search"]["trial"] for r in rows if r.get("search", {}).get("role") == "final"}
    return parents + [study_parent(study, found, chosen.get(study)) for study, found in studies.items()]


def provisional(row: dict) -> Parent:
    """The parent a row goes under while a grid runs, before `plan` can see every row: its configuration's (or its
    study's) parent, with no statistics yet."""
    config = row.get("config", {})
    if config.get("trial"):
        return study_parent(study_of(row), [row], None, counts=False)
    return Parent("line", line_key(row), " · ".join(str(config.get(k)) for k in FIRST_KEYS[:2]), [row["cell_id"]], _line_params(config))


def line_parent(line, metric: str, mark: pd.Series | None, label: str | None) -> Parent:
    """A line's parent run: its seeds' mean under the children's own metric keys (`_std` beside, so one column of
    MLflow's table ranks parents and children alike), the leaderboard's figures about the sort metric as
    <metric>/<figure>, its marks as tags, and the time from its first cell's start to its last cell's end."""
    config = line.config
    parent = Parent("line", line_key(line.rows[0], line.speed_env), label or " · ".join(str(config.get(k)) for k in FIRST_KEYS[:2]),
                    [r["cell_id"] for r in line.rows], _line_params(config), tags={"sort_metric": metric})
    for column, value in (mark.items() if mark is not None else ()):
        if column in MARKS:
            parent.tags[MARKS[column]] = str(value)
        elif column in COMPARISON and _number(value):
            parent.metrics[f"{metric}/{column}"] = float(value)
    for name in dict.fromkeys(k for r in line.ok for k, v in r["metrics"].items() if _number(v)):
        if mark is not None and f"{name}_mean" in mark:  # a metric the leaderboard shows: its own mean ± std
            parent.metrics[name], parent.metrics[f"{name}_std"] = float(mark[f"{name}_mean"]), float(mark[f"{name}_std"])
            continue
        values = np.array([float(r["metrics"].get(name, math.nan)) for r in line.ok])
        with np.errstate(invalid="ignore"):  # an infinite value: its mean and std are not numbers, and are not logged
            parent.metrics[name] = float(values.mean())
            parent.metrics[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan  # as the leaderboard's mean ± std
    parent.metrics.update(seeds=float(len(line.rows)), seeds_ok=float(len(line.ok)))
    parent.tags.update({k: str(config.get(k)) for k in FIRST_KEYS})
    if line.rows[0].get("grid"):
        parent.tags["mlflow.source.name"] = f"grid {line.rows[0]['grid']}"
    spans = [_span(r) for r in line.rows]
    parent.start_ms, parent.end_ms = min(start for start, _ in spans), max(end for _, end in spans)
    return parent


def _span(row: dict) -> tuple[int, int]:
    """(start, end) of a row in ms: it finished at finished_at after its training and evaluation seconds."""
    train = row.get("train") if isinstance(row.get("train"), dict) else {}
    end = _ms(row.get("finished_at"))
    return end - int(1000 * sum(float(v) for v in (train.get("seconds"), row.get("eval_seconds")) if _number(v))), end


def study_parent(study: str, rows: list[dict], chosen, counts: bool = True) -> Parent:
    config = rows[0].get("config", {})
    trials = [r for r in rows if r.get("config", {}).get("trial")]
    search_metric = next((r["search"]["metric"] for r in rows if (r.get("search") or {}).get("metric")), None)
    parent = Parent("study", study, f"study {study} · " + " · ".join(str(config.get(k)) for k in FIRST_KEYS[:2]), [r["cell_id"] for r in rows],
                    tags={"study": study, **{k: str(config.get(k)) for k in FIRST_KEYS}})
    if search_metric:
        parent.tags["search_metric"] = search_metric
    if chosen is not None:
        parent.tags["chosen_trial"] = str(chosen)
    if counts:
        status = Counter(r.get("status") for r in trials)
        parent.metrics.update(trials=len(trials), trials_ok=status["ok"], trials_pruned=status["pruned"],
                              trials_failed=len(trials) - status["ok"] - status["pruned"], final_rows=len(rows) - len(trials))
        objectives = [float(o) for r in trials if _number(o := (r.get("search") or {}).get("objective")) and math.isfinite(o)]
        if objectives and search_metric and definition(search_metric) is not None:
            parent.metrics[f"best_{search_metric}"] = (min if lower_is_better(search_metric) else max)(objectives)
    return parent


def _line_params(config: dict) -> dict[str, str]:
    skip = {f"{section}.{option}" for section, option in NOT_IDENTITY}  # not part of the configuration: may differ among its seeds
    return {k: as_text(v) for k, v in flatten({k: v for k, v in config.items() if k != "seed"}).items() if k not in skip}


@dataclass
class CellRun:
    """What a child run holds for one row."""
    name: str
    status: str
    start_ms: int
    end_ms: int
    params: dict[str, str]
    metrics: list[tuple[str, float, int, int]]  # key, value, step, timestamp (ms)
    tags: dict[str, str]
    checkpoint: Path | None


def cell_run(row: dict, folders: list[Path], commit: str | None, line_name: str | None = None) -> CellRun:
    """A row as a child run named after its line (`line_name`, else backbone · loss) and its seed: params are its
    flattened config, metrics its numeric metrics (step 0), its training figures under train/ and its learning
    curve under curve/<split>/ at the training step of each point."""
    config, train = row.get("config", {}), row.get("train") if isinstance(row.get("train"), dict) else {}
    start, end = _span(row)
    metrics = [(k, float(v), 0, end) for k, v in (row.get("metrics") or {}).items() if _number(v)]
    metrics += [(f"train/{k}", float(v), 0, end) for k, v in train.items() if _number(v)]
    if _number(objective := (row.get("search") or {}).get("objective")):
        metrics.append(("search/objective", float(objective), 0, end))
    for point in row.get("curve") or []:
        prefix = f"curve/{point.get('on', 'val')}" + (f"/fold{point['fold']}" if "fold" in point else "")
        at = start + int(1000 * point.get("seconds", 0))
        metrics += [(f"{prefix}/{k}", float(v), int(point.get("steps", 0)), at) for k, v in point.get("metrics", {}).items() if _number(v)]
    tags = {CELL: row["cell_id"], "status": str(row.get("status")), "grid": str(row.get("grid", "")), "seed": as_text(config.get("seed"))}
    tags |= {k: str(v) for k, v in (row.get("metrics") or {}).items() if isinstance(v, str) and v}  # distance, notes
    tags |= {f"env.{k}": as_text(v) for k, v in flatten(row.get("env") or {}).items()}
    tags |= {f"search.{k}": as_text(v) for k, v in (row.get("search") or {}).items() if k in ("study", "trial", "role", "metric")}
    for name, value in (("stopped_by", train.get("stopped_by")), ("precision", row.get("precision")), ("error", row.get("error")),
                        ("mlflow.source.git.commit", commit)):
        if value:
            tags[name] = str(value)
    checkpoint = None
    if isinstance(row.get("checkpoint"), dict) and row["checkpoint"].get("path"):
        found = [f / row["checkpoint"]["path"] for f in folders]
        checkpoint = next((p for p in found if p.is_dir()), found[0]).resolve()
        tags["checkpoint"] = str(checkpoint)
    return CellRun(child_name(row, line_name), RUN_STATUS.get(row.get("status"), "FAILED"), start, end, {k: as_text(v) for k, v in flatten(config).items()},
                   metrics, tags, checkpoint)


def child_name(row: dict, line_name: str | None = None) -> str:
    """A cell's run name: its line's name, its trial (a search's) and its seed."""
    config = row.get("config", {})
    trial = config.get("trial")
    return (line_name or " · ".join(str(config.get(k)) for k in FIRST_KEYS[:2])) \
        + (f" · trial {trial.get('number')}" if isinstance(trial, dict) else "") + f" · seed {config.get('seed')}"


def git_commit(folder: Path) -> str | None:
    """HEAD of the git repository holding `folder`, or None (no git, not a repository)."""
    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _ms(iso) -> int:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except ValueError:
        return int(time.time() * 1000)


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


# --- the store ----------------------------------------------------------------------------------------------

class Store:
    """One MLflow experiment and the runs metric-bench logged in it, indexed by their tags (a cell's id and
    finished_at, a parent's kind and key), so that each write adds, replaces or keeps what is already there."""

    def __init__(self, uri: str, experiment: str, artifacts: str = "link", folders: tuple[Path, ...] = (), plots: Path | None = None):
        from mlflow import MlflowClient

        self.uri, self.artifacts, self.folders, self.plots = uri, artifacts, [Path(f) for f in folders], plots
        self.commit = git_commit(self.folders[0]) if self.folders else None
        db = sqlite_file(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:  # a SQLite store's artifacts go beside it, not into ./mlruns of wherever this runs
                location = (db.parent / "mlruns").resolve().as_uri() if db is not None else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            elif found.lifecycle_stage != "active":
                raise UserError(f"{uri}: experiment {experiment!r} is deleted — restore it (mlflow experiments restore) or give another --experiment")
            else:
                self.experiment_id = found.experiment_id
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
        except Exception as exc:  # not an MLflow store, a server that does not answer, a locked database
            raise UserError(f"{uri}: cannot open the MLflow store ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}) "
                            "— give another --tracking-uri") from exc

    def _runs(self):
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def export(self, rows: list[dict], parents: list[Parent]) -> Counter:
        """Every cell's newest row under its parent (`plan`): counts of cells "added", "replaced" and "kept". Parents
        are created or refreshed in place; a parent metrics-bench logged that now holds no cell is deleted."""
        latest, counts = latest_rows(rows), Counter()
        for parent in parents:
            run_id = self.parent(parent, refresh=True)
            for cell_id in parent.cells:
                counts[self.log_cell(latest[cell_id], run_id, parent.name if parent.kind == "line" else None)] += 1
        keys = {(p.kind, p.key) for p in parents}
        held = {run.data.tags.get(PARENT) for runs in self.cells.values() for run in runs}
        for key, run in list(self.parents.items()):
            if key not in keys and run.info.run_id not in held:
                self.client.delete_run(run.info.run_id)
                del self.parents[key]
        counts["parents"] = len(parents)
        return counts

    def log_row(self, row: dict) -> str:
        """One row as it lands (`bench run --mlflow`), under its provisional parent; `export` later places and marks it."""
        parent = provisional(row)
        return self.log_cell(row, self.parent(parent, refresh=False))

    def log_cell(self, row: dict, parent_id: str, line_name: str | None = None) -> str:
        """"kept" when the cell's run holds this row (same finished_at), else logs it: "added", or "replaced" when an
        older row's run (a superseded row, or a run cut short before its last tag) was there and is deleted."""
        finished = str(row.get("finished_at") or "unknown")
        found = self.cells.get(row["cell_id"], [])
        same = next((r for r in found if r.data.tags.get(FINISHED) == finished), None)
        for run in found:
            if run is not same:
                self.client.delete_run(run.info.run_id)
        name = _cut(child_name(row, line_name), KEY_CHARS)
        if same is not None:
            self.cells[row["cell_id"]] = [same]
            if same.data.tags.get(PARENT) != parent_id:  # its line changed (speed environments split, a study chose again)
                self.client.set_tag(same.info.run_id, PARENT, parent_id)
                same.data.tags[PARENT] = parent_id
            if line_name is not None and same.info.run_name != name:  # the lines' names changed with the grid
                self.client.update_run(same.info.run_id, name=name)
            return "kept"
        from mlflow.entities import Metric, Param, RunTag

        spec = cell_run(row, self.folders, self.commit, line_name)
        run = self.client.create_run(self.experiment_id, start_time=spec.start_ms, run_name=name,
                                     tags={KIND: "cell", CELL: row["cell_id"], PARENT: parent_id})
        run_id = run.info.run_id
        tags = {_key(k): _cut(v, TAG_CHARS) for k, v in spec.tags.items() if not (k == "checkpoint" and self.artifacts == "none")}
        self.client.log_batch(run_id, metrics=[Metric(_key(k), v, ts, step) for k, v, step, ts in spec.metrics],
                              params=[Param(k, v) for k, v in _params(spec.params).items()], tags=[RunTag(k, v) for k, v in tags.items()])
        if self.artifacts == "copy" and spec.checkpoint is not None and spec.checkpoint.is_dir():
            self.client.log_artifacts(run_id, str(spec.checkpoint), "checkpoint")
        self.client.set_terminated(run_id, spec.status, end_time=spec.end_ms)
        self.client.set_tag(run_id, FINISHED, finished)  # last: a run without it was cut short, and the next export redoes it
        self.cells[row["cell_id"]] = [self.client.get_run(run_id)]
        return "replaced" if found else "added"

    def parent(self, parent: Parent, refresh: bool) -> str:
        """The run id of `parent`, created when missing; with `refresh`, its metrics, tags, name and plots brought up to
        date in place (a changed metric is logged again, later; one it no longer has becomes NaN)."""
        from mlflow.entities import Metric, Param, RunTag

        run = self.parents.get((parent.kind, parent.key))
        if run is not None and not refresh:
            return run.info.run_id
        now = max(int(time.time() * 1000), int(run.data.tags.get(REFRESHED, 0)) + 1 if run is not None else 0)
        old = run.data.metrics if run is not None else {}
        metrics = {_key(k): float(v) for k, v in parent.metrics.items() if math.isfinite(v) or _key(k) in old}
        metrics |= {k: math.nan for k in old if k not in metrics}
        metrics = {k: v for k, v in metrics.items() if not (k in old and (old[k] == v or math.isnan(old[k]) and math.isnan(v)))}
        tags = {_key(k): _cut(v, TAG_CHARS) for k, v in parent.tags.items()} | {REFRESHED: str(now)}
        if self.commit:
            tags["mlflow.source.git.commit"] = self.commit
        if self.plots is not None and self.artifacts == "link" and parent.kind == "line" and figure_files(self.plots):
            tags["plots"] = str(self.plots.resolve())
        if run is None:
            run = self.client.create_run(self.experiment_id, start_time=parent.start_ms or now, run_name=_cut(parent.name, KEY_CHARS),
                                         tags={KIND: parent.kind, KEY: parent.key})
        elif run.info.run_name != _cut(parent.name, KEY_CHARS):
            self.client.update_run(run.info.run_id, name=_cut(parent.name, KEY_CHARS))
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in _params(parent.params).items() if k not in run.data.params]  # params never change
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()], params=params,
                              tags=[RunTag(k, v) for k, v in tags.items() if run.data.tags.get(k) != v])
        if self.plots is not None and self.artifacts == "copy" and parent.kind == "line":
            for png in figure_files(self.plots):
                self.client.log_artifact(run_id, str(png), "plots")
        end = parent.end_ms or now
        if run.info.status != "FINISHED" or (parent.end_ms is not None and run.info.end_time != end):
            self.client.set_terminated(run_id, "FINISHED", end_time=end)
        self.parents[(parent.kind, parent.key)] = self.client.get_run(run_id)
        return run_id


def _params(params: dict[str, str]) -> dict[str, str]:
    """Params as MLflow takes them: valid keys (the first of two that map to one key wins), values cut to PARAM_CHARS."""
    out: dict[str, str] = {}
    for k, v in params.items():
        out.setdefault(_key(k), _cut(v, PARAM_CHARS))
    return out

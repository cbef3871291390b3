"""Append-only JSONL result rows: one line per finished cell, flushed and fsynced, one writer per file."""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from pathlib import Path

from bench.errors import UserError, read_text
from bench.schema import SCHEMA, Row, RowError

SPEED_FIELDS = ("device", "torch_threads", "cpu_model", "precision")  # what a second of training buys depends on


def speed_env(row: Row) -> dict:
    """What a second of training bought on this row's machine: device, torch threads, CPU model and the precision
    that ran; a field the row lacks is None (unknown)."""
    env = row.env
    return {
        "device": env and env.device,
        "torch_threads": env and env.torch_threads,
        "cpu_model": env and env.cpu_model,
        "precision": row.precision,
    }


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a results file, typed and upgraded (bench.schema). A torn line (a run killed mid-write) is skipped
    with a warning; a line that does not fit the schema is a UserError naming it."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return []
    rows = []
    text = read_text(path, "results file", "give a results .jsonl written by `bench run`")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{number}: ignoring a torn or corrupt line (an interrupted write?)", stacklevel=2)
            continue
        if not isinstance(row, dict) or "cell_id" not in row:
            warnings.warn(f"{path}:{number}: ignoring a line that is not a metric-bench row", stacklevel=2)
            continue
        if isinstance(row.get("schema", 0), int) and row.get("schema", 0) > SCHEMA:  # a newer shape: say so first
            raise UserError(
                f"{path}: written by a newer metric-bench (row schema {row['schema']} > {SCHEMA}) — upgrade metric-bench or use another results file"
            )
        try:
            row = Row.from_dict(row, where=f"{path}:{number}")
        except RowError as exc:
            raise UserError(f"{exc} — not a metric-bench results file (or another tool's schema); give a file written by `bench run`") from None
        rows.append(row)
    return rows


def read_results(paths: list[Path]) -> list[Row]:
    """The rows of several files, in the order given: `latest_rows` then keeps, per cell, the last file's row."""
    rows = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path}: no such results file — run `bench run --grid GRID.toml` first")
        rows += read_rows(path)
    return rows


def require_current_schema(rows: list[Row], path: str | Path) -> None:
    """`bench run` resumes only a file of the current schema: older rows have other cell ids (a changed
    default), so resuming would silently rerun every cell next to rows it can no longer match."""
    old = sorted({row.schema for row in rows if row.schema < SCHEMA})
    if old:
        raise UserError(
            f"{path}: rows of results schema {', '.join(map(str, old))} (this metric-bench writes {SCHEMA}; cell ids changed) "
            f"— rerun into a new file with --results NEW.jsonl, or move this one aside; `bench leaderboard` still reads it"
        )


def latest_rows(rows: list[Row]) -> dict[str, Row]:
    """The newest row of each cell (rows are append-only: a rerun's row supersedes the earlier one)."""
    return {row.cell_id: row for row in rows}


class ResultsWriter:
    """Holds an exclusive lock on the results file while a grid runs, so two runs cannot interleave rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab+", buffering=0)  # noqa: SIM115 (held for the writer's life); unbuffered: a failed write raises in append, not later in close
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write results ({exc.strerror}) — pass a writable --results path") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise UserError(f"{self.path}: another `bench run` is writing this file — wait for it or pass another --results path") from None
        self._file.seek(0, os.SEEK_END)
        if self._file.tell() > 0:  # after a torn last line, start the next row on a fresh line
            self._file.seek(self._file.tell() - 1)
            if self._file.read(1) != b"\n":
                self._write(b"\n")

    def append(self, row: Row) -> None:
        self._write((json.dumps(row.to_dict(), sort_keys=True, allow_nan=True) + "\n").encode())

    def _write(self, data: bytes) -> None:
        """All of `data` on disk (written and fsynced), else a UserError naming the file and the cause: a full
        disk must stop the run with one line, and the file is cut back to where this write began, so no torn line
        is left behind (the rows before it are kept)."""
        start = self._file.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view) :]
            os.fsync(self._file.fileno())
        except OSError as exc:
            cut = self._cut_back(start)
            raise UserError(
                f"{self.path}: cannot write a result row ({exc.strerror or exc}) — the rows before it are kept{cut}; "
                "free space (or pass another --results path) and rerun the same command to continue"
            ) from None

    def _cut_back(self, start: int) -> str:
        """Truncate the file to `start` bytes (where the failed write began); what to add to the error."""
        try:
            os.ftruncate(self._file.fileno(), start)
            os.fsync(self._file.fileno())
        except OSError as exc:  # truncating frees space, so this is rare: the next run skips the torn line
            return f", but its partial line could not be removed ({exc.strerror or exc}; the next run skips it)"
        return " and the partial line removed"

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The clock's fairness, read from a row (written by bench.run.clock's Meter as train.machine)
CONTENDED = 0.2  # a seconds-bound row whose threads waited for a core this share of their runnable time is marked


def core_wait(row: Row) -> float | None:
    """The share of the row's clock its threads spent waiting for a core: the training loop's
    (`train.machine.core_wait_share`, over its `wall_seconds`) and, for a frozen trunk's extraction charged to the
    same clock, the measured extraction's (`charge_core_wait_share`, over `train.charged_seconds`), each weighted by
    the seconds it put on the clock; None when neither is known (an older row, or no scheduler statistics)."""
    machine = row.train and row.train.machine
    if machine is None:
        return None
    parts = [
        (share, seconds)
        for share, seconds in ((machine.core_wait_share, machine.wall_seconds), (machine.charge_core_wait_share, row.train.charged_seconds))
        if share is not None
    ]
    if len(parts) < 2:
        return parts[0][0] if parts else None
    clock = sum(seconds or 0.0 for _, seconds in parts)
    return sum(share * (seconds or 0.0) for share, seconds in parts) / clock if clock > 0 else max(share for share, _ in parts)


def contended(row: Row) -> bool:
    """True when an ok row's training was stopped by its max_seconds clock while its threads waited for a core
    at least CONTENDED of their runnable time: a busy neighbour bought it fewer steps, not the method. A row
    bound by steps or samples is never contended: the load cost it time, not results."""
    share = core_wait(row)
    return row.ok and row.train.stopped_by == "max_seconds" and share is not None and share >= CONTENDED

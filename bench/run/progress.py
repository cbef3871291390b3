"""Progress of a grid for any executor: queued / running / done / failed, updated as rows arrive.

On a terminal, rich bars (and, in-process, one bar per cell's steps). Anywhere else (a Slurm log, nohup,
CI) plain lines: one per finished cell with its status and headline metrics, and a line every minute
naming the cells still running — never a redrawn bar cut to 80 columns.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.config import Cell
from bench.schema import Row

PERIOD_S = 60.0  # how often a plain log says what is still running


def label(cell: Cell) -> str:
    return f"{cell.backbone} · {cell.loss} · " + (f"trial {cell.trial.number}" if cell.trial else f"seed {cell.seed}")


def summary(row: Row) -> str:
    trial = row.config.get("trial")
    if trial and row.status in ("ok", "pruned"):  # its validation score (pruned: at the point that pruned it)
        return f"{row.status}, val {trial['metric']} {row.metric(trial['metric'], float('nan')):.3f}"
    if not row.ok:
        return row.status
    return f"ok, auc {row.metric('verification_roc_auc', float('nan')):.3f}, r@1 {row.metric('recall_at_1', float('nan')):.3f}"


class GridProgress:
    def __init__(self, console: Console, grid_name: str, total: int, queued: int):
        self.console, self.name, self.total = console, grid_name, total
        self.queued, self.done_before = queued, total - queued
        self.running: dict[str, tuple[Cell, float]] = {}
        self.done = self.failed = 0
        self.live = console.is_terminal
        self.last_line = time.monotonic()
        self.bar: Progress | None = None

    def __enter__(self):
        if self.live:
            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            ]
            self.bar = Progress(*columns, console=self.console, transient=False).__enter__()
            self.grid_task = self.bar.add_task(f"grid {self.name}", total=self.total, completed=self.done_before, info=self._counts())
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _counts(self) -> str:
        return f"queued {self.queued} · running {len(self.running)} · done {self.done} · failed {self.failed}"

    def started(self, cell: Cell) -> None:
        self.queued -= 1
        self.running[cell.cell_id] = (cell, time.monotonic())
        if self.bar is not None:
            self.bar.update(self.grid_task, info=self._counts())

    def finished(self, cell: Cell, row: dict) -> None:
        _, start = self.running.pop(cell.cell_id, (cell, time.monotonic()))
        self.done += 1
        self.failed += row.status not in ("ok", "diverged", "pruned")
        if self.bar is not None:
            self.bar.update(self.grid_task, advance=1, info=f"{self._counts()} · last: {escape(label(cell))} → {summary(row)}")
        else:
            self.console.print(
                f"[{self.done_before + self.done}/{self.total}] {label(cell)}: {summary(row)} ({time.monotonic() - start:.0f} s) · {self._counts()}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

    def tick(self) -> None:
        """Called while waiting: a plain log says every minute what is still running."""
        if self.bar is None and self.running and time.monotonic() - self.last_line >= PERIOD_S:
            self.last_line = time.monotonic()
            now = time.monotonic()
            names = ", ".join(f"{label(c)} ({(now - t) / 60:.1f} min)" for c, t in self.running.values())
            self.console.print(f"… running: {names} · {self._counts()}", highlight=False, markup=False, soft_wrap=True)

    def step_hook(self, cell: Cell):
        """A per-cell step reporter for in-process runs (a bar on a terminal, the minute line elsewhere)."""
        if self.bar is None:
            return lambda steps=None, info="": self.tick()
        task = self.bar.add_task(f"  {escape(label(cell))}", total=cell.budget.max_steps, info="building")

        def hook(steps=None, info=""):
            self.bar.update(task, completed=steps, info=escape(info))

        hook.task = task
        return hook

    def drop(self, hook) -> None:
        if self.bar is not None and hasattr(hook, "task"):
            self.bar.remove_task(hook.task)

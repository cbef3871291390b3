"""`bench run --mlflow`: rows logged into MLflow as the runner writes them."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench.schema import Row


def plots_folder(results: Path) -> Path:
    return results.parent / f"{results.stem}_plots"  # where `bench plot` draws by default


class RunLogger:
    """`bench run --mlflow`: each row into MLflow as the runner writes it, then every parent refreshed at the end. A
    store that fails mid-run costs a warning, never the run: the rows are in the results file, and `bench export
    mlflow` logs them later."""

    def __init__(self, uri: str | None, results: Path, console: Console):
        from bench.export.mlflow_access import require_mlflow, store_uri
        from bench.export.mlflow_store import Store

        require_mlflow()
        self.results, self.console, self.failed = results, console, False
        self.store = Store(store_uri(uri or None, results, "--mlflow"), results.stem, "log", (results.parent,), plots_folder(results))

    def log(self, row: Row) -> None:
        if self.failed:
            return
        try:
            self.store.log_row(row)
        except Exception as exc:
            self._fail(exc)

    def finish(self, metric: str) -> None:
        from bench.export.mlflow import plan
        from bench.report.rows import items_loader
        from bench.results import read_rows

        if self.failed:
            return
        rows = read_rows(self.results)
        try:
            self.store.export(rows, plan(rows, metric, items_loader([self.results])), metric)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.failed = True
        self.console.print(
            f"[yellow]warning:[/] MLflow logging stopped ({escape(type(exc).__name__)}: {escape(' '.join(str(exc).split())[:300])}); "
            f"the rows are in {escape(str(self.results))} — log them later with `bench export mlflow {escape(str(self.results))}`",
            highlight=False,
            soft_wrap=True,
        )

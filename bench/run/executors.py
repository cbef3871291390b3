"""Executors: what runs a grid's cells. Each takes cells and yields ("started" | "done", cell, row) events;
the coordinator (bench.run.runner) alone appends the rows and writes their per-item outcomes (a row's
"_items", numpy arrays that each executor returns by pickling). Every executor calls the same `run_cell`.

- in-process (default): this process, one cell at a time (or `--isolate`: a fresh process per cell).
- local workers (`--workers N`): N spawned processes, torch threads = cores / N each, one GPU each with CUDA.
- Ray (`--executor ray`): one task per cell on a running cluster or a local one.
- submitit (`--executor slurm` / `submitit-local`): one job per cell on Slurm, or submitit's local executor.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path

import torch

from bench.config import Cell
from bench.errors import UserError
from bench.plugins import LabelledImages
from bench.run.cell import data_key
from bench.run.clock import WAIT_POLICY
from bench.run.diskcache import Caches
from bench.run.isolation import EXIT_GRACE_S, describe_exit, run_isolated
from bench.run.job import Job
from bench.run.rows import failed_row, run_cell

Event = tuple[str, Cell, "dict | None"]
HARD_GRACE_S = 30.0  # a worker still busy this long past --cell-timeout is killed (the cell's own check failed)
POLL_S = 2.0


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """os.environ with `values` set while the block runs (a process started inside inherits them), then as before."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_device(requested: str) -> torch.device:
    """The device a cell trains on, decided where it runs: a Ray or Slurm node may have the GPU that the login
    node submitting it lacks. "auto" is CUDA when this process sees a CUDA device, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _no_device(cell: Cell, job: Job) -> dict | None:
    """The cell's `error` row when this process cannot give it the device asked for (--device cuda on a node
    without CUDA: the coordinator cannot check a node it does not run on)."""
    if job.device == "cuda" and not torch.cuda.is_available():
        return failed_row(
            cell,
            job.grid_name,
            torch.device("cpu"),
            "error",
            f"--device cuda: node {platform.node()} sees no CUDA device — ask for one ([resources] gpus = 1, [slurm] partition) or run with --device auto",
        )
    return None


def _prepare_process(job: Job) -> None:
    """In a fresh process: the same plugins as the coordinator, the built-ins, and the thread count."""
    for module in job.plugins:
        importlib.import_module(module)
    from bench.builtins import load_builtins

    load_builtins()
    if job.threads:
        torch.set_num_threads(job.threads)


def in_process(cells: list[Cell], data: dict[str, LabelledImages], job: Job, isolate: bool, progress, warn) -> Iterator[Event]:
    caches = Caches(job.cache_dir)  # fitted images and frozen features, shared by the grid's cells
    device = resolve_device(job.device)
    for cell in cells:
        yield "started", cell, None
        if isolate:
            row = run_isolated(cell, data[data_key(cell)], device, job)
        else:
            hook = progress.step_hook(cell)
            row = run_cell(cell, job, data[data_key(cell)], caches, device, hook, warn)
            progress.drop(hook)
        yield "done", cell, row


def _serve(conn, data: dict, job: Job) -> None:
    """A local worker: run cells sent over `conn` until told to stop (None) or the coordinator is gone."""
    _prepare_process(job)
    caches = Caches(job.cache_dir)
    device = resolve_device(job.device)
    while True:
        try:
            cell = conn.recv()
        except (EOFError, OSError):  # the coordinator died: nothing left to report to
            return
        if cell is None:
            return
        conn.send(_no_device(cell, job) or run_cell(cell, job, data[data_key(cell)], caches, device, warn=lambda message: None))


class LocalWorkers:
    """N spawned worker processes fed one cell at a time; a worker that dies becomes an `error` row naming how
    it died, is replaced, and the grid goes on. Idle workers stay up between `run` calls (a search runs its
    trials in rounds) until `close`."""

    def __init__(self, n: int):
        self.n = n
        self.idle: list = []  # (process, connection, slot) waiting for a cell; a run_grid's data and job throughout

    def run(self, cells: list[Cell], data: dict[str, LabelledImages], job: Job, tick: Callable[[], None]) -> Iterator[Event]:
        ctx = mp.get_context("spawn")
        gpus = torch.cuda.device_count() if job.device in ("cuda", "auto") else 0  # workers run here: this machine's GPUs
        threads = job.threads or max(1, (os.cpu_count() or 1) // self.n)
        job = replace(job, threads=threads)

        def spawn(slot: int):
            parent, child = ctx.Pipe()
            # one GPU per worker: the child inherits the environment as it is when it starts
            with environment({"CUDA_VISIBLE_DEVICES": str(slot % gpus)} if gpus else {}):
                proc = ctx.Process(target=_serve, args=(child, data, job), daemon=True)
                proc.start()
            child.close()
            return proc, parent, slot

        queue = list(cells)
        idle = self.idle
        free = sorted(set(range(self.n)) - {slot for *_, slot in idle})
        idle += [spawn(slot) for slot in free[: max(0, min(self.n, len(queue)) - len(idle))]]
        busy: dict = {}  # conn -> (proc, slot, cell, started)
        try:
            while queue or busy:
                while idle and queue:
                    proc, conn, slot = idle.pop()
                    cell = queue.pop(0)
                    conn.send(cell)
                    busy[conn] = (proc, slot, cell, time.monotonic())
                    yield "started", cell, None
                for conn in wait(list(busy), timeout=POLL_S):
                    proc, slot, cell, _ = busy.pop(conn)
                    try:
                        row = conn.recv()
                    except (EOFError, OSError):
                        row = None
                    if row is None:  # the worker died mid-cell
                        proc.join(EXIT_GRACE_S)
                        if proc.is_alive():
                            proc.kill()
                            proc.join()
                        row = failed_row(
                            cell, job.grid_name, resolve_device(job.device), "error", f"worker process {describe_exit(proc.exitcode)} while running this cell"
                        )
                        if queue:
                            idle.append(spawn(slot))
                    else:
                        idle.append((proc, conn, slot))
                    yield "done", cell, row
                yield from self._hard_timeouts(busy, idle, queue, job, spawn)
                tick()
        finally:
            for proc, *_ in busy.values():  # stopped mid-grid (an interrupt): nothing will read their rows
                proc.kill()
                proc.join(5)

    def close(self) -> None:
        """Stop the idle workers."""
        for _, conn, _ in self.idle:
            with contextlib.suppress(OSError):
                conn.send(None)  # stop
        for proc, _, _ in self.idle:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        self.idle = []

    @staticmethod
    def _hard_timeouts(busy: dict, idle: list, queue: list, job: Job, spawn) -> Iterator[Event]:
        if not job.cell_timeout:
            return
        for conn, (proc, slot, cell, started) in list(busy.items()):
            if time.monotonic() - started > job.cell_timeout + HARD_GRACE_S:
                proc.kill()
                proc.join()
                del busy[conn]
                if queue:
                    idle.append(spawn(slot))
                yield (
                    "done",
                    cell,
                    failed_row(
                        cell,
                        job.grid_name,
                        resolve_device(job.device),
                        "timeout",
                        f"cell exceeded --cell-timeout {job.cell_timeout:g} s and its worker was killed",
                    ),
                )


_WORKER_CACHES: dict[str, Caches] = {}  # per Ray worker process, kept between the tasks it runs


def _run_remote(cell: Cell, data: LabelledImages, job: Job) -> dict:
    """One cell in a Ray worker or a submitit job (`data` None: the job loads the dataset itself), on the device
    this node resolves."""
    _prepare_process(job)
    if (missing := _no_device(cell, job)) is not None:
        return missing
    if data is None:
        from bench.plugins import DATASETS

        data = DATASETS.get(cell.dataset).factory(**cell.dataset_args)
    caches = _WORKER_CACHES.setdefault(job.cache_dir or "", Caches(job.cache_dir))
    return run_cell(cell, job, data, caches, resolve_device(job.device), warn=lambda message: None)


def _require(module: str, extra: str, flag: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{flag} needs {module}, which is not installed — pip install 'metric-bench[{extra}]'") from None


class RayCells:
    """One Ray task per cell, with the CPUs and GPUs of [resources]; the datasets are put in the object store once."""

    def __init__(self, address: str | None):
        self.address = address
        self.ray = _require("ray", "ray", "--executor ray")
        self.started_here = False  # a local instance this executor started, stopped by `close`
        self.refs: dict = {}  # data key -> the dataset in the object store, put once (a search runs in rounds)

    def run(self, cells: list[Cell], data: dict[str, LabelledImages], job: Job, tick: Callable[[], None]) -> Iterator[Event]:
        ray = self.ray
        if not ray.is_initialized():  # once, also when a search calls run for each round of trials
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            self.started_here = True
        cpus, gpus = job.resources.get("cpus", 1), job.resources.get("gpus", 0)
        job = replace(job, threads=job.threads or int(cpus))
        # a cluster's workers do not inherit this process's environment: hand them its OpenMP wait policy (bench.run.clock)
        policy = {WAIT_POLICY: os.environ[WAIT_POLICY]} if WAIT_POLICY in os.environ else {}
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0, **({"runtime_env": {"env_vars": policy}} if policy else {}))(_run_remote)
        refs = self.refs
        refs.update({key: ray.put(value) for key, value in data.items() if key not in refs})
        pending = {}
        for cell in cells:
            pending[remote.remote(cell, refs[data_key(cell)], job)] = cell
            yield "started", cell, None
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    cell = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as exc:  # a crashed worker, a lost node: the cell's row says so
                        row = failed_row(cell, job.grid_name, job.device, "error", f"Ray task failed: {type(exc).__name__}: {exc}"[:2000])
                    yield "done", cell, row
                tick()
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        self.refs = {}
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False


class SubmititCells:
    """One submitit job per cell: on Slurm (`slurm`), or through submitit's local executor (`local`), which
    runs the same pickled job in a local process. Jobs load their dataset themselves (no data in the pickle)."""

    def __init__(self, local: bool, folder: Path, parallel: int):
        self.local, self.folder, self.parallel = local, folder, parallel
        self.submitit = _require("submitit", "slurm", "--executor slurm" if not local else "--executor submitit-local")

    def run(self, cells: list[Cell], data: dict[str, LabelledImages], job: Job, tick: Callable[[], None]) -> Iterator[Event]:
        submitit = self.submitit
        executor = submitit.LocalExecutor(folder=str(self.folder)) if self.local else submitit.AutoExecutor(folder=str(self.folder), cluster="slurm")
        timeout_min = int(job.slurm.get("time_min", max(10, 2 * (job.cell_timeout or 3600) / 60)))
        params = {"timeout_min": timeout_min}
        if not self.local:
            params |= {
                "slurm_partition": job.slurm.get("partition"),
                "cpus_per_task": int(job.resources.get("cpus", 1)),
                "gpus_per_node": int(job.resources.get("gpus", 0)),
                "mem_gb": job.resources.get("mem_gb"),
                "slurm_account": job.slurm.get("account"),
                "slurm_qos": job.slurm.get("qos"),
                "slurm_constraint": job.slurm.get("constraint"),
            }
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        job = replace(job, threads=job.threads or int(job.resources.get("cpus", 1)))
        queue, running = list(cells), {}
        limit = self.parallel if self.local else len(cells)  # Slurm queues the rest; a local machine runs N at once
        try:
            while queue or running:
                while queue and len(running) < limit:
                    cell = queue.pop(0)
                    running[executor.submit(_run_remote, cell, None, job)] = cell
                    yield "started", cell, None
                for handle in [h for h in running if h.done()]:
                    cell = running.pop(handle)
                    try:
                        row = handle.result()
                    except Exception as exc:  # a failed or killed job: its row says so
                        row = failed_row(cell, job.grid_name, job.device, "error", f"submitit job {handle.job_id} failed: {type(exc).__name__}: {exc}"[:2000])
                    yield "done", cell, row
                tick()
                time.sleep(0.5 if running else 0)
        finally:
            for handle in running:
                handle.cancel(check=False)

"""Optional per-cell subprocess isolation: a cell that hangs or kills its interpreter is recorded, not fatal."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import signal
from dataclasses import replace

import torch

EXIT_GRACE_S = 10.0  # how long a child whose pipe closed may take to exit (CUDA teardown can be slow)


def _child(conn, cell, job, data, device: str) -> None:
    if job.threads:  # --threads, as the parent runs with: thread counts change float sums, so the row and its items
        torch.set_num_threads(job.threads)
    for module in job.plugins:  # the same --plugin modules the parent imported
        importlib.import_module(module)
    from bench.builtins import load_builtins
    from bench.run.rows import run_cell

    load_builtins()
    conn.send(run_cell(cell, replace(job, cell_timeout=None), data, {}, torch.device(device)))  # the parent enforces the timeout
    conn.close()


def run_isolated(cell, data, device: torch.device, job) -> dict:
    """Run one cell in a fresh spawned process; kill it when it outlives `job.cell_timeout`.

    Costs an interpreter start (importing torch) per cell, so it is opt-in (`bench run --isolate`).
    """
    from bench.run.rows import failed_row

    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child,
        args=(send, cell, job, data, str(device)),
        daemon=True,
    )
    proc.start()
    send.close()
    if not receive.poll(job.cell_timeout):  # True on a row or on the child's end of the pipe closing
        proc.kill()
        proc.join()
        return failed_row(cell, job.grid_name, device, "timeout", f"cell exceeded --cell-timeout {job.cell_timeout:g} s and was killed")
    try:
        row = receive.recv()
    except EOFError:  # the pipe closed without a row: the child is dying (or closed it and went on)
        row = None
    # A dying child's pipe closes before its exit can be reaped, so wait for the exit status rather than
    # read `is_alive()` at once, which would call a crash a timeout.
    proc.join(EXIT_GRACE_S)
    lingering = proc.is_alive()
    if lingering:
        proc.kill()
        proc.join()
    if row is not None:
        return row
    if lingering:
        return failed_row(
            cell, job.grid_name, device, "error", f"the cell's process closed its pipe without reporting and had not exited {EXIT_GRACE_S:g} s later; killed"
        )
    return failed_row(cell, job.grid_name, device, "error", f"the cell's process {describe_exit(proc.exitcode)} before reporting")


def describe_exit(exitcode: int | None) -> str:
    """`exited with code 3`, `was killed by SIGSEGV`: a negative exit code is the signal that ended a process."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"

"""Optional per-cell subprocess isolation: a cell that hangs or kills its interpreter is recorded, not fatal."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import signal

import torch

EXIT_GRACE_S = 10.0  # how long a child whose pipe closed may take to exit (CUDA teardown can be slow)


def _child(
    conn, cell, grid_name, data, device: str, plugins: tuple[str, ...], feature_cache: bool, checkpoints: str | None = None, threads: int | None = None
) -> None:
    if threads:  # --threads, as the parent runs with: thread counts change float sums, so the row and its items
        torch.set_num_threads(threads)
    for module in plugins:  # the same --plugin modules the parent imported
        importlib.import_module(module)
    from bench.builtins import load_builtins
    from bench.run.rows import run_cell

    load_builtins()
    conn.send(run_cell(cell, grid_name, data, {}, torch.device(device), feature_cache=feature_cache, checkpoints=checkpoints))
    conn.close()


def run_isolated(cell, grid_name: str, data, device: torch.device, options) -> dict:
    """Run one cell in a fresh spawned process; kill it when it outlives `options.cell_timeout`.

    Costs an interpreter start (importing torch) per cell, so it is opt-in (`bench run --isolate`).
    """
    from bench.run.rows import failed_row

    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child,
        args=(
            send,
            cell,
            grid_name,
            data,
            str(device),
            options.plugins,
            options.feature_cache,
            getattr(options, "checkpoints", None),
            getattr(options, "threads", None),
        ),
        daemon=True,
    )
    proc.start()
    send.close()
    if not receive.poll(options.cell_timeout):  # True on a row or on the child's end of the pipe closing
        proc.kill()
        proc.join()
        return failed_row(cell, grid_name, device, "timeout", f"cell exceeded --cell-timeout {options.cell_timeout:g} s and was killed")
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
            cell, grid_name, device, "error", f"the cell's process closed its pipe without reporting and had not exited {EXIT_GRACE_S:g} s later; killed"
        )
    return failed_row(cell, grid_name, device, "error", f"the cell's process {describe_exit(proc.exitcode)} before reporting")


def describe_exit(exitcode: int | None) -> str:
    """`exited with code 3`, `was killed by SIGSEGV`: a negative exit code is the signal that ended a process."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"

"""Optional per-cell subprocess isolation: a cell that hangs or kills its interpreter is recorded, not fatal."""
from __future__ import annotations

import importlib
import multiprocessing as mp

import torch


def _child(conn, cell, grid_name, data, device: str, plugins: tuple[str, ...], feature_cache: bool) -> None:
    for module in plugins:  # the same --plugin modules the parent imported
        importlib.import_module(module)
    from bench.plugins import load_builtins
    from bench.runner import run_cell

    load_builtins()
    conn.send(run_cell(cell, grid_name, data, {}, torch.device(device), feature_cache=feature_cache))
    conn.close()


def run_isolated(cell, grid_name: str, data, device: torch.device, options) -> dict:
    """Run one cell in a fresh spawned process; kill it when it outlives `options.cell_timeout`.

    Costs an interpreter start (importing torch) per cell, so it is opt-in (`bench run --isolate`).
    """
    from bench.runner import failed_row

    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, cell, grid_name, data, str(device), options.plugins, options.feature_cache), daemon=True)
    proc.start()
    send.close()
    row = None
    if receive.poll(options.cell_timeout):  # True on a row or on the child's death (EOF)
        try:
            row = receive.recv()
        except EOFError:
            pass
    if row is not None:
        proc.join()
        return row
    timed_out = proc.is_alive()
    proc.kill()
    proc.join()
    if timed_out:
        return failed_row(cell, grid_name, device, "timeout", f"cell exceeded --cell-timeout {options.cell_timeout:g} s and was killed")
    return failed_row(cell, grid_name, device, "error", f"the cell's process died (exit code {proc.exitcode}) before reporting")

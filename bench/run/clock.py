"""How much of the machine a cell's budget clock got: the process's CPU time, the wall time, the thread count,
the load average at start and end, and how long its threads waited for a core (Linux's per-thread scheduler
statistics, `/proc/self/task/*/schedstat`: time on a core and time runnable but waiting for one).

A seconds budget buys what the machine gives it. A neighbour that keeps the cores busy takes its share — and,
before `quiet_threads` below, much more: OpenMP's worker threads spin-waited for a core the neighbour held, so a
small head's step ran 48x slower. The waiting share is what marks a row *contended* (`bench.report.lines`)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TASKS = Path("/proc/self/task")
WAIT_POLICY = "OMP_WAIT_POLICY"
SPIN_COUNT = "GOMP_SPINCOUNT"


def quiet_threads() -> None:
    """Let OpenMP's idle worker threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user
    chose how OpenMP waits (OMP_WAIT_POLICY, or GNU OpenMP's GOMP_SPINCOUNT: GOMP_SPINCOUNT=300000 alone is
    libgomp's own default). It must be set before torch loads its OpenMP runtime, so `bench run` calls this for a
    grid with a seconds budget before it imports torch; the worker processes, Ray workers and Slurm jobs a run
    starts inherit it. Measured in `benchmarks/contention.py`: a thread spinning for a core that a neighbour holds
    stalls every parallel region — but on a quiet machine passive waiting costs small cells up to 30 % of their
    speed, which a grid bound by steps or samples pays in time for nothing, so it keeps OpenMP's default."""
    if "torch" not in sys.modules and not {WAIT_POLICY, SPIN_COUNT} & set(os.environ):
        os.environ[WAIT_POLICY] = "PASSIVE"


def seconds_bound(grid_file: str | Path) -> bool:
    """Whether a grid file asks for a seconds budget (`[budget] max_seconds`, or an axis over it), read raw and
    cheaply, before the grid's own checks import anything heavy; False for a file that does not parse (the
    checks then say why)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        raw = tomllib.loads(Path(grid_file).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    budget, axes = raw.get("budget"), raw.get("axes")
    return (isinstance(budget, dict) and "max_seconds" in budget) or (isinstance(axes, dict) and "budget.max_seconds" in axes)


def _schedstat() -> dict[str, tuple[int, int]] | None:
    """Each live thread's (ns on a core, ns runnable but waiting for one), or None where the kernel has none."""
    out = {}
    try:
        tasks = list(TASKS.iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            on_core, waiting, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        out[task.name] = (int(on_core), int(waiting))
    return out or None


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


@dataclass
class Snapshot:
    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)
    sched: dict[str, tuple[int, int]] | None = field(default_factory=_schedstat)


def _sched_delta(a: dict | None, b: dict | None) -> tuple[float, float] | None:
    """Seconds on a core and seconds waiting for one, summed over the threads alive at `b` (a thread started
    after `a` counts from zero)."""
    if a is None or b is None:
        return None
    on = sum(b[t][0] - a.get(t, (0, 0))[0] for t in b) / 1e9
    waiting = sum(b[t][1] - a.get(t, (0, 0))[1] for t in b) / 1e9
    return on, waiting


class Meter:
    """Accumulates what the process got from the machine over the clock's running spans (`stop_span` /
    `start_span` leave out the paused ones: learning-curve evaluations)."""

    def __init__(self, threads: int):
        self.threads = threads
        self.load_start = _load()
        self.wall = self.cpu = self.on_core = self.waiting = 0.0
        self.scheduled = True
        self._span: Snapshot | None = Snapshot()

    def stop_span(self) -> None:
        if self._span is None:
            return
        end, begin = Snapshot(), self._span
        self.wall += end.wall - begin.wall
        self.cpu += end.cpu - begin.cpu
        delta = _sched_delta(begin.sched, end.sched)
        if delta is None:
            self.scheduled = False
        else:
            self.on_core += delta[0]
            self.waiting += delta[1]
        self._span = None

    def start_span(self) -> None:
        self._span = Snapshot()

    def record(self) -> dict:
        """What the row keeps (`train.machine`): wall and CPU seconds of the clock's spans, threads, the load
        average at start and end, the CPU share (CPU ÷ (wall × threads): 1 when every thread computed all the
        time; a loop with serial parts is below 1 on a quiet machine too), and `core_wait_share`: the share of the
        threads' runnable time spent waiting for a core (≈ 0 on a quiet machine; what a busy neighbour raises)."""
        self.stop_span()
        runnable = self.on_core + self.waiting
        share = self.cpu / (self.wall * self.threads) if self.wall > 0 and self.threads else None
        return {
            "wall_seconds": round(self.wall, 4),
            "cpu_seconds": round(self.cpu, 4),
            "threads": self.threads,
            "cpu_share": None if share is None else round(share, 4),
            "core_wait_share": round(self.waiting / runnable, 4) if self.scheduled and runnable > 0 else None,
            "load_start": self.load_start,
            "load_end": _load(),
            "omp_wait_policy": os.environ.get(WAIT_POLICY),
        }

"""What every benchmark writes: one JSON file under results/benchmarks/ with the machine, the versions, the
command, the date, every raw measurement and the figures the docs quote (computed from the raw ones by
benchmarks/tables.py, which also renders the docs' tables from the file)."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "timm", "pytorch-metric-learning", "numpy", "scikit-learn", "pandas", "faiss-cpu")


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    default = ROOT / "results" / "benchmarks" / f"{name}.json"
    parser.add_argument("--out", type=Path, default=default, help=f"where the raw figures go (default {default.relative_to(ROOT)})")


def bench_run(cwd: Path, *args: str, env: dict | None = None, failed_cells_ok: bool = False) -> float:
    """`bench run ...` in a fresh interpreter; its wall seconds. Exit 1 (some cell failed, every row written) is
    accepted only with `failed_cells_ok`; anything else stops the benchmark with the run's last output."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench", "run", *args], cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0 and not (failed_cells_ok and done.returncode == 1):
        raise SystemExit(f"bench run {' '.join(args)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds


def machine() -> dict:
    import torch

    from bench.run.rows import cpu_model  # the rows' rule, so a benchmark's machine and a row's env compare

    try:
        flags = set(next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    try:
        memory_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        memory_kb = None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "fast_bf16": bool(flags & {"amx_bf16", "avx512_bf16"}),
        "bf16_flags": sorted(flags & {"amx_bf16", "avx512_bf16"}),
        "memory_gib": None if memory_kb is None else round(memory_kb / 2**20, 1),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["metric-bench"] = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    out["metric-bench dirty"] = None if status is None else bool(status)
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def write(name: str, args: argparse.Namespace, raw: dict, summary: dict) -> Path:
    """The whole record, written to a temporary file then renamed, so a killed run leaves nothing half-written."""
    out: Path = args.out
    record = {
        "benchmark": name,
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "arguments": {k: _plain(v) for k, v in vars(args).items() if k != "out"},
        "machine": machine(),
        "versions": versions(),
        "raw": raw,
        "summary": summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(_finite(record), indent=1, allow_nan=False) + "\n")
    tmp.replace(out)
    print(f"\nraw figures: {out}", file=sys.stderr)
    return out


def _finite(value):
    """NaN and infinities as null, so the file is strict JSON (jq, browsers) and reads back as "no figure"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value):
    return str(value) if isinstance(value, Path) else value

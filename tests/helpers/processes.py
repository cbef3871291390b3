"""`bench run` in a child process, as a user runs it, and killed mid-grid with SIGKILL (the resume tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def run_bench(cwd: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`bench run ARGS` in `cwd`, to its end, its output captured (text)."""
    return subprocess.run([sys.executable, "-m", "bench", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def launch(cwd: Path, *args: str) -> subprocess.Popen:
    """`bench run ARGS` in `cwd`; its stderr goes to cwd/launch.stderr (a file, not a pipe nobody drains)."""
    with open(cwd / "launch.stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "bench", "run", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
    proc.stderr_path = cwd / "launch.stderr"
    return proc


def complete_rows(path: Path) -> int:
    """Whole JSON lines in a results file (a torn last line is not one)."""
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().split("\n") if line.startswith("{") and line.endswith("}"))


def kill_when(proc: subprocess.Popen, path: Path, n_rows: int, delay: float = 0.0) -> None:
    """SIGKILL `proc` `delay` seconds after `path` holds `n_rows` rows, and check the kill landed: a run that
    ended by itself first would make a resume test vacuous."""
    deadline = time.time() + 240
    while complete_rows(path) < n_rows and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)  # a no-op on a run that already ended, which the next line catches
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended by itself (exit code {proc.returncode}) instead of being killed: {proc.stderr_path.read_text()[-2000:]}"
    )
